"""Position coding: which elements of a tensor travel, and in which block.

Two coders, both vectorised and both near the information bound
``log2(T! / ((T-k)! · Π k_m!))`` that DESIGN.md sets as the target:

* :func:`encode_subset` codes a sorted set of ``n`` indices out of ``N`` (the
  kept mask, the sign of each kept value). It tries Golomb coding of the gaps
  (of the set, or of its complement when that is sparser), a bitmap and
  fixed-width indices, and keeps the smallest: never worse than a bitmap or
  fixed-width indices. Golomb streams are split into a unary stream, a field
  stream and an "extra bit" stream so that decoding needs no sequential loop.
* :func:`encode_labels` codes a sequence of block labels in base ``B`` by
  mixed-radix packing of up to 40 labels per 64-bit word, within 1% of
  ``log2 B`` bits per label. MS makes blocks equal-cardinality, so the labels
  of one sign are close to uniform and this is near their bound.

The decoder side validates every count and length before allocating, and
raises :class:`PayloadError` on anything inconsistent.
"""

from __future__ import annotations

import math
import struct
from functools import lru_cache

import numpy as np

from slicer_compile.codec.bits import pack_flags, pack_uint, packed_nbytes, unpack_flags, unpack_uint
from slicer_compile.errors import PayloadError

# Subset coding methods (first byte of a subset section).
TRIVIAL = 0  # n == 0 or n == N: nothing to send
BITMAP = 1
FIXED = 2
GOLOMB = 3
GOLOMB_COMPLEMENT = 4

_GOLOMB_HEADER = struct.Struct("<II")  # m, unary bit count
# Past this density of the sparser side, a bitmap is never larger than a Golomb code.
_GOLOMB_MAX_DENSITY = 0.4


def index_width(space: int) -> int:
    """Bits of one fixed-width index into ``range(space)``."""
    return max(1, (space - 1).bit_length())


def subset_worst_nbytes(max_count: int, space: int) -> int:
    """Upper bound on :func:`encode_subset`'s size for any count <= ``max_count``."""
    # The worst count is the largest one below the full space (which is trivial).
    count = min(max_count, space - 1)
    if count <= 0:
        return 1
    return 1 + min(packed_nbytes(space, 1), packed_nbytes(count, index_width(space)))


# --- Golomb coding of gaps ---------------------------------------------------


def _golomb_shape(m: int) -> tuple[int, int]:
    """(field width, threshold u) of the truncated-binary remainder for modulus m."""
    if m == 1:
        return 0, 0
    b = (m - 1).bit_length()  # ceil(log2 m)
    return b - 1, (1 << b) - m


def _golomb_nbytes(gaps: np.ndarray, gap_sum: int, m: int) -> int:
    n = gaps.size
    width, u = _golomb_shape(m)
    if m == 1:
        unary_bits, extra = n + gap_sum, 0
    elif m & (m - 1) == 0:  # Rice code: every remainder takes the extra bit
        unary_bits, extra = n + int((gaps >> (m.bit_length() - 1)).sum()), n
    else:
        quotient = gaps // m
        unary_bits = n + int(quotient.sum())
        extra = int(np.count_nonzero(gaps - quotient * m >= u))
    return (1 + _GOLOMB_HEADER.size + packed_nbytes(unary_bits, 1) + packed_nbytes(n, width)
            + packed_nbytes(extra, 1))


def _best_modulus(gaps: np.ndarray, gap_sum: int) -> tuple[int, int]:
    """The Golomb modulus with the fewest bytes among those near the geometric optimum."""
    n = gaps.size
    mean = gap_sum / n
    q = mean / (mean + 1.0)  # geometric fit: P(g) = (1-q) q^g
    guess = 1 if q <= 0.0 else max(1, math.ceil(math.log(1.0 + q) / -math.log(q)))
    best = None
    for m in sorted({max(1, guess - 1), guess, guess + 1}):
        size = _golomb_nbytes(gaps, gap_sum, m)
        if best is None or size < best[1]:
            best = (m, size)
    return best


