"""ONNX Runtime as a :class:`Backend`: runs the ONNX parts on the CPU; the runtime
does the coding (the parts run without their codec nodes)."""

from __future__ import annotations

from slicer_compile.backends.base import Backend, Runner, RunSettings


class OnnxrtBackend(Backend):
    name = "onnxruntime"
    codec_in_engine = False
    server_batch_bound = None

    def open(self, model, name: str, settings: RunSettings = RunSettings()) -> Runner:
        from slicer_compile.backends.onnxrt.runner import OnnxrtRunner

        return OnnxrtRunner(model, name=name, optimize=settings.optimize, threads=settings.threads)
