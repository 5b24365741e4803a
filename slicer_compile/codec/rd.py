"""Rate–distortion of the codec menu against the baselines a user could write in five
lines, on the same tensors: for each budget of bits per element, each family's best
setting within it (the lowest relative squared error), and which family wins.

Menu: SLICER (sparsity × q_bits), TS+TAB-Q (τ × Q̄), the dense codec (bits). Baselines:
float16; per-tensor int8; uniform b-bit quantisation over min..max, or clipped at the
0.1 / 99.9th percentiles, packed; the same clipped codes compressed with zstd. Each
sample is coded alone (what a split sends); bits are the whole payload, header
included, for the menu, and codes plus an 8-byte range for the baselines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from slicer_compile.codec import DenseConfig, Float16Config, Int8Config, SlicerConfig, TabqConfig, decode, encode
from slicer_compile.codec.bits import pack_uint

BUDGETS = (0.5, 1.0, 2.0, 4.0, 8.0)
MENU = ("slicer", "tabq", "dense")


@dataclass(frozen=True)
class RdPoint:
    tensor: str
    family: str
    setting: str
    bits_per_element: float
    relative_mse: float
    cosine: float


def _uniform(x: np.ndarray, bits: int, clip: bool, zstd: bool) -> tuple[np.ndarray, int]:
    """A baseline: b-bit uniform codes over the range (clipped or not); (decoded, bytes)."""
    lo, hi = (np.percentile(x, [0.1, 99.9]) if clip else (x.min(), x.max()))
    levels = (1 << bits) - 1
    step = (hi - lo) / levels if hi > lo else 1.0
    codes = np.clip(np.rint((x - lo) / step), 0, levels).astype(np.uint64)
    packed = pack_uint(codes.ravel(), bits)
    if zstd:
        import zstandard

        packed = zstandard.ZstdCompressor(level=3).compress(packed)
    return (codes.astype(np.float64) * step + lo).astype(np.float32).reshape(x.shape), len(packed) + 8


def settings() -> list[tuple[str, str, Callable[[np.ndarray], tuple[np.ndarray, int]]]]:
    """(family, setting, x -> (decoded, bytes)) for every point of the comparison."""
    def codec(cfg):
        def run(x):
            payload = encode(x, cfg)
            return decode(payload), len(payload)
        return run

    out = []
    for s in (0.5, 0.75, 0.9, 0.95, 0.98):
        for q in (4, 8):
            out.append(("slicer", f"s={s:g} q={q}", codec(SlicerConfig(sparsity=s, q_bits=q, q_min=2))))
    for tau in (1.0, 2.0, 3.0):
        for q_max in (2, 3, 4, 6):
            out.append(("tabq", f"tau={tau:g} Q={q_max}", codec(TabqConfig(tau=tau, q_max=q_max))))
    for bits in range(1, 9):
        out.append(("dense", f"{bits} bits", codec(DenseConfig(bits=bits))))
    out.append(("float16", "", codec(Float16Config())))
    out.append(("int8", "", codec(Int8Config())))
    for bits in range(1, 9):
        out.append(("uniform min-max", f"{bits} bits", lambda x, b=bits: _uniform(x, b, False, False)))
        out.append(("uniform clipped", f"{bits} bits", lambda x, b=bits: _uniform(x, b, True, False)))
        out.append(("uniform + zstd", f"{bits} bits", lambda x, b=bits: _uniform(x, b, True, True)))
    return out


def measure(tensors: dict[str, list[np.ndarray]], progress: Callable[[str], None] = lambda s: None
            ) -> list[RdPoint]:
    """Every setting on every tensor (its samples coded one by one, errors summed)."""
    points = []
    for name, samples in tensors.items():
        progress(name)
        energy = sum(float((s.astype(np.float64) ** 2).sum()) for s in samples)
        elements = sum(s.size for s in samples)
        for family, setting, run in settings():
            err = nbytes = 0.0
            cosines = []
            for sample in samples:
                decoded, size = run(sample)
                diff = decoded.astype(np.float64) - sample
                err += float((diff ** 2).sum())
                nbytes += size
                a, b = sample.ravel().astype(np.float64), decoded.ravel().astype(np.float64)
                norms = np.linalg.norm(a) * np.linalg.norm(b)
                cosines.append(float(a @ b / norms) if norms else 1.0)
            points.append(RdPoint(name, family, setting, 8 * nbytes / elements, err / max(energy, 1e-30),
                                  float(np.mean(cosines))))
    return points


def best_within(points: list[RdPoint], tensor: str, families, budget: float) -> RdPoint | None:
    """The point of ``families`` on ``tensor`` with the least error within ``budget`` bits."""
    within = [p for p in points if p.tensor == tensor and p.family in families and p.bits_per_element <= budget]
    return min(within, key=lambda p: p.relative_mse, default=None)


def summary(points: list[RdPoint], budgets=BUDGETS) -> list[dict]:
    """Per tensor and budget: the menu's best, the baselines' best, and their ratio."""
    baselines = {p.family for p in points} - set(MENU)
    rows = []
    for tensor in dict.fromkeys(p.tensor for p in points):
        for budget in budgets:
            menu, base = best_within(points, tensor, MENU, budget), best_within(points, tensor, baselines, budget)
            ratio = (menu.relative_mse / base.relative_mse if menu and base and base.relative_mse > 0
                     else (0.0 if menu and base else math.nan))
            rows.append({"tensor": tensor, "budget": budget,
                         "menu": f"{menu.family} {menu.setting}".strip() if menu else None,
                         "menu_relative_mse": menu.relative_mse if menu else None,
                         "baseline": f"{base.family} {base.setting}".strip() if base else None,
                         "baseline_relative_mse": base.relative_mse if base else None,
                         "menu_over_baseline": ratio})
    return rows