def _golomb_encode(gaps: np.ndarray, m: int) -> bytes:
    width, u = _golomb_shape(m)
    if m == 1:
        quotient, rem = gaps, None
    elif m & (m - 1) == 0:
        shift = m.bit_length() - 1
        quotient, rem = gaps >> shift, gaps & (m - 1)
    else:
        quotient = gaps // m
        rem = gaps - quotient * m
    # Unary stream: quotient zeros then a one, for every gap.
    ends = np.cumsum(quotient + 1) - 1
    unary_bits = int(ends[-1]) + 1
    unary = np.zeros(unary_bits, dtype=bool)
    unary[ends] = True
    parts = [_GOLOMB_HEADER.pack(m, unary_bits), pack_flags(unary)]
    if rem is not None:
        # Truncated binary: r < u takes `width` bits; r >= u takes `width`
        # bits of (r+u)>>1 in the field stream plus one extra bit.
        long_code = rem >= u
        field = np.where(long_code, (rem + u) >> 1, rem)
        parts.append(pack_uint(field, width))
        parts.append(pack_flags(np.compress(long_code, (rem + u) & 1)))
    return b"".join(parts)


def _golomb_streams(buf: memoryview, count: int, space: int) -> tuple[int, int, int, int]:
    """Check a Golomb body's header and length; (m, unary bits, unary bytes, field bytes)."""
    if len(buf) < _GOLOMB_HEADER.size:
        raise PayloadError("Golomb section truncated before its header")
    m, unary_bits = _GOLOMB_HEADER.unpack_from(buf)
    if not 1 <= m <= space:
        raise PayloadError(f"Golomb modulus {m} outside [1, {space}]")
    # Every quotient bit stands for m skipped positions, so a valid stream
    # has (unary_bits - count) * m <= space: this also keeps the sums below
    # from overflowing int64.
    if unary_bits < count or (unary_bits - count) * m > space:
        raise PayloadError(f"Golomb unary stream of {unary_bits} bits is inconsistent with {count} of {space}")
    width, _ = _golomb_shape(m)
    unary_nbytes = packed_nbytes(unary_bits, 1)
    field_nbytes = packed_nbytes(count, width) if m > 1 else 0
    streams_end = _GOLOMB_HEADER.size + unary_nbytes + field_nbytes
    # m = 1 has no fields and no extra bits: the unary stream ends the section.
    if len(buf) < streams_end or (m == 1 and len(buf) != streams_end):
        raise PayloadError(f"Golomb section is {len(buf)} bytes, its streams need {streams_end}")
    return m, unary_bits, unary_nbytes, field_nbytes


def _golomb_decode(buf: memoryview, count: int, space: int) -> np.ndarray:
    m, unary_bits, unary_nbytes, field_nbytes = _golomb_streams(buf, count, space)
    width, u = _golomb_shape(m)
    offset = _GOLOMB_HEADER.size
    unary = unpack_flags(buf[offset: offset + unary_nbytes], unary_bits)
    ends = np.flatnonzero(unary)
    if ends.size != count or not unary[-1]:
        raise PayloadError(f"Golomb unary stream holds {ends.size} codes, expected {count}")
    quotient = np.diff(ends, prepend=-1) - 1
    offset += unary_nbytes
    gaps = quotient * m
    if m > 1:
        field = unpack_uint(buf[offset: offset + field_nbytes], count, width).astype(np.int64)
        offset += field_nbytes
        long_code = np.flatnonzero(field >= u)
        extra_nbytes = packed_nbytes(long_code.size, 1)
        if len(buf) != offset + extra_nbytes:
            raise PayloadError(f"Golomb section is {len(buf)} bytes, its streams need {offset + extra_nbytes}")
        extra = unpack_flags(buf[offset:], long_code.size)
        rem = field
        rem[long_code] = (field[long_code] << 1 | extra) - u
        if rem.size and int(rem.max()) >= m:
            raise PayloadError(f"Golomb remainder outside [0, {m})")
        gaps += rem
    positions = np.cumsum(gaps + 1) - 1
    if positions.size and positions[-1] >= space:
        raise PayloadError(f"position {int(positions[-1])} outside a space of {space}")
    return positions


