"""The stream form of the wire (docs/wire-format.md, "Stream"): a session header once,
then one compact frame per token.

Within a sequence the codec, dtype, shape of one token's tensor and knobs do not
change, yet a version-1 payload carries them (and seven uint32 lengths, and a CRC) with
every token. A stream sends them once::

    enc = StreamEncoder(SlicerConfig(sparsity=0.99), shape=(1, 1, 4096))
    dec = StreamDecoder(enc.header)           # the header travels once, at the start
    x_hat = dec.decode(enc.frame(x))          # then a frame per token, in order

A frame is a tag byte (the frame's sequence number modulo 128, and whether its
quantiser tables are narrow), the codec's sections in their compact form
(codec.compact) and a CRC-32 over the frame chained from the session header's CRC and
the frame's full sequence number: a frame decodes only against its own header and in
its place, and anything else is a :class:`PayloadError` that leaves the decoder as it
was (it moves on only past a frame that decoded).
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

from slicer_compile.codec import CODECS, DecodeLimits, decode, encode
from slicer_compile.codec.compact import FORMS, FrameReader, can_narrow
from slicer_compile.codec.config import CodecConfig
from slicer_compile.codec.wire import (
    DEFAULT_LIMITS,
    DTYPE_CODES,
    FORMAT_VERSION,
    STREAM_VERSION,
    Header,
    PayloadReader,
    PayloadWriter,
    read_header,
)
from slicer_compile.errors import ConfigError, PayloadError

_SEQ = struct.Struct("<Q")
_LENGTH = struct.Struct("<I")
_CRC = struct.Struct("<I")
_NARROW = 0x80
_SEQ_MASK = 0x7F
#: What a frame adds to the codec's content: the tag byte and the CRC.
FRAME_OVERHEAD_NBYTES = 1 + _CRC.size


def session_header(cfg: CodecConfig, shape: tuple[int, ...], dtype=np.float32) -> bytes:
    """The session header of a stream of tensors of ``shape`` through ``cfg``."""
    codec = CODECS.get(getattr(cfg, "codec_id", None))
    if codec is None or not isinstance(cfg, codec.config):
        raise ConfigError(f"not a codec config: {cfg!r}")
    # The knobs exactly as a payload of this codec carries them.
    probe = read_header(encode(np.zeros((1,), dtype=np.float32), cfg))
    writer = PayloadWriter(cfg.codec_id, np.dtype(dtype), tuple(int(d) for d in shape), probe.knobs,
                           version=STREAM_VERSION)
    return writer.finish()


class _Session:
    """A validated session header: the version-1 header every frame expands under."""

    def __init__(self, header: bytes | bytearray | memoryview, limits: DecodeLimits):
        self.raw = bytes(header)
        self.header: Header = read_header(self.raw, limits, version=STREAM_VERSION)
        codec = CODECS.get(self.header.codec_id)
        if codec is None:
            raise PayloadError(f"session header names an unknown codec id {self.header.codec_id}")
        if len(self.header.knobs) != codec.knob_nbytes:
            raise PayloadError(f"codec {codec.config.name} expects {codec.knob_nbytes} knob bytes, "
                               f"got {len(self.header.knobs)}")
        if self.header.body_offset != len(self.raw) - _CRC.size:
            raise PayloadError("a session header carries no sections")
        if codec.read_config is not None:
            codec.read_config(self.header)  # the knobs' range checks, once
        self.codec, self.form = codec, FORMS[self.header.codec_id]
        (self.crc,) = _CRC.unpack_from(self.raw, len(self.raw) - _CRC.size)
        self.v1_prefix = bytearray(self.raw[: self.header.body_offset])
        self.v1_prefix[4] = FORMAT_VERSION

    def check(self, frame_crc_at: int, frame: memoryview, seq: int) -> None:
        expected = zlib.crc32(frame[:frame_crc_at], zlib.crc32(_SEQ.pack(seq), self.crc))
        (found,) = _CRC.unpack_from(frame, frame_crc_at)
        if found != expected:
            raise PayloadError(f"frame {seq}: CRC mismatch (corrupt, or not a frame of this session header)")

    def seal(self, tag_and_body: bytes, seq: int) -> bytes:
        return tag_and_body + _CRC.pack(zlib.crc32(tag_and_body, zlib.crc32(_SEQ.pack(seq), self.crc)))


class StreamEncoder:
    """Frames of one sequence: ``header`` to send first, then :meth:`frame` per token.

    ``encoder(x, cfg) -> payload`` makes the version-1 payload a frame is cut from
    (default: the numpy reference with float16 ranges, so its tables go narrow; a coder
    whose ranges are not float16 values still streams, its tables wide).
    """

    def __init__(self, cfg: CodecConfig, shape: tuple[int, ...], dtype=np.float32, encoder=None):
        self.cfg, self.shape, self.dtype = cfg, tuple(int(d) for d in shape), np.dtype(dtype)
        if self.dtype not in DTYPE_CODES:
            raise ConfigError(f"a stream carries float32 or float16 tensors, not {self.dtype}")
        self.header = session_header(cfg, self.shape, self.dtype)
        self._session = _Session(self.header, DecodeLimits(max_elements=max(1, math.prod(self.shape))))
        self._encode = encoder or (lambda x, c: encode(x, c, float16_ranges=True))
        self.seq = 0

    def frame(self, x: np.ndarray) -> bytes:
        """The next frame: ``x`` (of the session's shape and dtype) through the codec."""
        if tuple(x.shape) != self.shape or x.dtype != self.dtype:
            raise ConfigError(f"this stream carries {self.dtype} tensors of shape {self.shape}, "
                              f"got {x.dtype} {tuple(x.shape)}")
        return self.frame_of(self._encode(x, self.cfg))

    def frame_of(self, payload: bytes) -> bytes:
        """The next frame, cut from a version-1 payload of this session's tensor."""
        header = read_header(payload)
        session = self._session.header
        if (header.codec_id, header.dtype, header.shape, header.knobs) != (
                session.codec_id, session.dtype, session.shape, session.knobs):
            raise ConfigError("the payload is not of this stream's codec, knobs, dtype and shape")
        reader = PayloadReader(payload, header)
        sections = [reader.section(name) for name in self._session.codec.section_names]
        reader.finish()
        narrow = can_narrow(self._session.form, sections)
        body = self._session.form.compact(sections, header, narrow)
        tag = (self.seq & _SEQ_MASK) | (_NARROW if narrow else 0)
        frame = self._session.seal(bytes([tag]) + body, self.seq)
        self.seq += 1
        return frame


class StreamDecoder:
    """Decodes one sequence's frames against its session header, in order.

    ``limits`` bound the header (a server passes the size of the tensor it expects);
    every frame is then held to the header's own shape.
    """

    def __init__(self, header: bytes | bytearray | memoryview, limits: DecodeLimits = DEFAULT_LIMITS):
        self._session = _Session(header, limits)
        self.header = self._session.header
        self._limits = DecodeLimits(max_elements=max(1, self.header.num_elements),
                                    max_payload_bytes=limits.max_payload_bytes)
        self.seq = 0

    def payload(self, frame: bytes | bytearray | memoryview, seq: int | None = None) -> bytes:
        """The version-1 payload a frame stands for (checked, not decoded)."""
        seq = self.seq if seq is None else seq
        if not isinstance(frame, (bytes, bytearray, memoryview)):
            raise PayloadError(f"a frame must be bytes, got {type(frame).__name__}")
        view = memoryview(frame).cast("B")
        if len(view) < FRAME_OVERHEAD_NBYTES:
            raise PayloadError(f"frame of {len(view)} bytes is shorter than any frame")
        if len(view) > self._limits.max_payload_bytes:
            raise PayloadError(f"frame of {len(view)} bytes exceeds the limit of {self._limits.max_payload_bytes}")
        tag = view[0]
        if tag & _SEQ_MASK != seq & _SEQ_MASK:
            raise PayloadError(f"frame numbered {tag & _SEQ_MASK} (mod 128) where frame {seq} was expected: "
                               "reordered, replayed or one lost")
        crc_at = len(view) - _CRC.size
        self._session.check(crc_at, view, seq)
        narrow = bool(tag & _NARROW)
        if narrow and self._session.form.tables is None:
            raise PayloadError(f"frame {seq} claims narrow tables; codec {self._session.codec.config.name} has none")
        sections = self._session.form.expand(FrameReader(view[1:crc_at]), self.header, narrow)
        parts = [self._session.v1_prefix]
        for section in sections:
            parts += [_LENGTH.pack(len(section)), section]
        body = b"".join(parts)
        return body + _CRC.pack(zlib.crc32(body))

    def decode(self, frame: bytes | bytearray | memoryview) -> np.ndarray:
        """The next token's tensor. A bad frame raises :class:`PayloadError` and the
        decoder still expects the same frame number."""
        x = decode(self.payload(frame), self._limits)
        self.seq += 1
        return x

    def decode_all(self, frames) -> list[np.ndarray]:
        """Several frames in order, all or none: one bad frame leaves the decoder where
        it was before the first."""
        out = [decode(self.payload(f, self.seq + i), self._limits) for i, f in enumerate(frames)]
        self.seq += len(out)
        return out
