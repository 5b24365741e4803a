"""Load an ONNX model and normalise it into the form every later stage expects.

Normalised means: checked, with every node named uniquely, topologically
sorted, at an IR version ONNX Runtime accepts, weights held in memory (external
data loaded), and shapes inferred. Graph inputs may keep symbolic dimensions;
:func:`concretize` pins them for analysis and profiling.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from slicer_compile.errors import ModelError

#: ONNX Runtime 1.31 rejects newer IR versions than this (onnx's make_model default is newer).
MAX_IR_VERSION = 10
#: Older default-domain opsets are converted up to this one.
MIN_OPSET = 13


def _onnx():
    import onnx  # lazy: the package imports on a box without onnx installed

    return onnx


def load_onnx(path: str | Path):
    """Read an ONNX file (external data included) and normalise it.

    Raises:
        ModelError: the file is missing, not ONNX, truncated or invalid.
    """
    onnx = _onnx()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no such model file: {path}")
    try:
        model = onnx.load(str(path), load_external_data=True)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning, ValueError…
        raise ModelError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node:
        raise ModelError(f"{path} is not an ONNX model with a graph (no nodes)")
    return normalise(model, source=str(path))


def model_sha256(model) -> str:
    """Hash of the serialised model, weights included."""
    return hashlib.sha256(model.SerializeToString()).hexdigest()


def normalise(model, source: str = "model"):
    """Check, name, sort, fix the IR version and infer shapes (returns a new model)."""
    onnx = _onnx()
    model = onnx.ModelProto.FromString(model.SerializeToString())
    if model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset < MIN_OPSET:
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, MIN_OPSET)
        except Exception as exc:
            raise ModelError(f"{source}: cannot convert opset {opset} to {MIN_OPSET}: {exc}") from None
    _name_nodes(model.graph)
    _toposort(model.graph, source)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"{source} is not a valid ONNX model: {first}") from None
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise ModelError(f"{source}: shape inference failed: {exc}") from None
    return model


def _name_nodes(graph) -> None:
    """Give every node a unique name: profiles and cuts refer to nodes by name."""
    seen: set[str] = set()
    for i, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{i}"
        if name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        node.name = name


def _toposort(graph, source: str) -> None:
    """Order nodes so that each comes after the producers of its inputs."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        progressed = []
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                progressed.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if not progressed:
            missing = sorted({n for node in rest for n in node.input if n not in available})[:5]
            raise ModelError(f"{source}: graph has a cycle or undefined inputs ({', '.join(missing)})")
        ordered.extend(progressed)
        pending = rest
    if [n.name for n in ordered] != [n.name for n in graph.node]:
        del graph.node[:]
        graph.node.extend(ordered)


def resolve_input_shapes(model, given: dict | None = None, samples: dict | None = None,
                         ) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """The shape each input is compiled at, and notes on what was pinned.

    A dimension that the model leaves symbolic takes, in order: the size given
    (``--input-shape``), the calibration samples' size (``samples``, batch on axis 0),
    or — for the batch axis alone — 1, which the notes say. Any other symbolic
    dimension with neither is refused: a table at a size nobody runs is worse than
    no table.

    Raises:
        ModelError: naming each input and axis still symbolic, and the option to give.
    """
    given, samples = given or {}, samples or {}
    names = [i.name for i in graph_inputs(model)]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ModelError(f"input shape given for {', '.join(map(repr, unknown))}, which is not an input of the model "
                         f"(inputs: {', '.join(names)})")
    shapes, notes = {}, []
    unsized: dict[str, tuple[list[str], str]] = {}  # input -> (its symbolic dims, a shape to fill in)
    for inp in graph_inputs(model):
        if inp.name in given:
            shapes[inp.name] = tuple(int(d) for d in given[inp.name])
            continue
        dims = inp.type.tensor_type.shape.dim
        sample = samples.get(inp.name)
        shape: list[int | None] = []
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                shape.append(dim.dim_value)
                continue
            label = dim.dim_param or "?"
            if axis == 0:
                shape.append(1)
                notes.append(f"batch axis {label} of input {inp.name} pinned to 1 (the server batches requests)")
            elif sample is not None and sample.ndim == len(dims):
                shape.append(int(sample.shape[axis]))
                notes.append(f"axis {axis} ({label}) of input {inp.name} set to {sample.shape[axis]}, the "
                             "calibration samples' size")
            else:
                shape.append(None)
                unsized.setdefault(inp.name, ([], ""))[0].append(f"{label} (axis {axis})")
        if inp.name in unsized:
            unsized[inp.name] = (unsized[inp.name][0], "x".join("?" if d is None else str(d) for d in shape))
        else:
            shapes[inp.name] = tuple(shape)
    if unsized:
        named = "; ".join(f"input {name}: {', '.join(dims)}" for name, (dims, _) in unsized.items())
        examples = " ".join(f"--input-shape {name}={example}" for name, (_, example) in unsized.items())
        raise ModelError(f"symbolic dimensions with no size: {named}; give them with {examples} (the ? filled), "
                         "or give --calib samples of the size you will run")
    return shapes, notes


