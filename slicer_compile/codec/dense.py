"""The dense codec (id 6): uniform quantisation at ``bits`` bits per element in groups
along the last axis (a token, or rows of it merged up to ``GROUP_MIN`` elements), each
group's range chosen to minimise the squared error — its tails clipped where that pays —,
then the codes entropy-coded with constriction's ANS coder under the tensor's own code
frequencies (sent: 2^bits uint16), or packed as they are where that is smaller. Made for dense tensors (hidden states, FFN activations), where top-k's
dropped values are what hurts; every element is kept.

Wire sections (docs/wire-format.md): ``meta`` (the mode: 0 packed, 1 ANS), ``ranges``
(per group lo, hi: float32), ``model`` (ANS only: each code's frequency, uint16),
``values`` (packed codes, or the ANS words, uint32 little-endian).
"""

from __future__ import annotations

import math
import struct

import numpy as np

from slicer_compile.codec.bits import pack_uint, packed_nbytes, unpack_uint
from slicer_compile.codec.config import DenseConfig
from slicer_compile.codec.quant import float16_outward
from slicer_compile.codec.wire import (
    SECTION_OVERHEAD_NBYTES,
    Header,
    PayloadReader,
    PayloadWriter,
    header_nbytes,
    unpack_struct,
)
from slicer_compile.errors import PayloadError

KNOBS = struct.Struct("<BB")  # bits, entropy
META = struct.Struct("<B")  # mode
NUM_SECTIONS = 4
PACKED, ANS = 0, 1
RANGE_DTYPE = np.dtype([("lo", "<f4"), ("hi", "<f4")])
#: Rows of the last axis merge into groups of at least this many elements (a group's
#: range costs 8 bytes: on a 16-wide row at 4 bits, as much as its codes).
GROUP_MIN = 256
#: Clipping fractions tried per group (1: the full min..max range), on a sample of at
#: most ``SEARCH_SAMPLE`` elements of the tensor spread over its groups.
CLIP_FRACTIONS = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4], dtype=np.float32)
SEARCH_SAMPLE = 1 << 16
#: No code costs more than this many bits under constriction's leaky categorical (its
#: probabilities are fixed-point with 24 bits, none zero): what bounds an ANS section.
MAX_BITS_PER_SYMBOL = 24


