"""Export a PyTorch module to one self-contained ONNX model (torch is optional)."""

from __future__ import annotations

from typing import Sequence

from slicer_compile.errors import ModelError


def export_torch(module, example_inputs: Sequence, input_names: Sequence[str] | None = None,
                 output_names: Sequence[str] | None = None, opset: int = 18, dynamic_batch: bool = False):
    """Export ``module`` with the dynamo exporter; weights stay inside the model.

    Args:
        module: a ``torch.nn.Module`` (put in eval mode here).
        example_inputs: tensors, positional, as the module's forward takes them.
        input_names / output_names: names of the ONNX graph's inputs / outputs.
        dynamic_batch: make the first dimension of every input symbolic ("batch"),
            so a server can batch requests from many clients.
    Returns:
        The exported ``onnx.ModelProto`` (not yet normalised).
    """
    try:
        import torch
    except ImportError:
        raise ModelError("exporting a torch module needs torch: pip install '.[torch]' in the slicer-compile source tree") from None
    module = module.eval()
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                module, tuple(example_inputs), dynamo=True, external_data=False, opset_version=opset,
                input_names=list(input_names) if input_names else None,
                output_names=list(output_names) if output_names else None,
                dynamic_shapes=tuple({0: "batch"} for _ in example_inputs) if dynamic_batch else None,
                verbose=False,
            )
    except Exception as exc:
        raise ModelError(f"torch export failed: {type(exc).__name__}: {exc}") from None
    return program.model_proto
