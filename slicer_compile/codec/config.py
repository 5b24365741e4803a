"""Codec configurations: the knobs of each codec, validated on construction.

Knobs travel in the payload header as float32 / uint8, so the float knobs are
rounded to float32 here, once: what the config holds is exactly what the
decoder (and the CUDA encoder) will see, and :func:`kept_count` gives every
implementation the same kept count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from slicer_compile.errors import ConfigError

#: Largest value-code width; codes are packed into at most 16 bits.
MAX_Q_BITS = 16
#: Largest block count per sign (labels are coded in a base up to this).
MAX_BLOCKS = 64


def kept_count(sparsity: float, num_elements: int) -> int:
    """``k = floor((1 - s)·T)`` as a person counts it for a decimal sparsity.

    ``s`` travels as float32 (0.99 is 0.99000001, which alone would keep 2 of 300
    where a person keeps 3). A float32 lies within 2^-25 of the decimal it was
    rounded from, so that share of ``T`` is added back before the floor. The same
    double-precision expression, in the same order, runs in every C++/CUDA encoder,
    decoder and predictor (``cuda/src/codec_math.h`` ``keptCount``).
    """
    t = float(num_elements)
    k = math.floor((1.0 - float(np.float32(sparsity))) * t + t * 2.0**-25)
    return num_elements if k >= t else int(k)


def _as_float32(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return float(np.float32(v))


def _as_int(name: str, value: int, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if not lo <= int(value) <= hi:
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {value}")
    return int(value)


#: The one order of the SLICER knobs: the wire header's, the C ABI's ``slicer_knobs``, the
#: ``SlicerEncode`` node's knobs input and the TensorRT plugin's.
SLICER_KNOB_ORDER = ("sparsity", "lam", "delta", "blocks_pos", "blocks_neg", "q_bits", "q_min")


@dataclass(frozen=True)
class SlicerConfig:
    """Knobs of the SLICER codec (ATKF + MS + ABQ), DESIGN.md "The SLICER codec".

    Args:
        sparsity: fraction ``s`` of elements dropped; ``k = floor((1-s)·T)`` are kept.
        lam: asymmetry ``λ`` in (-1, 1); positive values favour negative activations.
        blocks: ``(M+, M-)`` equal-cardinality magnitude blocks per sign.
        q_bits: reference bit-width of the per-block quantiser.
        q_min: lowest bit-width ABQ may choose.
        delta: ABQ distortion budget ``δ`` on the DS integer-mismatch metric.
    """

    sparsity: float = 0.9
    lam: float = 0.0
    blocks: tuple[int, int] = (3, 3)
    q_bits: int = 8
    q_min: int = 2
    delta: float = 0.01

    codec_id = 1
    name = "slicer"

    def __post_init__(self) -> None:
        s = _as_float32("sparsity", self.sparsity)
        if not 0.0 <= s < 1.0:
            raise ConfigError(f"sparsity must be in [0, 1), got {self.sparsity}")
        lam = _as_float32("lam", self.lam)
        if not -1.0 < lam < 1.0:
            raise ConfigError(f"lam must be in (-1, 1), got {self.lam}")
        try:
            m_pos, m_neg = self.blocks
        except (TypeError, ValueError):
            raise ConfigError(f"blocks must be a pair (M+, M-), got {self.blocks!r}") from None
        blocks = (_as_int("blocks[0]", m_pos, 1, MAX_BLOCKS), _as_int("blocks[1]", m_neg, 1, MAX_BLOCKS))
        q_bits = _as_int("q_bits", self.q_bits, 1, MAX_Q_BITS)
        q_min = _as_int("q_min", self.q_min, 1, q_bits)
        delta = _as_float32("delta", self.delta)
        if delta < 0:
            raise ConfigError(f"delta must be >= 0, got {self.delta}")
        for name, value in (("sparsity", s), ("lam", lam), ("blocks", blocks),
                            ("q_bits", q_bits), ("q_min", q_min), ("delta", delta)):
            object.__setattr__(self, name, value)

    def kept_count(self, num_elements: int) -> int:
        """``k = floor((1 - s)·T)``: the most values ATKF keeps (see :func:`kept_count`)."""
        return kept_count(self.sparsity, num_elements)

    def knob_values(self) -> tuple:
        """The knobs in :data:`SLICER_KNOB_ORDER`."""
        return (self.sparsity, self.lam, self.delta, self.blocks[0], self.blocks[1], self.q_bits, self.q_min)

    @staticmethod
    def from_knob_values(values) -> "SlicerConfig":
        """Inverse of :meth:`knob_values`, validated like any construction (ConfigError).
        Integer knobs must be whole numbers (a float tensor carries them)."""
        if len(values) != len(SLICER_KNOB_ORDER):
            raise ConfigError(f"SLICER takes {len(SLICER_KNOB_ORDER)} knobs {SLICER_KNOB_ORDER}, got {len(values)}")
        s, lam, delta, *whole = values
        ints = []
        for name, value in zip(SLICER_KNOB_ORDER[3:], whole):
            if not float(value).is_integer():
                raise ConfigError(f"{name} must be a whole number, got {value}")
            ints.append(int(value))
        m_pos, m_neg, q_bits, q_min = ints
        return SlicerConfig(sparsity=s, lam=lam, blocks=(m_pos, m_neg), q_bits=q_bits, q_min=q_min, delta=delta)

    def as_dict(self) -> dict:
        """The knobs as JSON (manifests, selector answers)."""
        return {"sparsity": self.sparsity, "lam": self.lam, "blocks": list(self.blocks), "q_bits": self.q_bits,
                "q_min": self.q_min, "delta": self.delta}

    @staticmethod
    def from_dict(data: dict) -> "SlicerConfig":
        """Inverse of :meth:`as_dict` (validated like any construction)."""
        return SlicerConfig(**{k: tuple(v) if k == "blocks" else v for k, v in data.items()})


@dataclass(frozen=True)
class TabqConfig:
    """Knobs of the TS + TAB-Q codec of Sung et al. (their Algorithm 1).

    Args:
        tau: threshold; elements with ``|x| >= tau`` travel exactly.
        q_max: bit budget ``Q̄`` per quantised element, sign bit included.
        delta: distortion tolerance ``Δ`` on the DS metric, per token.
        q_min: fewest magnitude bits a token may be lowered to.
    """

    tau: float = 5.0
    q_max: int = 4
    delta: float = 0.2
    q_min: int = 1

    codec_id = 2
    name = "tabq"

    def __post_init__(self) -> None:
        tau = _as_float32("tau", self.tau)
        if tau <= 0:
            raise ConfigError(f"tau must be > 0, got {self.tau}")
        q_max = _as_int("q_max", self.q_max, 2, MAX_Q_BITS + 1)
        q_min = _as_int("q_min", self.q_min, 1, q_max - 1)
        delta = _as_float32("delta", self.delta)
        if delta < 0:
            raise ConfigError(f"delta must be >= 0, got {self.delta}")
        for name, value in (("tau", tau), ("q_max", q_max), ("q_min", q_min), ("delta", delta)):
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class Float16Config:
    """Baseline: cast to float16 (values beyond ±65504 saturate)."""

    codec_id = 3
    name = "float16"


@dataclass(frozen=True)
class Int8Config:
    """Baseline: symmetric per-tensor uniform int8, scale = max|x| / 127."""

    codec_id = 4
    name = "int8"


@dataclass(frozen=True)
class ZstdConfig:
    """Baseline: float16 cast, then lossless zstd."""

    level: int = 3
    codec_id = 5
    name = "zstd"

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", _as_int("level", self.level, 1, 19))


@dataclass(frozen=True)
class DenseConfig:
    """The dense codec (codec.dense): every element kept, quantised at ``bits`` per
    element in groups along the last axis with an error-minimising range, the codes
    entropy-coded (``entropy``: constriction's ANS under the tensor's code frequencies)
    where that is smaller than packing them."""

    bits: int = 4
    entropy: bool = True
    codec_id = 6
    name = "dense"

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", _as_int("bits", self.bits, 1, 8))
        if not isinstance(self.entropy, bool):
            raise ConfigError(f"entropy must be true or false, got {self.entropy!r}")


CodecConfig = SlicerConfig | TabqConfig | Float16Config | Int8Config | ZstdConfig | DenseConfig

#: Codec names as the CLI and manifests spell them.
CONFIG_BY_NAME: dict[str, type] = {
    cls.name: cls for cls in (SlicerConfig, TabqConfig, Float16Config, Int8Config, ZstdConfig, DenseConfig)
}


def config_from_name(name: str, **knobs) -> CodecConfig:
    """Build a codec config from its name and knobs (the CLI's spelling)."""
    try:
        cls = CONFIG_BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted(CONFIG_BY_NAME))
        raise ConfigError(f"unknown codec {name!r} (known: {known})") from None
    fields = getattr(cls, "__dataclass_fields__", {})
    unknown = sorted(set(knobs) - set(fields))
    if unknown:
        raise ConfigError(f"codec {name!r} has no knob(s) {', '.join(unknown)}")
    return cls(**knobs)

