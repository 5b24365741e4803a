"""ONNX Runtime backend: CPU runner and the ``ai.slicer`` codec ops."""

from slicer_compile.backends.onnxrt.runner import OnnxrtRunner, session_options

__all__ = ["OnnxrtRunner", "session_options"]
