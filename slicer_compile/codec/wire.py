"""The wire format shared by every codec and every backend (docs/wire-format.md).

A payload is::

    header   magic "SLCR", format version, codec id, dtype, ndim, flags,
             knob byte count, shape (ndim x uint32), knobs
    body     sections, each a uint32 byte count then that many bytes
    trailer  CRC32 of everything before it

All integers are little-endian. :class:`PayloadReader` checks every length
against the buffer before handing out a view, so a codec's decoder can never
read past the end or allocate from an unchecked count.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from slicer_compile.errors import PayloadError

MAGIC = b"SLCR"
FORMAT_VERSION = 1
#: A stream's session header (codec.stream): a version-1 header and CRC, no sections.
STREAM_VERSION = 2
MAX_NDIM = 8
#: Shapes are stored as uint32 and flat indices must fit in uint32.
MAX_DIM = 2**32 - 1

_HEADER = struct.Struct("<4sBBBBHH")  # magic, version, codec, dtype, ndim, flags, knob bytes
_SECTION_LEN = struct.Struct("<I")
_CRC = struct.Struct("<I")

DTYPE_CODES = {np.dtype(np.float32): 1, np.dtype(np.float16): 2}
DTYPES_BY_CODE = {code: dtype for dtype, code in DTYPE_CODES.items()}

#: Bytes of the fixed part of every payload, before shape and knobs.
FIXED_OVERHEAD_NBYTES = _HEADER.size + _CRC.size
SECTION_OVERHEAD_NBYTES = _SECTION_LEN.size


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds a decoder enforces before allocating.

    Args:
        max_elements: largest tensor (elements) a payload may describe.
        max_payload_bytes: largest payload accepted at all.
    """

    max_elements: int = 1 << 28
    max_payload_bytes: int = 1 << 31


DEFAULT_LIMITS = DecodeLimits()


@dataclass(frozen=True)
class Header:
    """The validated fixed part of a payload."""

    codec_id: int
    dtype: np.dtype
    shape: tuple[int, ...]
    knobs: bytes
    body_offset: int

    @property
    def num_elements(self) -> int:
        return math.prod(self.shape)


def header_nbytes(ndim: int, knob_nbytes: int) -> int:
    """Bytes of header + CRC trailer for a tensor of ``ndim`` dimensions."""
    return FIXED_OVERHEAD_NBYTES + 4 * ndim + knob_nbytes


def check_encodable(x: np.ndarray) -> None:
    """Reject what no codec can carry, with a message that says why."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(x).__name__}")
    if x.dtype not in DTYPE_CODES:
        raise ValueError(f"unsupported dtype {x.dtype}: codecs take float32 or float16")
    if x.ndim > MAX_NDIM:
        raise ValueError(f"tensor has {x.ndim} dimensions; the wire format carries at most {MAX_NDIM}")
    if any(d > MAX_DIM for d in x.shape) or x.size > MAX_DIM:
        raise ValueError(f"tensor of shape {x.shape} is too large for uint32 indices")


class PayloadWriter:
    """Builds a payload: header, then sections, then the CRC."""

    def __init__(self, codec_id: int, dtype: np.dtype, shape: tuple[int, ...], knobs: bytes,
                 version: int = FORMAT_VERSION):
        self._parts = [
            _HEADER.pack(MAGIC, version, codec_id, DTYPE_CODES[np.dtype(dtype)], len(shape), 0, len(knobs)),
            struct.pack(f"<{len(shape)}I", *shape),
            knobs,
        ]

    def section(self, data: bytes) -> None:
        self._parts.append(_SECTION_LEN.pack(len(data)))
        self._parts.append(data)

    def finish(self) -> bytes:
        body = b"".join(self._parts)
        return body + _CRC.pack(zlib.crc32(body))


def read_header(payload: bytes | bytearray | memoryview, limits: DecodeLimits = DEFAULT_LIMITS,
                version: int = FORMAT_VERSION) -> Header:
    """Validate magic, version (``version``: a payload's, or a stream's session header's),
    CRC, dtype and shape; return the header."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise PayloadError(f"payload must be bytes, got {type(payload).__name__}")
    view = memoryview(payload).cast("B")
    n = len(view)
    if n > limits.max_payload_bytes:
        raise PayloadError(f"payload of {n} bytes exceeds the limit of {limits.max_payload_bytes}")
    if n < FIXED_OVERHEAD_NBYTES:
        raise PayloadError(f"payload of {n} bytes is shorter than any valid payload")
    magic, found, codec_id, dtype_code, ndim, flags, knob_nbytes = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise PayloadError(f"not a slicer payload (magic {bytes(magic)!r})")
    if found != version:
        what = "a stream session header" if found == STREAM_VERSION else f"format version {found}"
        raise PayloadError(f"{what} where version {version} was expected"
                           + (" (this build reads 1 and 2)" if found not in (FORMAT_VERSION, STREAM_VERSION) else ""))
    (crc,) = _CRC.unpack_from(view, n - _CRC.size)
    if zlib.crc32(view[: n - _CRC.size]) != crc:
        raise PayloadError("CRC mismatch: the payload is corrupt or truncated")
    if flags != 0:
        raise PayloadError(f"unknown header flags {flags:#x}")
    if dtype_code not in DTYPES_BY_CODE:
        raise PayloadError(f"unknown dtype code {dtype_code}")
    if ndim > MAX_NDIM:
        raise PayloadError(f"{ndim} dimensions exceed the maximum of {MAX_NDIM}")
    shape_end = _HEADER.size + 4 * ndim
    knobs_end = shape_end + knob_nbytes
    if knobs_end > n - _CRC.size:
        raise PayloadError("payload truncated inside its header")
    shape = struct.unpack_from(f"<{ndim}I", view, _HEADER.size)
    num_elements = math.prod(shape)
    if num_elements > limits.max_elements:
        raise PayloadError(f"tensor of {num_elements} elements exceeds the limit of {limits.max_elements}")
    if num_elements > MAX_DIM:
        raise PayloadError(f"tensor of {num_elements} elements is too large for uint32 indices")
    return Header(codec_id, DTYPES_BY_CODE[dtype_code], shape, bytes(view[shape_end:knobs_end]), knobs_end)


class PayloadReader:
    """Hands out the sections of a payload body, each checked against the buffer."""

    def __init__(self, payload: bytes | bytearray | memoryview, header: Header):
        self._view = memoryview(payload).cast("B")
        self._pos = header.body_offset
        self._end = len(self._view) - _CRC.size
        self._index = 0

    def section(self, what: str) -> memoryview:
        if self._pos + _SECTION_LEN.size > self._end:
            raise PayloadError(f"payload truncated before section {self._index} ({what})")
        (length,) = _SECTION_LEN.unpack_from(self._view, self._pos)
        start = self._pos + _SECTION_LEN.size
        if length > self._end - start:
            raise PayloadError(f"section {self._index} ({what}) claims {length} bytes, only {self._end - start} remain")
        self._pos = start + length
        self._index += 1
        return self._view[start: start + length]

    def finish(self) -> None:
        """Every byte must belong to a section: trailing garbage is an error."""
        if self._pos != self._end:
            raise PayloadError(f"{self._end - self._pos} unexpected bytes after the last section")


def unpack_struct(fmt: struct.Struct, buf: memoryview, what: str) -> tuple:
    """``fmt.unpack`` of a whole section, with the size checked first."""
    if len(buf) != fmt.size:
        raise PayloadError(f"{what} is {len(buf)} bytes, expected {fmt.size}")
    return fmt.unpack(buf)
