"""Fixed-width bit packing, MSB first, vectorised with numpy.

Every stream in the wire format is a run of unsigned fields of one width,
packed most-significant bit first (``np.packbits`` order) and padded with zero
bits to a whole byte. Widths up to 8 take a fast path that packs eight fields
into one uint64 at a time; wider fields go through a bit matrix.
"""

from __future__ import annotations

import numpy as np

from slicer_compile.errors import PayloadError

MAX_FIELD_BITS = 64
# Widths that are whole bytes pack as big-endian integers, no bit shuffling.
_BYTE_ALIGNED = {8: np.dtype(np.uint8), 16: np.dtype(">u2"), 32: np.dtype(">u4"), 64: np.dtype(">u8")}


def packed_nbytes(count: int, width: int) -> int:
    """Bytes taken by ``count`` fields of ``width`` bits, padded to a byte."""
    return (count * width + 7) // 8


def pack_uint(values: np.ndarray, width: int) -> bytes:
    """Pack unsigned ``values`` (each < 2**width) into ``width``-bit fields."""
    n = int(values.size)
    if n == 0 or width == 0:
        return b""
    if not 0 < width <= MAX_FIELD_BITS:
        raise ValueError(f"field width must be in [0, {MAX_FIELD_BITS}], got {width}")
    if width in _BYTE_ALIGNED:
        return values.astype(_BYTE_ALIGNED[width]).tobytes()
    if width < 8:
        return _pack_narrow(values, width, n)
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    bit_matrix = (values.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)
    return np.packbits(bit_matrix.astype(np.uint8)).tobytes()


def _pack_narrow(values: np.ndarray, width: int, n: int) -> bytes:
    # Eight fields of <= 8 bits fill at most one uint64: fold each group of
    # eight into one word, then keep the word's low `width` bytes.
    groups = -(-n // 8)
    padded = np.zeros(groups * 8, dtype=np.uint64)
    padded[:n] = values
    padded = padded.reshape(groups, 8)
    word = np.zeros(groups, dtype=np.uint64)
    for j in range(8):
        word |= padded[:, j] << np.uint64(width * (7 - j))
    as_bytes = word.astype(">u8").view(np.uint8).reshape(groups, 8)[:, 8 - width:]
    return as_bytes.tobytes()[: packed_nbytes(n, width)]


def unpack_uint(buf: bytes | memoryview, count: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_uint`; returns ``count`` values as uint64.

    Raises:
        PayloadError: ``buf`` is shorter than ``count`` fields need.
    """
    need = packed_nbytes(count, width)
    if len(buf) < need:
        raise PayloadError(f"bit stream truncated: {count} fields of {width} bits need {need} bytes, have {len(buf)}")
    if count == 0 or width == 0:
        return np.zeros(count, dtype=np.uint64)
    raw = np.frombuffer(buf, dtype=np.uint8, count=need)
    if width in _BYTE_ALIGNED:
        return np.frombuffer(buf, dtype=_BYTE_ALIGNED[width], count=count).astype(np.uint64)
    if width < 8:
        groups = -(-count // 8)
        words = np.zeros((groups, 8), dtype=np.uint8)
        padded = np.zeros(groups * width, dtype=np.uint8)
        padded[:need] = raw
        words[:, 8 - width:] = padded.reshape(groups, width)
        word = words.view(">u8").ravel().astype(np.uint64)
        shifts = np.uint64(width) * np.arange(7, -1, -1, dtype=np.uint64)
        fields = (word[:, None] >> shifts) & np.uint64((1 << width) - 1)
        return fields.ravel()[:count]
    bits = np.unpackbits(raw)[: count * width].reshape(count, width)
    wide = np.zeros((count, 64), dtype=np.uint8)
    wide[:, 64 - width:] = bits
    return np.packbits(wide, axis=1).view(">u8").ravel().astype(np.uint64)


def pack_flags(flags: np.ndarray) -> bytes:
    """Pack a boolean array one bit per element."""
    return np.packbits(flags.astype(bool, copy=False)).tobytes()


def unpack_flags(buf: bytes | memoryview, count: int) -> np.ndarray:
    """Inverse of :func:`pack_flags`; padding bits must be zero (canonical form)."""
    need = packed_nbytes(count, 1)
    if len(buf) < need:
        raise PayloadError(f"bitmap truncated: {count} bits need {need} bytes, have {len(buf)}")
    bits = np.unpackbits(np.frombuffer(buf, dtype=np.uint8, count=need))
    if bits[count:].any():
        raise PayloadError("bitmap has non-zero padding bits")
    return bits[:count].astype(bool)
