"""Intermediate-feature codecs: the numpy reference implementation and the spec.

    from slicer_compile.codec import SlicerConfig, encode, decode, predict_bits
    payload = encode(x, SlicerConfig(sparsity=0.9))
    x_hat = decode(payload)                      # codec read from the header
    assert 8 * len(payload) <= predict_bits(x.shape, cfg)

Codec ids: 1 SLICER, 2 TS + TAB-Q, 3 float16, 4 int8, 5 zstd-on-float16, 6 dense (quantised, ANS-coded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from slicer_compile.codec import baselines, dense, slicer, tabq
from slicer_compile.codec.config import (
    CONFIG_BY_NAME,
    CodecConfig,
    DenseConfig,
    Float16Config,
    Int8Config,
    SlicerConfig,
    TabqConfig,
    ZstdConfig,
    config_from_name,
)
from slicer_compile.codec.wire import (
    DEFAULT_LIMITS,
    DecodeLimits,
    PayloadReader,
    check_encodable,
    read_header,
)
from slicer_compile.errors import ConfigError, PayloadError, TensorError

__all__ = [
    "CODECS",
    "CONFIG_BY_NAME",
    "Codec",
    "CodecConfig",
    "DecodeLimits",
    "DenseConfig",
    "Float16Config",
    "Int8Config",
    "PayloadError",
    "PayloadInfo",
    "SlicerConfig",
    "TabqConfig",
    "ZstdConfig",
    "config_from_name",
    "decode",
    "encode",
    "inspect_payload",
    "predict_bits",
]


@dataclass(frozen=True)
class Codec:
    """A codec's whole declaration: one row of :data:`CODECS`.

    Args:
        config: its config class (``codec_id``, ``name``, the knobs as fields).
        knob_nbytes: bytes of knobs in the wire header.
        encode / decode: the numpy reference (the spec); ``encode(x, cfg, float16_ranges)``.
        predict_bits: ``(shape, cfg, dtype) -> bits``, an upper bound on every payload.
        read_config: the knobs back from a validated header (None: the codec has none to show).
        section_names: the wire sections, in order.
        position_sections / value_sections: which sections carry positions / values (bench accounting).
    """

    config: type
    knob_nbytes: int
    encode: Callable[[np.ndarray, CodecConfig, bool], bytes]
    decode: Callable[[bytes, object], np.ndarray]
    predict_bits: Callable[..., int]
    read_config: Callable | None
    section_names: tuple[str, ...]
    position_sections: tuple[str, ...]
    value_sections: tuple[str, ...]


def _no_ranges(encode):
    """An encoder with no quantiser ranges to widen, in the common signature."""
    return lambda x, cfg, float16_ranges=False: encode(x, cfg)


def _dtype_free(predict):
    """A bound that does not depend on the input dtype, in the common signature."""
    return lambda shape, cfg, dtype=np.float32: predict(shape, cfg)


#: Every codec, by the id its payloads carry. Adding a codec is adding a row.
CODECS: dict[int, Codec] = {row.config.codec_id: row for row in (
    Codec(SlicerConfig, slicer.KNOBS.size, slicer.encode, slicer.decode, _dtype_free(slicer.predict_bits),
          slicer.read_config, ("meta", "mask", "signs", "labels+", "labels-", "blocks", "values"),
          ("mask", "signs", "labels+", "labels-"), ("values",)),
    Codec(TabqConfig, tabq.KNOBS.size, tabq.encode, tabq.decode, tabq.predict_bits, tabq.read_config,
          ("meta", "mask", "above", "tokens", "signs", "values"), ("mask",), ("above", "signs", "values")),
    Codec(Float16Config, 0, _no_ranges(baselines.encode_float16), baselines.decode_float16,
          _dtype_free(baselines.predict_bits_float16), None, ("values",), (), ("values",)),
    Codec(Int8Config, 0, _no_ranges(baselines.encode_int8), baselines.decode_int8, _dtype_free(baselines.predict_bits_int8),
          None, ("scale", "values"), (), ("values",)),
    Codec(ZstdConfig, 1, _no_ranges(baselines.encode_zstd), baselines.decode_zstd, _dtype_free(baselines.predict_bits_zstd),
          None, ("values",), (), ("values",)),
    Codec(DenseConfig, dense.KNOBS.size, dense.encode, dense.decode, _dtype_free(dense.predict_bits),
          dense.read_config, ("meta", "ranges", "model", "values"), (), ("ranges", "model", "values")),
)}


def _codec_for(cfg: CodecConfig) -> Codec:
    codec = CODECS.get(getattr(cfg, "codec_id", None))
    if codec is None or not isinstance(cfg, codec.config):
        raise ConfigError(f"not a codec config: {cfg!r}")
    return codec


def _codec_of(header) -> Codec:
    codec = CODECS.get(header.codec_id)
    if codec is None:
        raise PayloadError(f"unknown codec id {header.codec_id}")
    return codec


def encode(x: np.ndarray, cfg: CodecConfig, float16_ranges: bool = False) -> bytes:
    """Encode a float32/float16 array of any shape into a self-describing payload.

    ``float16_ranges``: the quantiser ranges (SLICER blocks, TAB-Q tokens, dense groups)
    widened to float16 values, which the stream form of the wire (codec.stream) sends in
    half the bytes; the payload is an ordinary one either way.

    Raises:
        TensorError: x holds NaN or Inf, has another dtype, or is too large.
        ConfigError: cfg is not a codec config.
    """
    codec = _codec_for(cfg)
    try:
        check_encodable(x)
    except (TypeError, ValueError) as exc:
        raise TensorError(str(exc)) from None
    if not np.isfinite(x).all():
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise TensorError(f"tensor holds {bad} NaN/Inf value(s); codecs take finite values only")
    return codec.encode(x, cfg, float16_ranges)


def decode(payload: bytes | bytearray | memoryview, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode any payload; shape, dtype and codec come from its header.

    Raises:
        PayloadError: for any malformed, truncated, oversized or inconsistent
            payload, and never another exception.
    """
    header = read_header(payload, limits)
    codec = _codec_of(header)
    if len(header.knobs) != codec.knob_nbytes:
        raise PayloadError(f"codec {codec.config.name} expects {codec.knob_nbytes} knob bytes, got {len(header.knobs)}")
    try:
        return codec.decode(payload, header)
    except PayloadError:
        raise
    except (ValueError, IndexError, OverflowError, MemoryError) as exc:  # pragma: no cover - safety net
        # Every check above is explicit; this net keeps the one-exception
        # contract should a numpy corner case slip through.
        raise PayloadError(f"malformed {codec.config.name} payload: {exc}") from None


