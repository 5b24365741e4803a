"""Device profiles and the roofline cost model.

A node on a device takes ``max(flops / (peak·e_c), bytes / (bw·e_m)) + overhead``.
Peaks come from datasheets (``devices.json``) or, for the local CPU, from a
quick measurement; the efficiencies ``e_c, e_m`` and the overhead are priors
until fitted to a measured profile (:func:`fit_device`).
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from importlib import resources
from typing import Sequence

import numpy as np

from slicer_compile.errors import DeviceError
from slicer_compile.profile.costs import NodeCost

LOCAL_CPU = "cpu"


@dataclass(frozen=True)
class DeviceSpec:
    """One device's throughput model."""

    name: str
    description: str
    kind: str  # "edge", "server" or "cpu"
    precision: str
    peak_flops: float  # FLOP/s at ``precision``
    memory_bandwidth: float  # bytes/s
    memory_bytes: int
    compute_efficiency: float
    memory_efficiency: float
    node_overhead_s: float
    source: str

    def node_latency_s(self, flops: np.ndarray | float, bytes_moved: np.ndarray | float) -> np.ndarray:
        """Roofline latency of nodes with these FLOPs and bytes."""
        compute = np.asarray(flops, dtype=np.float64) / (self.peak_flops * self.compute_efficiency)
        memory = np.asarray(bytes_moved, dtype=np.float64) / (self.memory_bandwidth * self.memory_efficiency)
        return np.maximum(compute, memory) + self.node_overhead_s

    def predict(self, costs: Sequence[NodeCost]) -> np.ndarray:
        return self.node_latency_s([c.flops for c in costs], [c.bytes_moved for c in costs])

    def as_dict(self) -> dict:
        return asdict(self)


@functools.cache
def _catalogue() -> dict:
    text = resources.files("slicer_compile.profile").joinpath("devices.json").read_text()
    return json.loads(text)


def device_aliases() -> dict[str, str]:
    """Alias -> device name (``jetson`` -> ``orin-nano``)."""
    return dict(_catalogue()["aliases"])


def known_devices() -> list[str]:
    """Names ``--device`` accepts (aliases included)."""
    data = _catalogue()
    return [LOCAL_CPU] + sorted(data["devices"]) + sorted(data["aliases"])


def get_device(name: str) -> DeviceSpec:
    """The spec of a named device; ``cpu`` is this machine, measured now.

    Raises:
        DeviceError: the name is not known.
    """
    if name == LOCAL_CPU:
        return local_cpu()
    data = _catalogue()
    canonical = data["aliases"].get(name, name)
    if canonical not in data["devices"]:
        raise DeviceError(f"unknown device {name!r} (known: {', '.join(known_devices())})")
    return DeviceSpec(name=canonical, **data["devices"][canonical])


@functools.cache
def local_cpu() -> DeviceSpec:
    """This machine's CPU: peak FP32 rate from a matmul, bandwidth from a copy."""
    peak = _measure_matmul_flops()
    bandwidth = _measure_copy_bandwidth()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    return DeviceSpec(
        name=LOCAL_CPU, description=f"this machine's CPU ({os.cpu_count()} logical cores)", kind="cpu",
        precision="fp32", peak_flops=peak, memory_bandwidth=bandwidth, memory_bytes=int(memory),
        compute_efficiency=0.5, memory_efficiency=0.5, node_overhead_s=5e-6,
        source="measured: numpy float32 matmul (peak) and array copy (bandwidth)",
    )


def _best_time(fn, repeat: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _measure_matmul_flops(n: int = 768) -> float:
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    return 2.0 * n ** 3 / _best_time(lambda: a @ a)


def _measure_copy_bandwidth(nbytes: int = 64 << 20) -> float:
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    return 2.0 * nbytes / _best_time(lambda: np.copyto(dst, src))  # read + write


def fit_device(spec: DeviceSpec, costs: Sequence[NodeCost], measured_s: Sequence[float]) -> DeviceSpec:
    """Fit ``e_c``, ``e_m`` and the per-node overhead to measured node latencies.

    Minimises the summed absolute error, which is what matters for per-split
    sums, by a coarse-to-fine grid search (three parameters, a few thousand
    nodes at most: exhaustive is cheap and has no local minima to fall into).
    """
    flops = np.array([c.flops for c in costs], dtype=np.float64)
    moved = np.array([c.bytes_moved for c in costs], dtype=np.float64)
    t = np.asarray(measured_s, dtype=np.float64)
    if t.size == 0:
        return spec
    compute_s = flops / spec.peak_flops  # at efficiency 1
    memory_s = moved / spec.memory_bandwidth
    overheads = np.concatenate([[0.0], np.geomspace(1e-7, max(1e-6, float(np.median(t))), 24)])

    def search(ec_grid, em_grid):
        best = (np.inf, None)
        for ec in ec_grid:
            base_c = compute_s / ec
            for em in em_grid:
                roof = np.maximum(base_c, memory_s / em)
                errors = np.abs(roof[None, :] + overheads[:, None] - t[None, :]).sum(axis=1)
                i = int(np.argmin(errors))
                if errors[i] < best[0]:
                    best = (errors[i], (ec, em, overheads[i]))
        return best[1]

    # Memory "efficiency" may exceed 1: tensors that stay in cache move faster than
    # the DRAM bandwidth the peak was measured (or published) for.
    ec, em, overhead = search(np.geomspace(1e-3, 1.0, 31), np.geomspace(1e-3, 16.0, 43))
    ec, em, overhead = search(np.clip(ec * np.geomspace(0.7, 1.4, 11), 1e-4, 1.0),
                              np.clip(em * np.geomspace(0.7, 1.4, 11), 1e-4, 16.0))
    return replace(spec, compute_efficiency=float(ec), memory_efficiency=float(em),
                   node_overhead_s=float(overhead), source=spec.source + "; efficiencies fitted to a measured profile")
