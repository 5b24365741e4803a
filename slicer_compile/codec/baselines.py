"""Baselines every comparison reports beside the SLICER codec, in the same
wire format: float16 cast (id 3), per-tensor int8 (id 4), zstd on float16 (id 5).
"""

from __future__ import annotations

import math
import struct

import numpy as np

from slicer_compile.codec.config import Float16Config, Int8Config, ZstdConfig
from slicer_compile.codec.wire import (
    SECTION_OVERHEAD_NBYTES,
    Header,
    PayloadReader,
    PayloadWriter,
    header_nbytes,
    unpack_struct,
)
from slicer_compile.errors import PayloadError

_F16_MAX = np.float32(np.finfo(np.float16).max)
_SCALE = struct.Struct("<f")


def _to_float16(x: np.ndarray) -> np.ndarray:
    # Saturate instead of overflowing to inf: a baseline should lose precision, not values.
    return np.clip(np.asarray(x, dtype=np.float32), -_F16_MAX, _F16_MAX).astype("<f2").ravel()


def _section_exact(reader: PayloadReader, nbytes: int, what: str) -> memoryview:
    buf = reader.section(what)
    if len(buf) != nbytes:
        raise PayloadError(f"{what} section of {len(buf)} bytes, expected {nbytes}")
    return buf


# --- float16 ------------------------------------------------------------------


def encode_float16(x: np.ndarray, cfg: Float16Config) -> bytes:
    writer = PayloadWriter(cfg.codec_id, x.dtype, x.shape, b"")
    writer.section(_to_float16(x).tobytes())
    return writer.finish()


def decode_float16(payload: bytes, header: Header) -> np.ndarray:
    reader = PayloadReader(payload, header)
    buf = _section_exact(reader, 2 * header.num_elements, "float16")
    reader.finish()
    return _finite_float16(buf, header)


def _finite_float16(buf, header: Header) -> np.ndarray:
    values = np.frombuffer(buf, dtype="<f2")
    if not np.isfinite(values).all():
        raise PayloadError("float16 values include NaN or Inf")
    return values.reshape(header.shape).astype(header.dtype)


def predict_bits_float16(shape: tuple[int, ...], cfg: Float16Config) -> int:
    return 8 * (header_nbytes(len(shape), 0) + SECTION_OVERHEAD_NBYTES + 2 * math.prod(shape))


# --- int8 ----------------------------------------------------------------------


def encode_int8(x: np.ndarray, cfg: Int8Config) -> bytes:
    flat = np.asarray(x, dtype=np.float32).ravel()
    peak = np.float32(np.abs(flat).max()) if flat.size else np.float32(0)
    scale = peak / np.float32(127)
    if scale > 0:
        codes = np.clip(np.rint(flat / scale), -127, 127).astype(np.int8)
    else:
        codes = np.zeros(flat.size, dtype=np.int8)
    writer = PayloadWriter(cfg.codec_id, x.dtype, x.shape, b"")
    writer.section(_SCALE.pack(scale))
    writer.section(codes.tobytes())
    return writer.finish()


def decode_int8(payload: bytes, header: Header) -> np.ndarray:
    reader = PayloadReader(payload, header)
    (scale,) = unpack_struct(_SCALE, reader.section("scale"), "int8 scale")
    top = float(np.finfo(header.dtype).max)
    # The encoder's codes are in [-127, 127] and scale = peak / 127 in float32, so
    # 127·scale is the peak give or take a rounding: allow that rounding, no more.
    if not (math.isfinite(scale) and 0 <= scale * 127 <= top * (1 + 2.0 ** -20)):
        raise PayloadError(f"int8 scale {scale} is negative, non-finite or overflows {header.dtype}")
    codes = np.frombuffer(_section_exact(reader, header.num_elements, "int8 codes"), dtype=np.int8)
    reader.finish()
    if codes.size and int(codes.min()) == -128:
        raise PayloadError("int8 code -128 is outside the encoder's range [-127, 127]")
    with np.errstate(over="ignore"):
        values = codes.astype(np.float32) * np.float32(scale)
    # That rounding may land just past the dtype's maximum: saturate, never Inf.
    values = np.clip(values, -top, top, out=values)
    return values.reshape(header.shape).astype(header.dtype)


def predict_bits_int8(shape: tuple[int, ...], cfg: Int8Config) -> int:
    return 8 * (header_nbytes(len(shape), 0) + 2 * SECTION_OVERHEAD_NBYTES + _SCALE.size + math.prod(shape))


# --- zstd on float16 ---------------------------------------------------------------

_LEVEL = struct.Struct("<B")


def _zstd():
    import zstandard  # imported here: only this baseline needs it

    return zstandard


def encode_zstd(x: np.ndarray, cfg: ZstdConfig) -> bytes:
    zstd = _zstd()
    raw = _to_float16(x).tobytes()
    writer = PayloadWriter(cfg.codec_id, x.dtype, x.shape, _LEVEL.pack(cfg.level))
    writer.section(zstd.ZstdCompressor(level=cfg.level, write_content_size=True).compress(raw))
    return writer.finish()


def decode_zstd(payload: bytes, header: Header) -> np.ndarray:
    zstd = _zstd()
    expected = 2 * header.num_elements
    reader = PayloadReader(payload, header)
    frame = bytes(reader.section("zstd"))
    reader.finish()
    try:
        declared = zstd.frame_content_size(frame)
        if declared != expected:
            raise PayloadError(f"zstd frame declares {declared} bytes, the tensor needs {expected}")
        # Streamed, not one-shot: a one-shot decompress allocates the declared size up
        # front, so a truncated frame of a few bytes would cost 2·T before its refusal.
        # Streamed, the output grows only with what the frame's blocks really hold
        # (and zstd refuses a frame that produces more than it declares).
        raw = zstd.ZstdDecompressor().decompressobj().decompress(frame)
    except zstd.ZstdError as exc:
        raise PayloadError(f"zstd frame is corrupt: {exc}") from None
    if len(raw) != expected:
        raise PayloadError(f"zstd frame holds {len(raw)} bytes, the tensor needs {expected}")
    return _finite_float16(raw, header)


def zstd_compress_bound(nbytes: int) -> int:
    """ZSTD_COMPRESSBOUND from zstd.h: the largest one-shot frame for ``nbytes`` of input."""
    small = (128 * 1024 - nbytes) >> 11 if nbytes < 128 * 1024 else 0
    return nbytes + (nbytes >> 8) + small


def predict_bits_zstd(shape: tuple[int, ...], cfg: ZstdConfig) -> int:
    return 8 * (header_nbytes(len(shape), _LEVEL.size) + SECTION_OVERHEAD_NBYTES
                + zstd_compress_bound(2 * math.prod(shape)))