def predict_bits(shape: tuple[int, ...], cfg: CodecConfig, dtype=np.float32) -> int:
    """Upper bound on ``8·len(encode(x, cfg))`` for every x of ``shape`` (and dtype).

    The selector and the fixed output size of the encoder graph node rely on it.
    """
    return _codec_for(cfg).predict_bits(tuple(int(d) for d in shape), cfg, dtype)


@dataclass(frozen=True)
class PayloadInfo:
    """What a payload holds, for reports and benchmarks."""

    codec: str
    config: CodecConfig | None
    shape: tuple[int, ...]
    dtype: str
    total_bytes: int
    section_bytes: dict[str, int]

    @property
    def position_bits(self) -> int:
        return 8 * sum(self.section_bytes.get(n, 0) for n in CODECS[self._codec_id].position_sections)

    @property
    def value_bits(self) -> int:
        return 8 * sum(self.section_bytes.get(n, 0) for n in CODECS[self._codec_id].value_sections)

    @property
    def header_bits(self) -> int:
        return 8 * self.total_bytes - self.position_bits - self.value_bits

    @property
    def _codec_id(self) -> int:
        return CONFIG_BY_NAME[self.codec].codec_id


def inspect_payload(payload: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> PayloadInfo:
    """Read a payload's header and section sizes without decoding the tensor."""
    header = read_header(payload, limits)
    codec = _codec_of(header)
    config = codec.read_config(header) if codec.read_config else None
    reader = PayloadReader(payload, header)
    sections = {name: len(reader.section(name)) for name in codec.section_names}
    reader.finish()
    return PayloadInfo(codec.config.name, config, header.shape, str(header.dtype), len(payload), sections)
