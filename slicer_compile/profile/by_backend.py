"""Profile on this machine with a named backend: the one place that picks the
profiler (ONNX Runtime's in ``measure``, TensorRT's in ``measure_tensorrt``), so that
neither profiler module needs the other."""

from __future__ import annotations

from typing import Callable

from slicer_compile.errors import ModelError
from slicer_compile.profile.measure import Profile, measure_profile


def measure_on_backend(concrete_model, backend: str, warmup: int = 3, runs: int = 10, precision: str = "fp16",
                       progress: Callable[[int, int], None] | None = None) -> Profile:
    """Profile on this machine with the named backend: ONNX Runtime on the CPU (one
    event per node), or an engine backend on this GPU (per engine layer, mapped back)."""
    if backend == "onnxruntime":
        from slicer_compile.profile.devices import local_cpu

        return measure_profile(concrete_model, "cpu", local_cpu().description, warmup=warmup, runs=runs,
                               progress=progress)
    if backend == "tensorrt":
        from slicer_compile.profile.measure_tensorrt import local_gpu_description, measure_profile_tensorrt

        return measure_profile_tensorrt(concrete_model, "gpu", local_gpu_description(), warmup=warmup, runs=runs,
                                        precision=precision, progress=progress)
    raise ModelError(f"no profiler for backend {backend!r}")
