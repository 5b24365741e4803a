"""ONNX Runtime runner. Models containing ``ai.slicer`` codec nodes run through
onnxruntime-extensions Python ops (see ``codec_ops``)."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from slicer_compile.backends.base import Runner
from slicer_compile.errors import ModelError, SlicerCompileError


def session_options(optimize: bool = False, threads: int = 0, profile_prefix: str | None = None):
    """The one place that configures ONNX Runtime sessions.

    * Graph optimisations off by default, so that a run matches the per-node profile
      (one kernel per ONNX node) and edge + server match the full model; runners a
      user waits on pass ``optimize=True``.
    * Thread pools do not spin: ONNX Runtime's intra-op threads busy-wait after each
      run by default, and with several sessions on few cores (the edge runner, the
      server's split parts, a local reference) they spin against each other.
    * ``threads``: intra-op threads; 0 means one per physical core (ONNX Runtime's
      default). Inter-op parallelism stays off (sequential execution).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


class OnnxrtRunner(Runner):
    """Runs an ``onnx.ModelProto`` (or serialized bytes) on the CPU execution provider."""

    def __init__(self, model, name: str = "onnxrt", optimize: bool = False, threads: int = 0):
        super().__init__(name)
        self._model = model
        self._optimize = optimize
        self._threads = threads
        self._session = None

    def activate_impl(self) -> None:
        import onnxruntime as ort

        from slicer_compile.backends.onnxrt.codec_ops import prepare_for_ort

        so = session_options(self._optimize, self._threads)
        model_bytes = prepare_for_ort(self._model, so)
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        refusals = (ort_errors.Fail, ort_errors.InvalidGraph, ort_errors.InvalidArgument, ort_errors.InvalidProtobuf,
                    ort_errors.NotImplemented, RuntimeError, ValueError)
        try:
            self._session = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        except refusals as exc:  # a graph ORT will not run: the model's problem, said in one line
            raise ModelError(f"ONNX Runtime cannot load {self.name}: {str(exc).splitlines()[0][:300]}") from None

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from slicer_compile.backends.onnxrt.codec_ops import failure_mark, failures_since

        names = self.output_names
        mark = failure_mark()
        outputs = self._session.run(names, dict(feeds))
        failed = failures_since(mark)
        if failed:  # a codec op refused its input (it cannot raise inside ONNX Runtime)
            raise SlicerCompileError(f"{self.name}: {failed[0]}")
        return dict(zip(names, outputs))

    def deactivate_impl(self) -> None:
        self._session = None

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self._session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self._session.get_outputs()]
