"""TS + TAB-Q (codec id 2): threshold splitting and token-wise adaptive bit
quantisation, after Sung et al., Algorithm 1.

Elements with ``|x| >= τ`` travel exactly (positions + raw values in the input
dtype). The rest are quantised token-wise — one row of the last axis is one
token — as sign + magnitude: one sign bit, and AIQ of the magnitude over the
token's ``[min, max]`` at up to ``Q̄ - 1`` bits, lowered while the DS metric
stays within ``Δ`` (the sign bit is the one Q̄ reserves).

Body sections, in order:

    meta      count of exact ("above") elements (uint32)
    mask      their positions among T                 (positions.encode_subset)
    above     their values, raw, in the input dtype
    tokens    per token with quantised elements: q (uint8), lo, hi (float32)
    signs     one bit per quantised element, flat order (1 = negative)
    values    magnitude codes, grouped by q ascending, token order within; each group byte-aligned
"""

from __future__ import annotations

import math
import struct

import numpy as np

from slicer_compile.codec.bits import pack_flags, pack_uint, packed_nbytes, unpack_flags, unpack_uint
from slicer_compile.codec.config import MAX_Q_BITS, TabqConfig
from slicer_compile.codec.positions import check_subset_length, decode_subset, encode_subset
from slicer_compile.codec.quant import (
    GROUP_DTYPE,
    block_step,
    choose_bits,
    dequantize_groups,
    float16_outward,
    group_table,
    read_group_table,
)
from slicer_compile.codec.wire import (
    SECTION_OVERHEAD_NBYTES,
    Header,
    PayloadReader,
    PayloadWriter,
    header_nbytes,
    unpack_struct,
)
from slicer_compile.errors import PayloadError

KNOBS = struct.Struct("<ffBB")  # tau, delta, q_max, q_min
META = struct.Struct("<I")
TOKEN_DTYPE = GROUP_DTYPE  # per token: q (uint8), lo, hi (float32)
NUM_SECTIONS = 6

_F32 = np.float32


def token_length(shape: tuple[int, ...]) -> int:
    """Elements per token: the last axis (a scalar is one token of one)."""
    return shape[-1] if shape else 1


