"""Insert the codec into a split: ``SlicerEncode`` at the end of the edge part,
``SlicerDecode`` at the start of the server part, on every activation tensor.

Side tensors travel raw. The encoder's payload output has a static size: the
payload bound of the loosest knobs the node accepts, so an engine can allocate
it once; the runtime sends ``payload[:nbytes]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from slicer_compile.codec import SlicerConfig, predict_bits
from slicer_compile.codec.ops import DECODE_OP, DOMAIN, ENCODE_OP, KNOB_FIELDS, KNOBS_INPUT
from slicer_compile.graph.cuts import Cut


@dataclass(frozen=True)
class CodecLimits:
    """The loosest knobs an encoder node accepts; they fix its payload size."""

    min_sparsity: float = 0.5
    max_blocks: int = 8
    max_q_bits: int = 8

    def loosest_config(self) -> SlicerConfig:
        return SlicerConfig(sparsity=self.min_sparsity, blocks=(self.max_blocks, self.max_blocks),
                            q_bits=self.max_q_bits, q_min=1)

    def payload_bytes(self, shape: tuple[int, ...]) -> int:
        return math.ceil(predict_bits(shape, self.loosest_config()) / 8)


def payload_name(tensor: str) -> str:
    return f"{tensor}.payload"


def nbytes_name(tensor: str) -> str:
    return f"{tensor}.nbytes"


def _elem_type(dtype: str) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _ensure_opset(model) -> None:
    from onnx import helper

    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))


def add_encoders(edge, cut: Cut, limits: CodecLimits):
    """Edge part whose outputs are each activation's payload and byte count (plus
    side tensors raw), with one extra input: the runtime knobs."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.ModelProto.FromString(edge.SerializeToString())
    graph = model.graph
    graph.input.append(helper.make_tensor_value_info(KNOBS_INPUT, TensorProto.FLOAT, [len(KNOB_FIELDS)]))
    activations = {t.name: t for t in cut.activations}
    new_outputs = []
    for out in graph.output:
        tensor = activations.get(out.name)
        if tensor is None:
            new_outputs.append(out)
            continue
        source = tensor.name
        if np.dtype(tensor.dtype) != np.float32:
            source = f"{tensor.name}.float32"
            graph.node.append(helper.make_node("Cast", [tensor.name], [source], to=TensorProto.FLOAT,
                                               name=f"{tensor.name}.cast"))
        if tensor.mask is not None:  # codec.padding: the padded rows are zero before coding
            source = _masked(graph, source, tensor)
        size = limits.payload_bytes(tensor.shape)
        graph.node.append(helper.make_node(
            ENCODE_OP, [source, KNOBS_INPUT], [payload_name(tensor.name), nbytes_name(tensor.name)],
            domain=DOMAIN, name=f"{tensor.name}.encode", payload_bytes=size, min_sparsity=limits.min_sparsity,
            max_blocks=limits.max_blocks, max_q_bits=limits.max_q_bits))
        new_outputs.append(helper.make_tensor_value_info(payload_name(tensor.name), TensorProto.UINT8, [size]))
        new_outputs.append(helper.make_tensor_value_info(nbytes_name(tensor.name), TensorProto.INT64, [1]))
    del graph.output[:]
    graph.output.extend(new_outputs)
    _ensure_opset(model)
    return model


def _masked(graph, source: str, tensor) -> str:
    """Nodes computing ``source`` with the rows ``tensor.mask`` marks as padding set to 0
    (as codec.padding.masked does): Cast the mask to float, Unsqueeze it to the
    activation's rank, Mul."""
    from onnx import TensorProto, helper, numpy_helper

    prefix = f"{tensor.name}.padding"
    axes = list(range(2, len(tensor.shape)))
    graph.node.append(helper.make_node("Cast", [tensor.mask], [f"{prefix}.mask"], to=TensorProto.FLOAT,
                                       name=f"{prefix}.cast"))
    keep = f"{prefix}.mask"
    if axes:
        graph.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), f"{prefix}.axes"))
        graph.node.append(helper.make_node("Unsqueeze", [keep, f"{prefix}.axes"], [f"{prefix}.keep"],
                                           name=f"{prefix}.unsqueeze"))
        keep = f"{prefix}.keep"
    # factor = (mask != 0): any non-zero mask value keeps its row, as codec.padding does.
    graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), f"{prefix}.zero"))
    graph.node.append(helper.make_node("Equal", [keep, f"{prefix}.zero"], [f"{prefix}.is_zero"],
                                       name=f"{prefix}.equal"))
    graph.node.append(helper.make_node("Not", [f"{prefix}.is_zero"], [f"{prefix}.nonzero"], name=f"{prefix}.not"))
    graph.node.append(helper.make_node("Cast", [f"{prefix}.nonzero"], [f"{prefix}.factor"], to=TensorProto.FLOAT,
                                       name=f"{prefix}.factor"))
    graph.node.append(helper.make_node("Mul", [source, f"{prefix}.factor"], [f"{prefix}.out"], name=f"{prefix}.mul"))
    return f"{prefix}.out"


