"""Front end: ONNX load + normalise, and torch -> ONNX export."""

from slicer_compile.frontend.onnx_model import (
    concretize,
    graph_inputs,
    load_onnx,
    model_sha256,
    normalise,
    tensor_types,
)
from slicer_compile.frontend.torch_export import export_torch

__all__ = ["concretize", "export_torch", "graph_inputs", "load_onnx", "model_sha256", "normalise", "tensor_types"]
