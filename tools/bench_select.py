#!/usr/bin/env python3
"""Selector query speed: 10 000 queries on a 50-split table, conditions drawn at random.

    python tools/bench_select.py [--queries 10000] [--splits 50]

The split table is compiled from a generated 50-cut chain model (Conv/ReLU pairs,
shrinking feature maps) so the selector is built from a real artifact; each
query draws a new SNR (continuous, so the best-rate search runs every time), a
deadline and a memory budget. Reports the median and p99 per query, and the
cost of a rate search alone (the baseline measured in the same run).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slicer_compile.compiler import compile_model  # noqa: E402
from slicer_compile.select import Conditions, Selector  # noqa: E402
from slicer_compile.select.channel import best_rate, snr_from_db  # noqa: E402


def chain_model(cuts: int):
    """A Conv/ReLU chain with exactly ``cuts`` valid cuts (input + one per node but the last)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, name, channels, side = [], [], "x", 3, 64
    for i in range(cuts - 1):
        out_channels = min(64, 8 * (1 + i // 8))
        stride = 2 if i in (12, 24, 36) else 1
        w = numpy_helper.from_array((rng.standard_normal((out_channels, channels, 3, 3)) * 0.1).astype(np.float32), f"w{i}")
        inits.append(w)
        op_out = f"c{i}" if i % 2 == 0 else f"r{i}"
        if i % 2 == 0:
            nodes.append(helper.make_node("Conv", [name, f"w{i}"], [op_out], pads=[1, 1, 1, 1], strides=[stride] * 2,
                                          name=f"conv{i}"))
            channels = out_channels
            side = (side + stride - 1) // stride
        else:
            inits.pop()
            nodes.append(helper.make_node("Relu", [name], [op_out], name=f"relu{i}"))
        name = op_out
    nodes.append(helper.make_node("GlobalAveragePool", [name], ["y"], name="gap"))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 1, 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--splits", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        artifact = compile_model(chain_model(args.splits), device="jetson", out_dir=Path(tmp) / "out", max_pairs=2)
        selector = Selector.from_artifact(artifact)
    rng = np.random.default_rng(0)
    snrs = rng.uniform(-5, 30, args.queries)
    deadlines = rng.uniform(1e-3, 100e-3, args.queries)
    memories = rng.uniform(1e6, 8e9, args.queries)
    times, feasible = [], 0
    for snr, deadline, memory in zip(snrs, deadlines, memories):
        c = Conditions(bandwidth_hz=10e6, snr_db=float(snr), epsilon=1e-3, deadline_s=float(deadline),
                       memory_bytes=float(memory))
        start = time.perf_counter()
        decision = selector.select(c)
        times.append(time.perf_counter() - start)
        feasible += decision.feasible
    rate_times = []
    for snr in snrs[:2000]:
        g = snr_from_db(float(snr))
        start = time.perf_counter()
        best_rate(1.0, 10e6, g, 1e-3, 1e3, 10e6 * math.log2(1 + 1000 * g))
        rate_times.append(time.perf_counter() - start)
    t = np.array(times) * 1e6
    print(f"{len(selector.ids)} splits, {args.queries} queries ({feasible} feasible): "
          f"median {np.median(t):.1f} us, p99 {np.percentile(t, 99):.1f} us, mean {t.mean():.1f} us; "
          f"rate search alone: median {np.median(rate_times) * 1e6:.1f} us")


if __name__ == "__main__":
    main()
