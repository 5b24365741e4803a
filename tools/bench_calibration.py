#!/usr/bin/env python3
"""Calibration time against split count, this build against the previous algorithm,
measured in one run.

    python tools/bench_calibration.py [--splits 50,100,200] [--samples 8]

The model is a chain of Conv 3x3 + Relu layers on 8x16x16 features (two cuts per
layer). "per sparsity" is the previous algorithm: for every split and sparsity, a
fresh ONNX Runtime session of the server part, run on the samples of that sparsity.
"batched" is calibrate() as the compiler calls it: one session per split, every
sparsity's samples in one run, the full grid for the Pareto splits (here 8, spread over
depth as the compiler picks them) and the default sparsity for the rest; it is
measured without centring (the fidelity columns must agree) and with it (the
compiler's default, codec.centring: its decision's cost, and the tensors centred).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slicer_compile import calibrate as cal  # noqa: E402
from slicer_compile.artifact import sparsity_key  # noqa: E402
from slicer_compile.codec import SlicerConfig  # noqa: E402
from slicer_compile.frontend import concretize, normalise  # noqa: E402
from slicer_compile.graph.cuts import find_cuts  # noqa: E402
from slicer_compile.graph.partition import Partitioner  # noqa: E402


def chain(layers: int, channels: int = 8, size: int = 16):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((channels, channels, 3, 3)) * 0.2).astype(np.float32),
                                             f"w{i}"))
        nodes += [helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev = f"r{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                             ["B", channels, size, size])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["B", channels, size, size])],
                              inits)
    return normalise(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10))


def run_all(model, feeds: dict[str, np.ndarray], outputs: Sequence[str], batch: int) -> list[np.ndarray]:
    """Run a model on all samples, ``batch`` at a time (the last batch padded with
    copies of its last sample, whose outputs are dropped)."""
    from slicer_compile.backends.onnxrt import OnnxrtRunner

    n = len(next(iter(feeds.values())))
    results = []
    with OnnxrtRunner(model) as runner:
        for start in range(0, n, batch):
            chunk = {k: cal._padded(v[start: start + batch], batch) for k, v in feeds.items()}
            got = runner.infer(chunk)
            results.append({name: got[name][: min(batch, n - start)] for name in outputs})
    return [np.concatenate([r[name] for r in results]) for name in outputs]


def per_sparsity(model, cuts, feeds, sparsities):
    """The previous algorithm, kept here as the baseline."""
    n = len(feeds["x"])
    output = model.graph.output[0].name
    crossing = [c for c in dict.fromkeys(name for cut in cuts for name in cut.crossing_names) if c not in feeds]
    values = run_all(cal._with_outputs(model, [output] + crossing), feeds, [output] + crossing, n)
    reference, tensors = values[0], {**feeds, **dict(zip(crossing, values[1:]))}
    partitioner = Partitioner(model)
    fidelity = {}
    for cut in cuts:
        server = partitioner.server_part(cut)
        fidelity[cut.id] = {}
        for s in sparsities:
            cfg = dataclasses.replace(SlicerConfig(), sparsity=s)
            server_feeds = {t.name: cal.round_trip(tensors[t.name], cfg) if t.kind == "activation" else tensors[t.name]
                            for t in cut.crossing}
            (out,) = run_all(server, server_feeds, [output], n)
            fidelity[cut.id][sparsity_key(s)] = cal.score(cal.COSINE, reference, out)
    return fidelity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", default="50,100,200")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    print("| splits | samples | per sparsity s | batched s | speed-up | max fidelity difference "
          "| with centring s | tensors centred |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for target in (int(v) for v in args.splits.split(",")):
        model = chain(target // 2)  # calibration runs the model with its free batch axis
        cuts = find_cuts(concretize(model))
        feeds = {"x": np.random.default_rng(1).standard_normal((args.samples, 8, 16, 16)).astype(np.float32)}
        sparsities = cal.DEFAULT_SPARSITY_GRID
        start = time.perf_counter()
        before = per_sparsity(model, cuts, feeds, sparsities)
        t_before = time.perf_counter() - start
        start = time.perf_counter()
        picks = np.unique(np.round(np.linspace(0, len(cuts) - 1, 8)).astype(int))
        pareto = {cuts[i].id for i in picks}
        after = cal.calibrate(model, cuts, feeds, sparsities=sparsities, metric=cal.COSINE, refine=pareto,
                              centring=False).fidelity
        t_after = time.perf_counter() - start
        start = time.perf_counter()
        centred = cal.calibrate(model, cuts, feeds, sparsities=sparsities, metric=cal.COSINE, refine=pareto).centres
        t_centring = time.perf_counter() - start
        # The same numbers wherever both measured.
        diff = max(abs(before[c][k] - after[c][k]) for c in after for k in after[c])
        rows.append({"splits": len(cuts), "samples": args.samples, "per_sparsity_s": t_before, "batched_s": t_after,
                     "max_difference": diff, "with_centring_s": t_centring, "centred": len(centred)})
        print(f"| {len(cuts)} | {args.samples} | {t_before:.1f} | {t_after:.1f} | {t_before / t_after:.2f}x | "
              f"{diff:.2e} | {t_centring:.1f} | {len(centred)} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
