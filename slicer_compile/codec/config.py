"""Codec configurations: the knobs of each codec, validated on construction.

Knobs travel in the payload header as float32 / uint8, so the float knobs are
rounded to float32 here, once: what the config holds is exactly what the
decoder (and the CUDA encoder) will see, and ``floor((1 - cfg.sparsity) * T)``
computed by a caller gives the same kept count as the encoder.
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
        """``k = floor((1 - s)·T)``: the most values ATKF keeps."""
        return int(math.floor((1.0 - self.sparsity) * num_elements))

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


CodecConfig = SlicerConfig | TabqConfig | Float16Config | Int8Config | ZstdConfig

#: Codec names as the CLI and manifests spell them.
CONFIG_BY_NAME: dict[str, type] = {
    cls.name: cls for cls in (SlicerConfig, TabqConfig, Float16Config, Int8Config, ZstdConfig)
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

