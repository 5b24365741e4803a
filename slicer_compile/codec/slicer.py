"""The SLICER codec (codec id 1): ATKF, MS, AIQ with ABQ — the numpy reference.

This module is the specification every other implementation (CUDA kernels,
TensorRT plugins, the ONNX Runtime op) must match byte for byte. Arithmetic
is float32 throughout, with no fused multiply-add, so that a GPU
implementation can reproduce it exactly.

Body sections, in order (see docs/wire-format.md):

    meta      kept count, negative count (uint32 each)
    mask      positions of the kept values among T          (positions.encode_subset)
    signs     which kept values are negative, in index order (positions.encode_subset)
    labels+   block of each positive kept value              (positions.encode_labels)
    labels-   block of each negative kept value
    blocks    per block: q (uint8), lo, hi (float32)        positive blocks first
    values    per block, its codes at q bits, byte-aligned   in index order
"""

from __future__ import annotations

import math
import struct

import numpy as np

from slicer_compile.codec.bits import pack_uint, packed_nbytes, unpack_uint
from slicer_compile.codec.config import SlicerConfig
from slicer_compile.codec.quant import (
    GROUP_DTYPE,
    block_step,
    choose_bits,
    dequantize_groups,
    float16_outward,
    group_table,
    read_group_table,
)
from slicer_compile.codec.positions import (
    check_labels_length,
    check_subset_length,
    decode_labels,
    decode_subset,
    encode_labels,
    encode_subset,
    label_chunk,
    subset_worst_nbytes,
)
from slicer_compile.codec.wire import (
    SECTION_OVERHEAD_NBYTES,
    Header,
    PayloadReader,
    PayloadWriter,
    header_nbytes,
    read_header,
    unpack_struct,
)
from slicer_compile.errors import ConfigError, PayloadError

KNOBS = struct.Struct("<fffBBBB")  # config.SLICER_KNOB_ORDER: sparsity, lam, delta, M+, M-, q_bits, q_min
META = struct.Struct("<II")  # kept count, negative count
BLOCK_DTYPE = GROUP_DTYPE  # per block: q (uint8), lo, hi (float32)
NUM_SECTIONS = 7

_F32 = np.float32
# ATKF estimates its threshold from every 16th score before the exact selection.
_SAMPLE_STRIDE = 16


# --- ATKF -----------------------------------------------------------------------


def atkf_scores(flat: np.ndarray, lam: float) -> np.ndarray:
    """ATKF score: ``x/(1+λ)`` for positives, ``|x|/(1-λ)`` for negatives, 0 for zeros."""
    if lam == 0.0:
        return np.abs(flat)
    return np.where(flat > 0, flat / (_F32(1) + _F32(lam)), -flat / (_F32(1) - _F32(lam)))


def select_kept(flat: np.ndarray, k: int, lam: float) -> np.ndarray:
    """Flat indices (ascending) of the ``min(k, nnz)`` highest ATKF scores.

    Ties at the k-th score go to the lower flat index, so encoding is
    deterministic; zero scores are never kept.
    """
    T = flat.size
    if k == 0 or T == 0:
        return np.zeros(0, dtype=np.int64)
    scores = atkf_scores(flat, lam)
    if k >= T:
        return np.flatnonzero(scores > 0)
    if k * 4 >= T:  # a large share is kept: select over all scores directly
        kth = np.partition(scores, T - k)[T - k]
        return _top_k_at(scores, None, kth, k) if kth > 0 else np.flatnonzero(scores > 0)
    # Otherwise select among candidates: the indices whose score reaches a
    # threshold that, judged from a strided sample, a few more than k reach.
    candidates = _candidates(scores, k)
    cand_scores = scores[candidates]
    kth = np.partition(cand_scores, cand_scores.size - k)[cand_scores.size - k]
    if kth == 0:  # fewer than k non-zeros: keep them all
        return np.compress(cand_scores > 0, candidates)
    return _top_k_at(cand_scores, candidates, kth, k)