def golomb_streams_nbytes(m: int, unary_bits: int, count: int, streams: memoryview) -> int:
    """Bytes of a Golomb body after its (m, U) header, for ``count`` codes: the unary and
    field streams' sizes follow from the counts, the extra stream's from how many fields
    reach u, read from ``streams`` (checked to hold the field stream first). For a
    framing that does not store the section's length (codec.compact)."""
    if not 1 <= m or unary_bits < count:
        raise PayloadError(f"Golomb stream of {unary_bits} bits and modulus {m} for {count} codes")
    width, u = _golomb_shape(m)
    unary_nbytes = packed_nbytes(unary_bits, 1)
    field_nbytes = packed_nbytes(count, width) if m > 1 else 0
    if len(streams) < unary_nbytes + field_nbytes:
        raise PayloadError(f"Golomb streams truncated: {len(streams)} bytes, the counts need "
                           f"{unary_nbytes + field_nbytes} before the extra bits")
    if m == 1:
        return unary_nbytes
    field = unpack_uint(streams[unary_nbytes: unary_nbytes + field_nbytes], count, width)
    return unary_nbytes + field_nbytes + packed_nbytes(int(np.count_nonzero(field >= u)), 1)


# --- Subsets ------------------------------------------------------------------


def encode_subset(indices: np.ndarray, space: int) -> bytes:
    """Code a strictly increasing int64 array of indices in ``range(space)``.

    The count is not stored: the decoder is told it (it travels once, in the
    codec's metadata).
    """
    n = int(indices.size)
    if n == 0 or n == space:
        return bytes([TRIVIAL])
    candidates = [(1 + packed_nbytes(space, 1), BITMAP), (1 + packed_nbytes(n, index_width(space)), FIXED)]
    # Golomb codes whichever of the set and its complement is sparser; above
    # a density of 0.4 it cannot beat the bitmap, so it is not even tried.
    complement = 2 * n > space
    if min(n, space - n) <= _GOLOMB_MAX_DENSITY * space:
        if complement:
            mask = np.ones(space, dtype=bool)
            mask[indices] = False
            coded = np.flatnonzero(mask)
        else:
            coded = indices
        gaps = np.diff(coded, prepend=-1) - 1
        gap_sum = int(coded[-1]) + 1 - coded.size
        m, golomb_nbytes = _best_modulus(gaps, gap_sum)
        candidates.append((golomb_nbytes, GOLOMB_COMPLEMENT if complement else GOLOMB))
    nbytes, method = min(candidates)
    if method == BITMAP:
        mask = np.zeros(space, dtype=bool)
        mask[indices] = True
        return bytes([BITMAP]) + pack_flags(mask)
    if method == FIXED:
        return bytes([FIXED]) + pack_uint(indices, index_width(space))
    return bytes([method]) + _golomb_encode(gaps, m)


def check_subset_length(buf: memoryview, count: int, space: int) -> None:
    """Refuse a subset section whose length does not fit its method for ``count`` of
    ``space``: cheap (a few header bytes), and what every decoder checks of every
    section before it allocates anything sized by a count."""
    if len(buf) < 1:
        raise PayloadError("empty position section")
    if not 0 <= count <= space:
        raise PayloadError(f"position count {count} outside [0, {space}]")
    method, body_nbytes = buf[0], len(buf) - 1
    if method == TRIVIAL:
        if count not in (0, space):
            raise PayloadError(f"trivial position section for {count} of {space}")
        if body_nbytes:
            raise PayloadError("trivial position section carries data")
        return
    if count in (0, space):
        raise PayloadError(f"non-trivial position section for {count} of {space}")
    if method == BITMAP:
        if body_nbytes != packed_nbytes(space, 1):
            raise PayloadError(f"bitmap of {body_nbytes} bytes for a space of {space}")
    elif method == FIXED:
        if body_nbytes != packed_nbytes(count, index_width(space)):
            raise PayloadError(f"fixed-width index section of {body_nbytes} bytes for {count} indices")
    elif method in (GOLOMB, GOLOMB_COMPLEMENT):
        _golomb_streams(buf[1:], count if method == GOLOMB else space - count, space)
    else:
        raise PayloadError(f"unknown position coding method {method}")