def groups_of(shape: tuple[int, ...]) -> tuple[int, int]:
    """(group length, number of groups) for a tensor of ``shape``: whole rows of the
    last axis, merged to at least GROUP_MIN elements (the last group may be shorter)."""
    total = math.prod(shape)
    if total == 0:
        return 0, 0
    row = shape[-1] if shape and shape[-1] else 1
    length = row * max(1, -(-GROUP_MIN // row))
    length = min(length, total)
    return length, -(-total // length)


def _grouped(flat: np.ndarray, length: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The values as [count, length] (the last group padded with its own last value,
    which changes neither its range nor its best clipping much) and the valid mask."""
    padded = np.empty(count * length, dtype=np.float32)
    padded[: flat.size] = flat
    padded[flat.size:] = flat[-1] if flat.size else 0
    valid = np.ones(count * length, dtype=bool)
    valid[flat.size:] = False
    return padded.reshape(count, length), valid.reshape(count, length)


def _step(lo: np.ndarray, hi: np.ndarray, levels: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        step = (hi - lo) / np.float32(levels - 1)
    return np.where(hi > lo, step, np.float32(1)).astype(np.float32)


def quantise(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, levels: int) -> np.ndarray:
    """Codes of ``values`` [G, n] in [lo, hi] per group: rint((v - lo) / step), clipped."""
    step = _step(lo, hi, levels)[:, None]
    codes = np.rint((values - lo[:, None]) / step)
    return np.clip(codes, 0, levels - 1).astype(np.int32)


def dequantise(codes: np.ndarray, lo: np.ndarray, hi: np.ndarray, levels: int) -> np.ndarray:
    """``lo + code·step`` per group (float32, a product then a sum)."""
    step = _step(lo, hi, levels)[:, None]
    return (codes.astype(np.float32) * step + lo[:, None]).astype(np.float32)


def choose_ranges(values: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group [G, n], the range (lo, hi) among the clipping fractions with the least
    squared error, judged on an evenly spaced sample of each group."""
    low, high = values.min(axis=1), values.max(axis=1)
    centre = values.mean(axis=1, dtype=np.float64).astype(np.float32)
    per_group = max(8, SEARCH_SAMPLE // max(values.shape[0], 1))
    sample = values[:, :: max(1, values.shape[1] // per_group)]
    best_lo, best_hi, best_err = low, high, None
    for fraction in CLIP_FRACTIONS:
        lo = (centre - fraction * (centre - low)).astype(np.float32)
        hi = (centre + fraction * (high - centre)).astype(np.float32)
        err = ((dequantise(quantise(sample, lo, hi, levels), lo, hi, levels) - sample) ** 2).sum(axis=1)
        if best_err is None:
            best_err = err
            continue
        better = err < best_err
        best_lo, best_hi, best_err = np.where(better, lo, best_lo), np.where(better, hi, best_hi), \
            np.where(better, err, best_err)
    return best_lo.astype(np.float32), best_hi.astype(np.float32)


def _constriction():
    import constriction  # lazy: only the dense codec needs it

    return constriction


def code_frequencies(codes: np.ndarray, levels: int) -> np.ndarray:
    """The entropy model the wire carries: how often each code occurs, scaled to uint16
    (every code that occurs keeps at least 1)."""
    counts = np.bincount(codes.ravel(), minlength=levels).astype(np.float64)
    scaled = np.rint(counts * (65535.0 / counts.max()))
    return np.where(counts > 0, np.maximum(scaled, 1), 0).astype("<u2")


def _categorical(frequencies: np.ndarray):
    """The model both sides build from the frequencies, in the same float32 arithmetic
    (constriction's leaky categorical: no code has probability zero)."""
    weights = frequencies.astype(np.float32)
    return _constriction().stream.model.Categorical(weights / weights.sum(dtype=np.float32), perfect=False)


def _ans_encode(codes: np.ndarray, frequencies: np.ndarray) -> bytes:
    coder = _constriction().stream.stack.AnsCoder()
    coder.encode_reverse(codes.astype(np.int32), _categorical(frequencies))
    return coder.get_compressed().astype("<u4").tobytes()


def _ans_decode(words: bytes, frequencies: np.ndarray, levels: int, total: int) -> np.ndarray:
    try:
        coder = _constriction().stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
        codes = np.asarray(coder.decode(_categorical(frequencies), total), dtype=np.int64)
        # T codes take a valid section back to an empty coder: words left over (or a
        # section cut short, whose last codes are garbage) do not.
        complete = coder.is_empty()
    except BaseException as exc:  # noqa: BLE001 - a Rust panic surfaces as BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise PayloadError(f"dense ANS section does not decode: {exc}") from None
    if not complete:
        raise PayloadError("dense ANS section does not end where its codes do (truncated or padded)")
    if codes.size != total or (codes < 0).any() or (codes >= levels).any():
        raise PayloadError("dense ANS section decodes to codes outside the model")
    return codes


def encode(x: np.ndarray, cfg: DenseConfig, float16_ranges: bool = False) -> bytes:
    """``float16_ranges``: group ranges widened to float16 values (slicer.encode)."""
    flat = np.ascontiguousarray(x, dtype=np.float32).ravel()
    levels = 1 << cfg.bits
    length, count = groups_of(tuple(x.shape))
    writer = PayloadWriter(cfg.codec_id, x.dtype, x.shape, KNOBS.pack(cfg.bits, int(cfg.entropy)))
    if count == 0:
        for section in (META.pack(PACKED), b"", b"", b""):
            writer.section(section)
        return writer.finish()
    values, _ = _grouped(flat, length, count)
    lo, hi = choose_ranges(values, levels)
    if float16_ranges:
        lo, hi = float16_outward(lo, hi) or (lo, hi)
    codes = quantise(values, lo, hi, levels).ravel()[: flat.size]
    ranges = np.empty(count, dtype=RANGE_DTYPE)
    ranges["lo"], ranges["hi"] = lo, hi
    mode, model, body = PACKED, b"", None
    if cfg.entropy:
        frequencies = code_frequencies(codes, levels)
        words = _ans_encode(codes, frequencies)
        if len(words) + frequencies.nbytes < packed_nbytes(flat.size, cfg.bits):
            mode, model, body = ANS, frequencies.tobytes(), words
    if body is None:  # packed only where it is what goes
        body = pack_uint(codes.astype(np.uint64), cfg.bits)
    writer.section(META.pack(mode))
    writer.section(ranges.tobytes())
    writer.section(model)
    writer.section(body)
    return writer.finish()


def read_config(header: Header) -> DenseConfig:
    bits, entropy = unpack_struct(KNOBS, memoryview(header.knobs), "dense knobs")
    if not 1 <= bits <= 8 or entropy not in (0, 1):
        raise PayloadError(f"dense knobs out of range (bits={bits}, entropy={entropy})")
    return DenseConfig(bits=bits, entropy=bool(entropy))


def decode(payload: bytes, header: Header) -> np.ndarray:
    """Decode a dense payload whose header was validated by ``wire.read_header``: every
    section's length is checked against the shape before anything is sized by it (an ANS
    section may not exceed 24 bits per element, its model's worst case)."""
    cfg = read_config(header)
    levels, total = 1 << cfg.bits, header.num_elements
    length, count = groups_of(header.shape)
    reader = PayloadReader(payload, header)
    meta, ranges_buf, model_buf, body = (reader.section(n) for n in ("meta", "ranges", "model", "values"))
    reader.finish()
    (mode,) = unpack_struct(META, meta, "dense meta")
    if mode not in (PACKED, ANS) or (mode == ANS and not cfg.entropy):
        raise PayloadError(f"dense mode {mode} is not one this payload's knobs allow")
    if len(ranges_buf) != count * RANGE_DTYPE.itemsize:
        raise PayloadError(f"dense range table of {len(ranges_buf)} bytes for {count} groups")
    if mode == PACKED and (len(model_buf) or len(body) != packed_nbytes(total, cfg.bits)):
        raise PayloadError(f"dense packed section of {len(body)} bytes for {total} codes of {cfg.bits} bits")
    if mode == ANS and (len(model_buf) != 2 * levels or len(body) % 4
                        or len(body) > 4 * (-(-MAX_BITS_PER_SYMBOL * total // 32) + 2)):
        raise PayloadError(f"dense ANS sections of {len(model_buf)} and {len(body)} bytes for {total} codes "
                           f"of {cfg.bits} bits")
    if count == 0:
        return np.zeros(header.shape, dtype=header.dtype)
    ranges = np.frombuffer(ranges_buf, dtype=RANGE_DTYPE)
    lo, hi = ranges["lo"].astype(np.float32), ranges["hi"].astype(np.float32)
    top = float(np.finfo(header.dtype).max)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all() and (hi >= lo).all()
            and (np.abs(lo) <= top).all() and (np.abs(hi) <= top).all()):
        raise PayloadError("dense range table holds a non-finite, inverted or out-of-range range")
    if mode == PACKED:
        codes = unpack_uint(body, total, cfg.bits).astype(np.int64)
    else:
        frequencies = np.frombuffer(model_buf, dtype="<u2")
        if not frequencies.any():
            raise PayloadError("dense frequency table is all zeros")
        codes = _ans_decode(bytes(body), frequencies, levels, total)
    grouped = np.zeros(count * length, dtype=np.int64)
    grouped[:total] = codes
    with np.errstate(over="ignore"):
        out = dequantise(grouped.reshape(count, length), lo, hi, levels).ravel()[:total]
    out = np.clip(out, -top, top)  # a product and a sum near the dtype's maximum may round past it
    return out.reshape(header.shape).astype(header.dtype)


def predict_bits(shape: tuple[int, ...], cfg: DenseConfig) -> int:
    """Upper bound on ``8·len(encode(x, cfg))``: the ANS form is sent only when smaller
    than the packed one, so the packed size bounds both."""
    total = math.prod(shape)
    _, count = groups_of(shape)
    nbytes = (header_nbytes(len(shape), KNOBS.size) + NUM_SECTIONS * SECTION_OVERHEAD_NBYTES + META.size
              + count * RANGE_DTYPE.itemsize + packed_nbytes(total, cfg.bits))
    return 8 * nbytes
