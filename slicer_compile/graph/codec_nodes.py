"""Insert the codec into a split: ``SlicerEncode`` at the end of the edge part,
``SlicerDecode`` at the start of the server part, on every activation tensor.

Side tensors travel raw. The encoder's payload output has a static size: the
payload bound of the loosest knobs the node accepts, so an engine can allocate
it once; the runtime sends ``payload[:nbytes]``.

Around each codec node sit the steps every encoder and decoder of the package
takes (codec.padding, codec.centring), as plain ONNX nodes so that every engine
built from the part (ONNX Runtime, TensorRT) has them:

    edge:   x -> [Cast to float] -> [Sub offset] -> [zero padded rows] -> SlicerEncode
    server: SlicerDecode -> [Add offset] -> [Cast to dtype] -> x

The surgery is onnx-graphsurgeon's; :func:`strip_encoders` and
:func:`strip_decoders` undo it by cutting the graph at ``x`` and letting its
cleanup drop what no longer reaches an output.
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


def _surgery(model, change):
    """``change(graph)`` applied to a copy of ``model`` through onnx-graphsurgeon; the
    model-level fields graphsurgeon does not carry (metadata, doc string) are kept."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    change(graph)
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    out.metadata_props.extend(model.metadata_props)
    out.doc_string, out.model_version = model.doc_string, model.model_version
    return out  # checked where it is written (compiler._materialize_into), not at every surgery


def _node(graph, op: str, name: str, inputs: list, outputs: list, domain: str | None = None, **attrs) -> None:
    import onnx_graphsurgeon as gs

    graph.nodes.append(gs.Node(op=op, name=name, attrs=attrs, inputs=inputs, outputs=outputs, domain=domain))


def _variable(name: str, dtype, shape=None):
    import onnx_graphsurgeon as gs

    return gs.Variable(name, dtype=np.dtype(dtype), shape=shape)


def _constant(name: str, value: np.ndarray):
    import onnx_graphsurgeon as gs

    return gs.Constant(name, np.ascontiguousarray(value))


def add_encoders(edge, cut: Cut, limits: CodecLimits):
    """Edge part whose outputs are each activation's payload and byte count (plus
    side tensors raw), with one extra input: the runtime knobs."""

    def change(graph):
        tensors = graph.tensors()
        knobs = _variable(KNOBS_INPUT, np.float32, [len(KNOB_FIELDS)])
        graph.inputs.append(knobs)
        activations = {t.name: t for t in cut.activations}
        outputs = []
        for out in graph.outputs:
            tensor = activations.get(out.name)
            if tensor is None:
                outputs.append(out)
                continue
            source = out
            if np.dtype(tensor.dtype) != np.float32:
                source = _variable(f"{tensor.name}.float32", np.float32, list(tensor.shape))
                _node(graph, "Cast", f"{tensor.name}.cast", [out], [source], to=np.float32)
            if tensor.centre is not None:  # codec.centring: the residual is coded
                source = _centred(graph, source, tensor)
            if tensor.mask is not None:  # codec.padding: the padded rows are zero before coding
                source = _masked(graph, source, tensors[tensor.mask], tensor)
            size = limits.payload_bytes(tensor.shape)
            payload = _variable(payload_name(tensor.name), np.uint8, [size])
            nbytes = _variable(nbytes_name(tensor.name), np.int64, [1])
            _node(graph, ENCODE_OP, f"{tensor.name}.encode", [source, knobs], [payload, nbytes], domain=DOMAIN,
                  payload_bytes=size, min_sparsity=limits.min_sparsity, max_blocks=limits.max_blocks,
                  max_q_bits=limits.max_q_bits)
            outputs += [payload, nbytes]
        graph.outputs = outputs

    return _surgery(edge, change)


def _centred(graph, source, tensor):
    """``source - offset``, the offset a constant shaped to broadcast on its axis."""
    centre = tensor.centre
    offset = _constant(f"{tensor.name}.centre.offset",
                       centre.offset.reshape(centre.broadcast_shape(len(tensor.shape))).astype(np.float32))
    out = _variable(f"{tensor.name}.centre.residual", np.float32, list(tensor.shape))
    _node(graph, "Sub", f"{tensor.name}.centre.sub", [source, offset], [out])
    return out