def decode_subset(buf: memoryview, count: int, space: int) -> np.ndarray:
    """Decode a subset section into ``count`` sorted indices below ``space``."""
    check_subset_length(buf, count, space)
    method, body = buf[0], buf[1:]
    if method == TRIVIAL:
        return np.arange(count, dtype=np.int64)
    if method == BITMAP:
        positions = np.flatnonzero(unpack_flags(body, space))
        if positions.size != count:
            raise PayloadError(f"bitmap holds {positions.size} positions, expected {count}")
        return positions
    if method == FIXED:
        positions = unpack_uint(body, count, index_width(space)).astype(np.int64)
        if positions[-1] >= space or (count > 1 and not (np.diff(positions) > 0).all()):
            raise PayloadError("fixed-width indices are not strictly increasing below the space size")
        return positions
    if method == GOLOMB:
        return _golomb_decode(body, count, space)
    absent = _golomb_decode(body, space - count, space)
    mask = np.ones(space, dtype=bool)
    mask[absent] = False
    return np.flatnonzero(mask)


# --- Labels -------------------------------------------------------------------


@lru_cache(maxsize=None)
def label_chunk(base: int) -> tuple[int, int]:
    """(labels per word, bits per word) for mixed-radix packing in ``base``.

    Chooses the chunk length whose ``ceil(c·log2 base)``-bit words waste the
    least, among words of at most 64 bits.
    """
    best = (1, max(1, (base - 1).bit_length()))
    best_ratio = best[1] / best[0]
    c = 1
    while base ** c <= 1 << 64:
        bits = (base ** c - 1).bit_length()
        if bits / c < best_ratio - 1e-12:
            best, best_ratio = (c, bits), bits / c
        c += 1
    return best


@lru_cache(maxsize=None)
def _label_powers(base: int) -> np.ndarray:
    """Place values of the labels in a word, first label most significant."""
    per_word, _ = label_chunk(base)
    return np.array([base ** (per_word - 1 - j) for j in range(per_word)], dtype=np.uint64)


def encode_labels(labels: np.ndarray, base: int) -> bytes:
    """Pack labels in ``range(base)`` by mixed radix, ``label_chunk(base)`` per word."""
    if base <= 1 or labels.size == 0:
        return b""
    per_word, bits = label_chunk(base)
    words = -(-labels.size // per_word)
    digits = np.zeros(words * per_word, dtype=np.uint64)
    digits[: labels.size] = labels
    # Each product is at most the word's value, which is below 2^64: no wrap-around.
    acc = (digits.reshape(words, per_word) * _label_powers(base)).sum(axis=1, dtype=np.uint64)
    return pack_uint(acc, bits)


def labels_nbytes(count: int, base: int) -> int:
    """Bytes of :func:`encode_labels` for ``count`` labels in ``base``."""
    if base <= 1 or count == 0:
        return 0
    per_word, bits = label_chunk(base)
    return packed_nbytes(-(-count // per_word), bits)


def check_labels_length(buf: memoryview, count: int, base: int) -> None:
    """Refuse a label section that is not exactly the size ``count`` labels need."""
    if len(buf) != labels_nbytes(count, base):
        raise PayloadError(f"label section of {len(buf)} bytes for {count} labels in base {base}")


def decode_labels(buf: memoryview, count: int, base: int) -> np.ndarray:
    """Inverse of :func:`encode_labels`; validates every word and the padding."""
    check_labels_length(buf, count, base)
    if base <= 1 or count == 0:
        return np.zeros(count, dtype=np.uint8)
    per_word, bits = label_chunk(base)
    words = -(-count // per_word)
    acc = unpack_uint(buf, words, bits)
    if int(acc.max()) >= base ** per_word:
        raise PayloadError("label word out of range")
    if words <= 64:  # few words: one broadcast division beats a loop of small ones
        flat = ((acc[:, None] // _label_powers(base)) % np.uint64(base)).ravel()
    else:  # division by a scalar is several times faster than by an array
        digits = np.empty((words, per_word), dtype=np.uint64)
        b = np.uint64(base)
        for j in range(per_word - 1, -1, -1):
            digits[:, j] = acc % b
            acc = acc // b
        flat = digits.ravel()
    if flat[count:].any():
        raise PayloadError("label padding is not zero")
    return flat[:count].astype(np.uint8)