def add_decoders(server, cut: Cut):
    """Server part that takes each activation as a payload (a byte vector of any
    length) and decodes it in front of the original graph."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.ModelProto.FromString(server.SerializeToString())
    graph = model.graph
    activations = {t.name: t for t in cut.activations}
    new_inputs, decoders = [], []
    for inp in graph.input:
        tensor = activations.get(inp.name)
        if tensor is None:
            new_inputs.append(inp)
            continue
        new_inputs.append(helper.make_tensor_value_info(payload_name(tensor.name), TensorProto.UINT8,
                                                        [f"{tensor.name}.payload_len"]))
        target = tensor.name if np.dtype(tensor.dtype) == np.float32 else f"{tensor.name}.float32"
        decoders.append(helper.make_node(DECODE_OP, [payload_name(tensor.name)], [target], domain=DOMAIN,
                                         name=f"{tensor.name}.decode", shape=",".join(map(str, tensor.shape))))
        if target != tensor.name:
            decoders.append(helper.make_node("Cast", [target], [tensor.name], to=_elem_type(tensor.dtype),
                                             name=f"{tensor.name}.cast"))
    del graph.input[:]
    graph.input.extend(new_inputs)
    nodes = decoders + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    _ensure_opset(model)
    return model


def set_metadata(model, **props: str) -> None:
    """Stamp key/value metadata (artifact id, split id) into a model part."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in props.items():
        if key in existing:
            existing[key].value = str(value)
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, str(value)


def _activation_info(tensor: dict, batch_dim: str | None):
    from onnx import helper

    shape = list(tensor.shape)
    if batch_dim and shape:
        shape[0] = batch_dim
    return helper.make_tensor_value_info(tensor.name, _elem_type(tensor.dtype), shape)


def strip_encoders(edge, crossing: list[dict], batch_dim: str | None = "batch"):
    """The edge part without its encoder nodes: it outputs the activations themselves.

    A runtime that encodes outside the graph (to time it, or on a GPU) runs this.
    ``crossing`` is the split's crossing table from the manifest.
    """
    import onnx

    model = onnx.ModelProto.FromString(edge.SerializeToString())
    graph = model.graph
    activations = {t.name: t for t in crossing if t.kind == "activation"}
    codec_outputs = {payload_name(n) for n in activations} | {nbytes_name(n) for n in activations}
    padding = tuple(f"{name}.padding." for name in activations)
    kept = [n for n in graph.node if n.op_type != ENCODE_OP and not n.name.startswith(padding)
            and not (n.op_type == "Cast" and n.name.endswith(".cast") and n.input[0] in activations)]
    dropped = {i for n in graph.node if n.name.startswith(padding) for i in n.input if i.endswith((".axes", ".zero"))}
    kept_inits = [i for i in graph.initializer if i.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    del graph.node[:]
    graph.node.extend(kept)
    outputs = [o for o in graph.output if o.name not in codec_outputs]
    outputs += [_activation_info(t, batch_dim) for t in activations.values()]
    del graph.output[:]
    graph.output.extend(outputs)
    inputs = [i for i in graph.input if i.name != KNOBS_INPUT]
    del graph.input[:]
    graph.input.extend(inputs)
    _drop_opset(model)
    return model


def strip_decoders(server, crossing: list[dict], batch_dim: str | None = "batch"):
    """The server part without its decoder nodes: it takes the activations themselves,
    with a symbolic batch dimension so requests from many clients run together."""
    import onnx

    model = onnx.ModelProto.FromString(server.SerializeToString())
    graph = model.graph
    activations = {t.name: t for t in crossing if t.kind == "activation"}
    decoded = {f"{n}.float32" for n in activations}
    kept = [n for n in graph.node if n.op_type != DECODE_OP and not (n.op_type == "Cast" and n.input[0] in decoded)]
    del graph.node[:]
    graph.node.extend(kept)
    inputs = [i for i in graph.input if i.name not in {payload_name(n) for n in activations}]
    inputs += [_activation_info(t, batch_dim) for t in activations.values()]
    for inp in inputs:  # side tensors batch too
        dims = inp.type.tensor_type.shape.dim
        if batch_dim and dims and inp.name not in activations:
            dims[0].Clear()
            dims[0].dim_param = batch_dim
    del graph.input[:]
    graph.input.extend(inputs)
    _drop_opset(model)
    return model


def _drop_opset(model) -> None:
    kept = [o for o in model.opset_import if o.domain != DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
