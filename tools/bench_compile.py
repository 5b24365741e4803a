#!/usr/bin/env python3
"""Compile-time benchmark and the cost model's error on this machine.

    python tools/bench_compile.py [--json out.json] [--skip-resnet50]

1. Compile time (``compile_model``, device ``cpu``: includes ONNX Runtime
   profiling, 10 timed runs) of every example and of a ResNet-50-sized model
   (torch-defined, random weights, exported here; the export is not timed).
2. Cost model error: fit the local CPU's roofline efficiencies to the measured
   profile of one model, predict another model's per-split edge latency
   (cumulative over the cut's prefix), and compare with its measured profile.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slicer_compile.compiler import compile_model  # noqa: E402
from slicer_compile.frontend import concretize, load_onnx  # noqa: E402
from slicer_compile.graph.cuts import find_cuts, order_graph  # noqa: E402
from slicer_compile.profile.devices import fit_device, local_cpu  # noqa: E402
from slicer_compile.profile.measure import measure_profile, profile_costs  # noqa: E402

EXAMPLES = ROOT / "examples"


def resnet50_onnx(path: Path) -> Path:
    """ResNet-50 (bottlenecks 3-4-6-3, 25.6 M parameters) at 1x3x224x224, random weights."""
    import torch

    from slicer_compile.frontend import export_torch

    nn = torch.nn
    torch.manual_seed(0)

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            cout = width * 4
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                          if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            return torch.relu(self.body(x) + self.short(x))

    layers, cin = [], 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * 4
    model = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                          *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)).eval()
    import onnx

    onnx.save(export_torch(model, [torch.randn(1, 3, 224, 224)], ["image"], ["logits"]), str(path))
    return path


def time_compile(model_path: Path, calib: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        artifact = compile_model(model_path, device="cpu", out_dir=Path(tmp) / "out", calib=calib)
        seconds = time.perf_counter() - start
    return {"model": model_path.name, "calibrated": calib is not None, "seconds": round(seconds, 2),
            "splits": len(artifact.splits), "pairs": len(artifact.pareto),
            "nodes": len(order_graph(concretize(load_onnx(model_path))).nodes),
            "size_mib": round(model_path.stat().st_size / 2**20, 1)}


def split_latencies(model_path: Path, profile_runs: int = 10):
    model = concretize(load_onnx(model_path))
    cuts = find_cuts(model)
    prof = measure_profile(model, runs=profile_runs)
    order = order_graph(model)
    by_name = {n.name: n for n in prof.nodes}
    nodes = [by_name[n.name] for n in order.nodes]
    return cuts, prof, nodes


def cost_model_error(fit_on: Path, predict: Path) -> dict:
    _, fit_prof, _ = split_latencies(fit_on)
    spec = fit_device(local_cpu(), profile_costs(fit_prof), [n.latency_s for n in fit_prof.nodes])
    cuts, prof, nodes = split_latencies(predict)
    measured = np.concatenate([[0.0], np.cumsum([n.latency_s for n in nodes])])
    predicted_nodes = spec.node_latency_s([n.flops for n in nodes], [n.bytes_moved for n in nodes])
    predicted = np.concatenate([[0.0], np.cumsum(predicted_nodes)])
    rows = [(c.id, measured[c.position], predicted[c.position]) for c in cuts if c.position > 0]
    errors = np.array([abs(p - m) / m for _, m, p in rows if m > 0])
    return {
        "fit_on": fit_on.name, "predict": predict.name,
        "fitted": {"compute_efficiency": spec.compute_efficiency, "memory_efficiency": spec.memory_efficiency,
                   "node_overhead_us": spec.node_overhead_s * 1e6,
                   "peak_gflops": spec.peak_flops / 1e9, "bandwidth_gbs": spec.memory_bandwidth / 1e9},
        "splits": len(rows),
        "mean_abs_pct_error": round(100 * float(errors.mean()), 1),
        "median_abs_pct_error": round(100 * float(np.median(errors)), 1),
        "max_abs_pct_error": round(100 * float(errors.max()), 1),
        "whole_model_measured_ms": round(1e3 * measured[-1], 3),
        "whole_model_predicted_ms": round(1e3 * predicted[-1], 3),
    }


def chain_compile_times(nodes: int) -> dict:
    """Compile of a Conv+Relu chain (device jetson: roofline, no profiling) and the share
    the report's plots take of it (write_plots timed again on the result)."""
    from bench_calibration import chain

    import onnx

    from slicer_compile.report import write_plots

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chain.onnx"
        onnx.save(chain(nodes // 2), str(path))
        start = time.perf_counter()
        artifact = compile_model(path, device="jetson", out_dir=Path(tmp) / "out")
        total = time.perf_counter() - start
        start = time.perf_counter()
        write_plots(artifact)
        plots = time.perf_counter() - start
    return {"nodes": nodes, "splits": len(artifact.splits), "compile_s": round(total, 2), "plots_s": round(plots, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-resnet50", action="store_true")
    parser.add_argument("--chains", help="only compile Conv+Relu chains of these node counts, e.g. 50,200,800")
    args = parser.parse_args()
    if args.chains:
        print("| nodes | splits | compile s | of which plots s | without plots s |")
        print("|---:|---:|---:|---:|---:|")
        for nodes in (int(v) for v in args.chains.split(",")):
            row = chain_compile_times(nodes)
            print(f"| {row['nodes']} | {row['splits']} | {row['compile_s']:.2f} | {row['plots_s']:.2f} | "
                  f"{row['compile_s'] - row['plots_s']:.2f} |", flush=True)
        return
    results = {"compile": [], "cost_model": []}
    results["compile"].append(time_compile(EXAMPLES / "digits_cnn.onnx"))
    results["compile"].append(time_compile(EXAMPLES / "digits_cnn.onnx", EXAMPLES / "digits_calib.npz"))
    results["compile"].append(time_compile(EXAMPLES / "resnet_dag.onnx"))
    results["compile"].append(time_compile(EXAMPLES / "transformer.onnx"))
    results["compile"].append(time_compile(EXAMPLES / "transformer.onnx", EXAMPLES / "transformer_calib.npz"))
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_resnet50:
            r50 = resnet50_onnx(Path(tmp) / "resnet50.onnx")
            results["compile"].append(time_compile(r50))
            results["cost_model"].append(cost_model_error(EXAMPLES / "resnet_dag.onnx", r50))
        results["cost_model"].append(cost_model_error(EXAMPLES / "resnet_dag.onnx", EXAMPLES / "digits_cnn.onnx"))
        results["cost_model"].append(cost_model_error(EXAMPLES / "transformer.onnx", EXAMPLES / "resnet_dag.onnx"))
    for row in results["compile"]:
        print(f"compile {row['model']:20s} calib={row['calibrated']!s:5s} {row['seconds']:7.2f} s  "
              f"{row['nodes']} nodes, {row['splits']} splits, {row['pairs']} pairs, {row['size_mib']} MiB")
    for row in results["cost_model"]:
        print(f"cost model fit on {row['fit_on']}, predict {row['predict']}: mean |error| "
              f"{row['mean_abs_pct_error']}% (median {row['median_abs_pct_error']}%, max {row['max_abs_pct_error']}%) "
              f"over {row['splits']} splits; whole model {row['whole_model_measured_ms']} ms measured, "
              f"{row['whole_model_predicted_ms']} ms predicted")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