def _top_k_at(scores: np.ndarray, indices: np.ndarray | None, kth: np.float32, k: int) -> np.ndarray:
    """Indices of the k scores >= kth, dropping the highest-index ties; ``indices``
    maps positions in ``scores`` to flat indices (None: the identity)."""
    kept = scores >= kth
    surplus = int(np.count_nonzero(kept)) - k
    if surplus:  # ties at the k-th score: drop those with the highest indices
        kept[np.flatnonzero(scores == kth)[-surplus:]] = False
    return np.flatnonzero(kept) if indices is None else np.compress(kept, indices)


def _candidates(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of a superset of the top k (all of them when no good threshold is found)."""
    sample = scores[::_SAMPLE_STRIDE]
    want = min(sample.size, int(k / _SAMPLE_STRIDE * 1.1 + 4 * math.sqrt(k / _SAMPLE_STRIDE) + 16))
    threshold = np.partition(sample, sample.size - want)[sample.size - want]
    if threshold > 0:
        candidates = np.flatnonzero(scores >= threshold)
        if candidates.size >= k:
            return candidates
    return np.arange(scores.size)


# --- MS ---------------------------------------------------------------------------


def block_sizes(count: int, max_blocks: int) -> np.ndarray:
    """Equal-cardinality block sizes: ``floor(n/M)`` each, the last takes the rest."""
    nblocks = min(max_blocks, count)
    if nblocks == 0:
        return np.zeros(0, dtype=np.int64)
    sizes = np.full(nblocks, count // nblocks, dtype=np.int64)
    sizes[-1] = count - (count // nblocks) * (nblocks - 1)
    return sizes


def split_blocks(magnitudes: np.ndarray, max_blocks: int) -> np.ndarray:
    """Block label of each value: rank by magnitude (descending, ties to the lower
    position), cut into equal-cardinality blocks; block 0 holds the largest.

    ``magnitudes`` must be in position order (as the kept values are), so
    "lower position" is "earlier in the array".
    """
    sizes = block_sizes(magnitudes.size, max_blocks)
    labels = np.zeros(magnitudes.size, dtype=np.uint8)
    n = magnitudes.size
    for first_rank in np.cumsum(sizes[:-1]):
        # Values at descending rank >= first_rank lie past this boundary. One
        # selection per boundary: numpy's partition is far slower with several kth.
        pivot = np.partition(magnitudes, n - 1 - first_rank)[n - 1 - first_rank]
        past = magnitudes <= pivot
        surplus = int(np.count_nonzero(past)) - (n - first_rank)
        if surplus:  # ties at the pivot: the earliest ones rank before the boundary
            past[np.flatnonzero(magnitudes == pivot)[:surplus]] = False
        labels += past
    return labels


# --- encode / decode -------------------------------------------------------------


def encode(x: np.ndarray, cfg: SlicerConfig, float16_ranges: bool = False) -> bytes:
    """Encode a finite float32/float16 array (callers validate it) into a payload;
    ``float16_ranges``: quantise against block ranges widened to float16 values (what
    the stream form carries in half the bytes, codec.stream)."""
    flat = np.ascontiguousarray(x, dtype=_F32).ravel()
    T = flat.size
    kept = select_kept(flat, cfg.kept_count(T), cfg.lam)
    values = flat[kept]
    negative = values < 0
    mags = np.abs(values)
    neg_sel = np.flatnonzero(negative)
    pos_sel = np.flatnonzero(~negative)
    m_pos, m_neg = cfg.blocks
    labels_pos = split_blocks(mags[pos_sel], m_pos)
    labels_neg = split_blocks(mags[neg_sel], m_neg)
    sizes = np.concatenate([block_sizes(pos_sel.size, m_pos), block_sizes(neg_sel.size, m_neg)])
    nb_pos = min(m_pos, pos_sel.size)

    block_id = np.empty(kept.size, dtype=np.uint8)
    block_id[pos_sel] = labels_pos
    block_id[neg_sel] = labels_neg + nb_pos
    order = np.argsort(block_id, kind="stable")  # grouped by block, index order within
    grouped = mags[order]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    if sizes.size:
        lo = np.minimum.reduceat(grouped, starts)
        hi = np.maximum.reduceat(grouped, starts)
        if float16_ranges:
            lo, hi = float16_outward(lo, hi) or (lo, hi)
        q, codes = choose_bits(grouped, starts, sizes, lo, hi, cfg.q_bits, cfg.q_min, cfg.delta)
    else:
        lo = hi = np.zeros(0, dtype=_F32)
        q, codes = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)

    writer = PayloadWriter(cfg.codec_id, x.dtype, x.shape, _pack_knobs(cfg))
    writer.section(META.pack(kept.size, neg_sel.size))
    writer.section(encode_subset(kept, T))
    writer.section(encode_subset(neg_sel, kept.size))
    writer.section(encode_labels(labels_pos, nb_pos))
    writer.section(encode_labels(labels_neg, sizes.size - nb_pos))
    writer.section(group_table(sizes.size, q, lo, hi))
    writer.section(b"".join(pack_uint(codes[s: s + n], int(w)) for s, n, w in zip(starts, sizes, q)))
    return writer.finish()


def _pack_knobs(cfg: SlicerConfig) -> bytes:
    return KNOBS.pack(*cfg.knob_values())


def read_config(header: Header) -> SlicerConfig:
    """The encoder's knobs, validated by the one range check (``SlicerConfig``)."""
    values = unpack_struct(KNOBS, memoryview(header.knobs), "SLICER knobs")
    try:
        return SlicerConfig.from_knob_values(values)
    except ConfigError as exc:
        raise PayloadError(f"SLICER knobs out of range: {exc}") from None


def decode(payload: bytes, header: Header) -> np.ndarray:
    """Decode a SLICER payload whose header was validated by ``wire.read_header``.

    The counts in the meta section can claim up to T values from a few bytes, so
    every section's length is checked against them before anything is sized from a
    count (docs/wire-format.md, decoder contract).
    """
    cfg = read_config(header)
    T = header.num_elements
    reader = PayloadReader(payload, header)
    kept_count, neg_count = unpack_struct(META, reader.section("meta"), "SLICER meta")
    if kept_count > cfg.kept_count(T):
        raise PayloadError(f"{kept_count} kept values exceed k = {cfg.kept_count(T)} for {T} elements")
    if neg_count > kept_count:
        raise PayloadError(f"{neg_count} negative values among {kept_count} kept")
    mask, signs, labels_pos_buf, labels_neg_buf, table, values_buf = (
        reader.section(name) for name in ("mask", "signs", "labels+", "labels-", "blocks", "values"))
    reader.finish()
    m_pos, m_neg = cfg.blocks
    pos_count = kept_count - neg_count
    sizes_pos, sizes_neg = block_sizes(pos_count, m_pos), block_sizes(neg_count, m_neg)
    sizes = np.concatenate([sizes_pos, sizes_neg])
    check_subset_length(mask, kept_count, T)
    check_subset_length(signs, neg_count, kept_count)
    check_labels_length(labels_pos_buf, pos_count, sizes_pos.size)
    check_labels_length(labels_neg_buf, neg_count, sizes_neg.size)
    q, lo, hi = read_group_table(table, sizes.size, header.dtype, cfg.q_min, cfg.q_bits, "block")
    block_nbytes = [packed_nbytes(int(n), int(w)) for n, w in zip(sizes, q)]
    if len(values_buf) != sum(block_nbytes):
        raise PayloadError(f"value section of {len(values_buf)} bytes, the blocks need {sum(block_nbytes)}")

    # Every length holds: decode.
    kept = decode_subset(mask, kept_count, T)
    neg_sel = decode_subset(signs, neg_count, kept_count)
    labels_pos = _read_labels(labels_pos_buf, sizes_pos)
    labels_neg = _read_labels(labels_neg_buf, sizes_neg)
    codes, offset = [], 0
    for n, w, nbytes in zip(sizes, q, block_nbytes):
        codes.append(unpack_uint(values_buf[offset: offset + nbytes], int(n), int(w)))
        offset += nbytes

    out = np.zeros(T, dtype=_F32)
    if kept_count:
        is_neg = np.zeros(kept_count, dtype=bool)
        is_neg[neg_sel] = True
        block_id = np.empty(kept_count, dtype=np.uint8)
        block_id[np.flatnonzero(~is_neg)] = labels_pos
        block_id[neg_sel] = labels_neg + sizes_pos.size
        order = np.argsort(block_id, kind="stable")
        step = block_step(lo, hi, q)
        decoded = dequantize_groups(np.concatenate(codes), sizes, lo, step)
        decoded[sizes_pos.sum():] *= _F32(-1)
        out[kept[order]] = decoded
    return out.reshape(header.shape).astype(header.dtype, copy=False)


def block_layout(payload: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Sizes and chosen bit-widths of a SLICER payload's blocks, without decoding values."""
    header = read_header(payload)
    cfg = read_config(header)
    reader = PayloadReader(payload, header)
    kept_count, neg_count = unpack_struct(META, reader.section("meta"), "SLICER meta")
    for what in ("mask", "signs", "labels+", "labels-"):
        reader.section(what)
    sizes = np.concatenate([block_sizes(kept_count - neg_count, cfg.blocks[0]), block_sizes(neg_count, cfg.blocks[1])])
    table_buf = reader.section("blocks")
    if len(table_buf) != sizes.size * BLOCK_DTYPE.itemsize:
        raise PayloadError(f"block table of {len(table_buf)} bytes for {sizes.size} blocks")
    return sizes, np.frombuffer(table_buf, dtype=BLOCK_DTYPE)["q"].astype(np.int64)


def _read_labels(buf: memoryview, sizes: np.ndarray) -> np.ndarray:
    labels = decode_labels(buf, int(sizes.sum()), sizes.size)
    if sizes.size > 1 and not np.array_equal(np.bincount(labels, minlength=sizes.size), sizes):
        raise PayloadError("block labels do not give equal-cardinality blocks")
    return labels


# --- payload bound ------------------------------------------------------------------


def predict_bits(shape: tuple[int, ...], cfg: SlicerConfig) -> int:
    """Upper bound ``B̂_UB`` on ``8·len(encode(x, cfg))`` for any x of this shape.

    Every block at q_bits, positions at their worst (a bitmap or fixed-width
    indices, whichever is smaller: the encoder never exceeds both), every
    header and byte-alignment pad counted.
    """
    T = math.prod(shape)
    k = cfg.kept_count(T)
    nblocks = sum(cfg.blocks)
    fixed_nbytes = (
        header_nbytes(len(shape), KNOBS.size)
        + NUM_SECTIONS * SECTION_OVERHEAD_NBYTES
        + META.size
        + subset_worst_nbytes(k, T)  # the kept count is at most k
        + 1 + packed_nbytes(k, 1)  # signs: at worst a bitmap over the kept values
        + nblocks * BLOCK_DTYPE.itemsize
    )
    # Labels: each sign's words hold n_s·bits/c bits plus one partial word and a pad.
    bases = range(2, max(cfg.blocks) + 1)
    ratio = max((label_chunk(b)[1] / label_chunk(b)[0] for b in bases), default=0.0)
    word = max((label_chunk(b)[1] for b in bases), default=0)
    label_bits = math.ceil(k * ratio) + 2 * (word + 7)
    value_bits = k * cfg.q_bits + 7 * nblocks
    return 8 * fixed_nbytes + label_bits + value_bits
