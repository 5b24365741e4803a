"""Measured per-node latency with TensorRT: an engine of the whole model, an
``IProfiler`` collecting per-layer times, and the layers mapped back to ONNX nodes
(``profile/engine_layers.py``: fused layers share their time by roofline
weight; the profile keeps the layer table so that the sharing can be seen)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from slicer_compile.frontend.onnx_model import model_sha256
from slicer_compile.profile.costs import node_costs
from slicer_compile.profile.measure import NodeProfile, Profile, example_inputs


def make_layer_profiler(trt):
    """A ``tensorrt.IProfiler`` that keeps every layer's time of every run."""

    class LayerProfiler(trt.IProfiler):
        def __init__(self):
            super().__init__()
            self.samples: dict[str, list[float]] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.samples.setdefault(layer_name, []).append(ms * 1e-3)

    return LayerProfiler()


def measure_profile_tensorrt(concrete_model, device_name: str, device_description: str = "", warmup: int = 3,
                             runs: int = 10, feeds: dict | None = None, precision: str = "fp16",
                             progress: Callable[[int, int], None] | None = None) -> Profile:
    """Build an engine of the whole model and time ``warmup + runs`` executions per layer."""
    from slicer_compile.backends.tensorrt.availability import require_tensorrt
    from slicer_compile.backends.tensorrt.builder import EngineOptions, build_engine
    from slicer_compile.profile.engine_layers import attribute_layer_times
    from slicer_compile.backends.tensorrt.runner import TensorrtRunner

    trt = require_tensorrt()
    feeds = feeds if feeds is not None else example_inputs(concrete_model)
    profiler = make_layer_profiler(trt)
    run_times = []
    with tempfile.TemporaryDirectory(prefix="slicer-trt-profile-") as tmp:
        plan = build_engine(concrete_model, Path(tmp) / "model.plan", EngineOptions(precision=precision))
        with TensorrtRunner(plan, name="profile", profiler=profiler) as runner:
            total = warmup + runs
            for i in range(total):
                runner.infer(feeds)
                run_times.append(runner.last_inference_time())
                if progress:
                    progress(i + 1, total)
    layer_times = {layer: float(np.median(samples[warmup:] or samples))
                   for layer, samples in profiler.samples.items()}
    costs = node_costs(concrete_model)
    weight = {c.name: (c.flops if c.flops > 0 else c.bytes_moved) for c in costs}
    per_node, layers = attribute_layer_times(layer_times, [c.name for c in costs], weight)
    nodes = tuple(NodeProfile(c.name, c.op_type, per_node.get(c.name, 0.0), c.flops, c.bytes_moved, c.output_bytes,
                              c.weight_bytes) for c in costs)
    return Profile(model_sha256(concrete_model), device_name, device_description, warmup, runs,
                   float(np.median(run_times[warmup:])), nodes, "tensorrt", tuple(layers))


def local_gpu_description() -> str:
    """This machine's GPU and TensorRT version, for the profile's record."""
    import tensorrt

    from slicer_compile.native.cuda import cuda_runtime

    rt = cuda_runtime()
    err, props = rt.cudaGetDeviceProperties(0)
    name = props.name.decode(errors="replace").rstrip("\x00") if int(err) == 0 else "unknown GPU"
    return f"{name}, TensorRT {tensorrt.__version__}"