def concretize(model, input_shapes: dict[str, tuple[int, ...]] | None = None, default_dim: int = 1):
    """A copy with every symbolic input dimension pinned (to ``input_shapes`` or
    ``default_dim``) and shapes re-inferred, so every tensor has a known size."""
    onnx = _onnx()
    model = onnx.ModelProto.FromString(model.SerializeToString())
    input_shapes = input_shapes or {}
    initializers = {i.name for i in model.graph.initializer}
    names = [inp.name for inp in model.graph.input if inp.name not in initializers]
    unknown = sorted(set(input_shapes) - set(names))
    if unknown:
        raise ModelError(f"input shape given for {', '.join(map(repr, unknown))}, which is not an input of the model "
                         f"(inputs: {', '.join(names)})")
    for name, wanted in input_shapes.items():
        if any(int(d) < 1 for d in wanted):
            raise ModelError(f"input shape {'x'.join(map(str, wanted))} for {name!r} has a dimension below 1")
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        wanted = input_shapes.get(inp.name)
        if wanted is not None and len(wanted) != len(dims):
            raise ModelError(f"input {inp.name} has {len(dims)} dimensions, the given shape {tuple(wanted)} has {len(wanted)}")
        for i, dim in enumerate(dims):
            if wanted is not None and dim.HasField("dim_value") and dim.dim_value != wanted[i]:
                raise ModelError(f"input {inp.name} has a fixed size {dim.dim_value} on axis {i}; the given shape "
                                 f"{'x'.join(map(str, wanted))} asks for {wanted[i]}")
            value = wanted[i] if wanted is not None else (dim.dim_value if dim.HasField("dim_value") else default_dim)
            dim.Clear()
            dim.dim_value = int(value)
    del model.graph.value_info[:]
    for out in model.graph.output:  # let inference recompute pinned output shapes
        out.type.tensor_type.ClearField("shape")
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise ModelError(f"shape inference with pinned input shapes failed: {exc}") from None


def tensor_types(model) -> dict[str, tuple[tuple[int | None, ...], np.dtype]]:
    """Shape (None for unknown dims) and numpy dtype of every typed tensor in the graph."""
    onnx = _onnx()
    out = {}
    values = list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)
    for v in values:
        t = v.type.tensor_type
        if not t.elem_type:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim) if t.HasField("shape") else None
        out[v.name] = (shape, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)))
    for init in model.graph.initializer:
        out[init.name] = (tuple(init.dims), np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)))
    return out


def graph_inputs(model) -> list:
    """The real inputs (ValueInfoProto), not initializers listed as inputs by old exporters."""
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def example_feeds(specs, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the given ``(name, shape, dtype)``: normal floats, ones for integers
    (ones are valid token ids and attention masks)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape, dtype in specs:
        dtype = np.dtype(dtype)
        feeds[name] = (rng.standard_normal(shape).astype(dtype) if np.issubdtype(dtype, np.floating)
                       else np.ones(shape, dtype=dtype))
    return feeds