def encode(x: np.ndarray, cfg: TabqConfig, float16_ranges: bool = False) -> bytes:
    """``float16_ranges``: token ranges widened to float16 values (slicer.encode)."""
    flat = np.ascontiguousarray(x, dtype=_F32).ravel()
    T = flat.size
    width = token_length(x.shape)
    num_tokens = T // width if width else 0
    above_mask = np.abs(flat) >= cfg.tau
    above = np.flatnonzero(above_mask)
    below = flat[~above_mask]
    per_token = width - np.bincount(above // max(width, 1), minlength=num_tokens)  # quantised count per token
    sizes = per_token[per_token > 0]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    mags = np.abs(below)
    if sizes.size:
        lo = np.minimum.reduceat(mags, starts)
        hi = np.maximum.reduceat(mags, starts)
        if float16_ranges:
            lo, hi = float16_outward(lo, hi) or (lo, hi)
        q, codes = choose_bits(mags, starts, sizes, lo, hi, cfg.q_max - 1, cfg.q_min, cfg.delta)
    else:
        lo = hi = np.zeros(0, dtype=_F32)
        q = codes = np.zeros(0, dtype=np.int64)

    writer = PayloadWriter(cfg.codec_id, x.dtype, x.shape, KNOBS.pack(cfg.tau, cfg.delta, cfg.q_max, cfg.q_min))
    writer.section(META.pack(above.size))
    writer.section(encode_subset(above, T))
    writer.section(np.ascontiguousarray(x).ravel()[above].tobytes())
    writer.section(group_table(sizes.size, q, lo, hi))
    writer.section(pack_flags(below < 0))
    q_elem = np.repeat(q, sizes)
    writer.section(b"".join(pack_uint(codes[q_elem == w], w) for w in range(1, cfg.q_max)))
    return writer.finish()


def read_config(header: Header) -> TabqConfig:
    tau, delta, q_max, q_min = unpack_struct(KNOBS, memoryview(header.knobs), "TAB-Q knobs")
    if not (math.isfinite(tau) and tau > 0 and math.isfinite(delta) and delta >= 0
            and 2 <= q_max <= MAX_Q_BITS + 1 and 1 <= q_min < q_max):
        raise PayloadError(f"TAB-Q knobs out of range (tau={tau}, delta={delta}, q_max={q_max}, q_min={q_min})")
    return TabqConfig(tau=tau, q_max=q_max, delta=delta, q_min=q_min)


def decode(payload: bytes, header: Header) -> np.ndarray:
    """Decode a TS + TAB-Q payload whose header was validated by ``wire.read_header``.

    Every section's length is checked against the counts before anything is sized
    by T: the sign section alone carries a bit per quantised element, so once the
    lengths hold, T is bounded by eight times the payload (docs/wire-format.md).
    """
    cfg = read_config(header)
    T = header.num_elements
    width = token_length(header.shape)
    num_tokens = T // width if width else 0
    reader = PayloadReader(payload, header)
    (above_count,) = unpack_struct(META, reader.section("meta"), "TAB-Q meta")
    if above_count > T:
        raise PayloadError(f"{above_count} exact values among {T} elements")
    mask, above_buf, tokens_buf, signs_buf, values_buf = (
        reader.section(name) for name in ("mask", "above", "tokens", "signs", "values"))
    reader.finish()
    below_count = T - above_count
    check_subset_length(mask, above_count, T)
    if len(above_buf) != above_count * header.dtype.itemsize:
        raise PayloadError(f"exact-value section of {len(above_buf)} bytes for {above_count} values")
    _exact(signs_buf, packed_nbytes(below_count, 1), "sign")
    # A token with quantised elements holds 1 to `width` of them.
    quantised_tokens, rest = divmod(len(tokens_buf), TOKEN_DTYPE.itemsize)
    if rest or not (-(-below_count // max(width, 1)) <= quantised_tokens <= min(num_tokens, below_count)):
        raise PayloadError(f"token table of {len(tokens_buf)} bytes for {below_count} quantised values "
                           f"in {num_tokens} tokens")

    # The lengths hold: decode.
    above = decode_subset(mask, above_count, T)
    above_values = np.frombuffer(above_buf, dtype=header.dtype.newbyteorder("<"))
    if not np.isfinite(above_values).all():
        raise PayloadError("exact values include NaN or Inf")
    per_token = width - np.bincount(above // max(width, 1), minlength=num_tokens)
    sizes = per_token[per_token > 0]
    q, lo, hi = read_group_table(tokens_buf, sizes.size, header.dtype, cfg.q_min, cfg.q_max - 1, "token")
    negative = unpack_flags(signs_buf, below_count)
    q_elem = np.repeat(q, sizes)
    group_counts = [int(np.count_nonzero(q_elem == w)) for w in range(1, cfg.q_max)]
    group_nbytes = [packed_nbytes(n, w) for w, n in zip(range(1, cfg.q_max), group_counts)]
    if len(values_buf) != sum(group_nbytes):
        raise PayloadError(f"value section of {len(values_buf)} bytes, the tokens need {sum(group_nbytes)}")
    codes = np.zeros(below_count, dtype=np.int64)
    offset = 0
    for w, n, nbytes in zip(range(1, cfg.q_max), group_counts, group_nbytes):
        codes[q_elem == w] = unpack_uint(values_buf[offset: offset + nbytes], n, w).astype(np.int64)
        offset += nbytes

    mags = dequantize_groups(codes, sizes, lo, block_step(lo, hi, q))
    out = np.zeros(T, dtype=_F32)
    below_mask = np.ones(T, dtype=bool)
    below_mask[above] = False
    out[below_mask] = np.where(negative, -mags, mags)
    out[above] = above_values
    return out.reshape(header.shape).astype(header.dtype, copy=False)


def _exact(buf: memoryview, nbytes: int, what: str) -> memoryview:
    if len(buf) != nbytes:
        raise PayloadError(f"{what} section of {len(buf)} bytes, expected {nbytes}")
    return buf


def predict_bits(shape: tuple[int, ...], cfg: TabqConfig, dtype=np.float32) -> int:
    """Upper bound on ``8·len(encode(x, cfg))`` for any x of this shape and dtype.

    Each element is either exact (its dtype's bits) or quantised (a sign bit
    and at most Q̄-1 magnitude bits): the bound takes the larger for every
    element, plus a bitmap for the mask and every header and pad.
    """
    T = math.prod(shape)
    width = token_length(shape)
    num_tokens = T // width if width else 0
    item_bits = 8 * np.dtype(dtype).itemsize
    fixed_nbytes = (header_nbytes(len(shape), KNOBS.size) + NUM_SECTIONS * SECTION_OVERHEAD_NBYTES
                    + META.size + 1 + num_tokens * TOKEN_DTYPE.itemsize)
    pad_bits = 7 * (2 + cfg.q_max)  # mask, signs, and one per value group
    return 8 * fixed_nbytes + T + T * max(item_bits, cfg.q_max) + pad_bits
