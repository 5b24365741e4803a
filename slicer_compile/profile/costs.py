"""Static per-node costs: floating-point operations, bytes moved, weight and output bytes.

FLOPs count a multiply-add as two. Ops that only move data (Reshape,
Transpose, Gather, …) have zero FLOPs; their cost is in bytes. The counts feed
the roofline device models, so they need to be right in order of magnitude
for every op and exact for the ones that dominate (Conv, Gemm, MatMul).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from slicer_compile.frontend.onnx_model import tensor_types

# FLOPs per output element for element-wise and normalisation ops.
_ELEMENTWISE_FLOPS = {
    "Add": 1, "Sub": 1, "Mul": 1, "Div": 1, "Relu": 1, "LeakyRelu": 2, "Clip": 2, "Max": 1, "Min": 1,
    "Neg": 1, "Abs": 1, "Sqrt": 4, "Pow": 8, "Exp": 8, "Log": 8, "Tanh": 8, "Sigmoid": 8, "Erf": 8,
    "Gelu": 12, "HardSigmoid": 3, "HardSwish": 4, "Where": 1, "Equal": 1, "Less": 1, "Greater": 1,
    "Not": 1, "And": 1, "Or": 1, "Cast": 1, "BatchNormalization": 2, "Softmax": 5, "LogSoftmax": 6,
    "LayerNormalization": 8, "InstanceNormalization": 8, "GroupNormalization": 8, "Dropout": 0,
    "ReduceMean": 1, "ReduceSum": 1, "ReduceMax": 1, "SimplifiedLayerNormalization": 6,
}


@dataclass(frozen=True)
class NodeCost:
    """What one node costs, statically."""

    name: str
    op_type: str
    flops: float
    bytes_moved: int  # activation inputs + weights + outputs
    output_bytes: int
    weight_bytes: int  # initializers first consumed here (shared weights counted once)


def _numel(shape) -> int | None:
    if shape is None or any(d is None for d in shape):
        return None
    return math.prod(shape)


def node_flops(node, types: dict) -> float:
    """FLOPs of one node, from the shapes of its inputs and outputs."""
    def shape(name):
        return types.get(name, (None, None))[0]

    out_shape = shape(node.output[0]) if node.output else None
    out_n = _numel(out_shape) or 0
    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        w = shape(node.input[1])
        if w is None or out_shape is None:
            return 0.0
        # Weights are [Cout, Cin/group, k...] for Conv: every output element takes
        # Cin/group * prod(k) MACs. For ConvTranspose they are [Cin, Cout/group, k...]
        # and every input element scatters Cout/group * prod(k) MACs.
        if op == "Conv":
            return 2.0 * out_n * w[1] * math.prod(w[2:])
        return 2.0 * (_numel(shape(node.input[0])) or 0) * w[1] * math.prod(w[2:])
    if op == "Gemm":
        a = shape(node.input[0])
        if a is None or out_shape is None:
            return 0.0
        trans_a = next((a_.i for a_ in node.attribute if a_.name == "transA"), 0)
        k = a[0] if trans_a else a[-1]
        return 2.0 * out_n * k
    if op == "MatMul":
        a = shape(node.input[0])
        if a is None:
            return 0.0
        return 2.0 * out_n * a[-1]
    if op in ("MaxPool", "AveragePool"):
        kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), [1])
        return float(out_n * math.prod(kernel))
    if op in ("GlobalAveragePool", "GlobalMaxPool"):
        return float(_numel(shape(node.input[0])) or 0)
    return float(out_n * _ELEMENTWISE_FLOPS.get(op, 0))


def node_costs(concrete_model, nodes=None) -> list[NodeCost]:
    """Costs of ``nodes`` (default: every node), in order."""
    types = tensor_types(concrete_model)
    initializers = {i.name for i in concrete_model.graph.initializer}
    weights_seen: set[str] = set()

    def nbytes(name: str) -> int:
        shape, dtype = types.get(name, (None, None))
        n = _numel(shape)
        return 0 if n is None else n * np.dtype(dtype).itemsize

    out = []
    for node in (nodes if nodes is not None else concrete_model.graph.node):
        weight_bytes = 0
        for name in node.input:
            if name in initializers and name not in weights_seen:
                weights_seen.add(name)
                weight_bytes += nbytes(name)
        in_bytes = sum(nbytes(n) for n in node.input if n)
        out_bytes = sum(nbytes(n) for n in node.output if n)
        out.append(NodeCost(node.name, node.op_type, node_flops(node, types), in_bytes + out_bytes, out_bytes,
                            weight_bytes))
    return out
