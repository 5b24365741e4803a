"""The runner contract every backend implements (ONNX Runtime on CPU, TensorRT on GPU).

Public ``activate / infer / deactivate`` wrap ``*_impl`` hooks; a runner is a
context manager, and nothing expensive happens before ``activate()``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Mapping

import numpy as np


class Runner(ABC):
    """Runs one model part. Subclasses implement the ``*_impl`` hooks."""

    def __init__(self, name: str):
        self.name = name
        self.is_active = False
        self._last_inference_s: float | None = None

    def activate(self) -> "Runner":
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; returns outputs by name. Times the call (``last_inference_time``)."""
        if not self.is_active:
            raise RuntimeError(f"runner {self.name} is not active: call activate() or use it as a context manager")
        start = time.perf_counter()
        outputs = self.infer_impl(feeds)
        self._last_inference_s = time.perf_counter() - start
        return outputs

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def last_inference_time(self) -> float | None:
        """Seconds the last ``infer`` took, or None before the first."""
        return self._last_inference_s

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.deactivate()

    @property
    @abstractmethod
    def input_names(self) -> list[str]: ...

    @property
    @abstractmethod
    def output_names(self) -> list[str]: ...

    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def deactivate_impl(self) -> None: ...


BACKENDS = ("onnxruntime", "tensorrt")


def open_runner(model, backend: str = "onnxruntime", name: str | None = None, **options) -> Runner:
    """A runner chosen by backend name; the backend's module is imported only here, so
    callers (the runtime, the benchmarks) depend on this contract alone.

    Args:
        model: for ``onnxruntime`` an ``onnx.ModelProto`` or serialized bytes; for
            ``tensorrt`` a ``.plan`` path or its bytes.
        options: passed to the runner (``optimize``/``threads`` for ONNX Runtime;
            ``plugins``/``profiler`` for TensorRT).
    """
    if backend == "onnxruntime":
        from slicer_compile.backends.onnxrt import OnnxrtRunner

        return OnnxrtRunner(model, name=name or "onnxrt", **options)
    if backend == "tensorrt":
        from slicer_compile.backends.tensorrt.runner import TensorrtRunner

        return TensorrtRunner(model, name=name or "tensorrt", **options)
    from slicer_compile.errors import ConfigError

    raise ConfigError(f"unknown backend {backend!r}: choose one of {BACKENDS}")