def _masked(graph, source, mask, tensor):
    """``source`` with the rows ``mask`` marks as padding set to 0 (as
    codec.padding.masked does: any non-zero mask value keeps its row)."""
    prefix = f"{tensor.name}.padding"
    rank = len(tensor.shape)
    keep = _variable(f"{prefix}.mask", np.float32)
    _node(graph, "Cast", f"{prefix}.cast", [mask], [keep], to=np.float32)
    if rank > 2:
        wide = _variable(f"{prefix}.keep", np.float32)
        _node(graph, "Unsqueeze", f"{prefix}.unsqueeze", [keep, _constant(f"{prefix}.axes",
                                                                          np.arange(2, rank, dtype=np.int64))], [wide])
        keep = wide
    is_zero, nonzero = _variable(f"{prefix}.is_zero", np.bool_), _variable(f"{prefix}.nonzero", np.bool_)
    factor, out = _variable(f"{prefix}.factor", np.float32), _variable(f"{prefix}.out", np.float32, list(tensor.shape))
    _node(graph, "Equal", f"{prefix}.equal", [keep, _constant(f"{prefix}.zero", np.zeros((), np.float32))], [is_zero])
    _node(graph, "Not", f"{prefix}.not", [is_zero], [nonzero])
    _node(graph, "Cast", f"{prefix}.factor", [nonzero], [factor], to=np.float32)
    _node(graph, "Mul", f"{prefix}.mul", [source, factor], [out])
    return out


def add_decoders(server, cut: Cut):
    """Server part that takes each activation as a payload (a byte vector of any
    length) and decodes it in front of the original graph."""

    def change(graph):
        activations = {t.name: t for t in cut.activations}
        inputs = []
        for inp in graph.inputs:
            tensor = activations.get(inp.name)
            if tensor is None:
                inputs.append(inp)
                continue
            payload = _variable(payload_name(tensor.name), np.uint8, [f"{tensor.name}.payload_len"])
            inputs.append(payload)
            # The chain ends in the graph's own input tensor: its consumers are untouched.
            cast = np.dtype(tensor.dtype) != np.float32
            shape = list(tensor.shape)
            decoded = _variable(f"{tensor.name}.decoded", np.float32, shape) if cast or tensor.centre else inp
            _node(graph, DECODE_OP, f"{tensor.name}.decode", [payload], [decoded], domain=DOMAIN,
                  shape=",".join(map(str, tensor.shape)))
            if tensor.centre is not None:  # codec.centring: the offsets back on the residual
                centre = tensor.centre
                offset = _constant(f"{tensor.name}.centre.offset",
                                   centre.offset.reshape(centre.broadcast_shape(len(shape))))
                restored = _variable(f"{tensor.name}.centre.restored", np.float32, shape) if cast else inp
                _node(graph, "Add", f"{tensor.name}.centre.add", [decoded, offset], [restored])
                decoded = restored
            if cast:
                _node(graph, "Cast", f"{tensor.name}.cast", [decoded], [inp], to=np.dtype(tensor.dtype))
        graph.inputs = inputs

    return _surgery(server, change)


def set_metadata(model, **props: str) -> None:
    """Stamp key/value metadata (artifact id, split id) into a model part."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in props.items():
        if key in existing:
            existing[key].value = str(value)
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, str(value)


def _batched_shape(tensor, batch_dim: str | None) -> list:
    """``tensor``'s shape with its first axis named ``batch_dim`` (symbolic), if given."""
    shape = list(tensor.shape)
    if batch_dim and shape:
        shape[0] = batch_dim
    return shape


def _without_codec_domain(graph) -> None:
    graph.import_domains = [d for d in graph.import_domains or [] if d.domain != DOMAIN] or None


def strip_encoders(edge, crossing: list, batch_dim: str | None = "batch"):
    """The edge part without its encoder nodes: it outputs the activations themselves.

    A runtime that encodes outside the graph (to time it, or on a GPU) runs this, and
    takes the codec's other steps (centring, padding) itself. ``crossing`` is the
    split's crossing table from the manifest.
    """

    def change(graph):
        tensors = graph.tensors()
        activations = [t for t in crossing if t.kind == "activation"]
        codec_outputs = {payload_name(t.name) for t in activations} | {nbytes_name(t.name) for t in activations}
        outputs = [o for o in graph.outputs if o.name not in codec_outputs]
        for t in activations:
            value = tensors[t.name]
            value.shape = _batched_shape(t, batch_dim)
            outputs.append(value)
        graph.outputs = outputs
        graph.inputs = [i for i in graph.inputs if i.name != KNOBS_INPUT]
        _without_codec_domain(graph)

    return _surgery(edge, change)


def strip_decoders(server, crossing: list, batch_dim: str | None = "batch"):
    """The server part without its decoder nodes: it takes the activations themselves
    (decoded and restored by its caller), with a symbolic batch dimension so requests
    from many clients run together."""

    def change(graph):
        tensors = graph.tensors()
        activations = [t for t in crossing if t.kind == "activation"]
        payloads = {payload_name(t.name) for t in activations}
        inputs = [i for i in graph.inputs if i.name not in payloads]
        for t in activations:
            value = tensors[t.name]
            value.inputs.clear()  # cut from its decoder chain, which cleanup then drops
            value.shape = _batched_shape(t, batch_dim)
            inputs.append(value)
        for inp in inputs:  # side tensors batch too
            if batch_dim and inp.shape and inp.name not in {t.name for t in activations}:
                inp.shape = [batch_dim] + list(inp.shape[1:])
        graph.inputs = inputs
        _without_codec_domain(graph)

    return _surgery(server, change)
