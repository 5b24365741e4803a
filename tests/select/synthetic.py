"""A synthetic split table: 50 splits of a CNN-like model (shallow splits with big
features, deep splits with small ones and more edge work), with a calibration grid."""

from __future__ import annotations

import numpy as np

from slicer_compile.artifact import CrossingTensor, SplitInfo, sparsity_key
from slicer_compile.select import Selector

GRID = [0.5, 0.75, 0.9, 0.95, 0.99]
DEFAULTS = {"sparsity": 0.9, "lam": 0.0, "blocks": [3, 3], "q_bits": 8, "q_min": 2, "delta": 0.01}


def synthetic_splits(n: int = 50, seed: int = 0, calibrated: bool = True) -> list[SplitInfo]:
    rng = np.random.default_rng(seed)
    splits = []
    for i in range(n):
        channels = 16 * 2 ** (i * 5 // n)
        side = max(4, 112 >> (i * 5 // n))
        shape = (1, channels, side, side)
        elements = int(np.prod(shape))
        # fidelity falls with sparsity; deeper features tolerate more
        fidelity = {sparsity_key(s): float(min(1.0, 1.0 - (s ** 8) * (0.1 - 0.09 * i / n) + rng.normal(0, 0.001)))
                    for s in GRID} if calibrated else None
        splits.append(SplitInfo(
            id=f"s{i:04d}", position=i, crossing=(CrossingTensor(f"t{i}", shape, "float32", "activation"),),
            edge_latency_s=1.5e-3 * i, server_latency_s=0.4e-3 * (n - i), edge_memory_bytes=int(2e6 + 3e5 * i),
            edge_flops=1e8 * i, server_flops=1e8 * (n - i), if_shape=shape, if_bytes=4 * elements,
            payload_bound_bytes={}, payload_bytes_limit=0, fidelity=fidelity, files=None))
    return splits


def synthetic_selector(n: int = 50, calibrated: bool = True) -> Selector:
    return Selector(synthetic_splits(n, calibrated=calibrated), DEFAULTS, GRID, min_sparsity=0.5, max_blocks=8,
                    calibrated=calibrated)
