"""A decoder-only LLM that someone else exported to ONNX with its KV cache as inputs and
outputs (``past_key_values.N.key`` in, ``present.N.key`` out, as optimum and
``torch.onnx`` exports of ``transformers`` models name them), cut into the parts
llm.export makes: ``embed``, one ``layer`` per decoder layer, ``head``, with the same
tensor names and contract, so everything after the export is shared.

How the layers are found, without knowing the exporter's op names or node order:

- every tensor is tagged with the *stream sources* its value depends on: the token ids
  and each layer's past cache. A ``Shape`` output depends on no value, so the rotary
  tables, the causal mask and the position arithmetic stay untagged: side computations
  that any part can redo.
- the hidden state entering layer i is a float tensor [B, S, H] that depends on the
  token ids and on the caches of layers 0..i-1 exactly, and through which alone (with
  the caches of layers i.. and the side computations) the rest of the model is
  computed. The residual stream is such a tensor twice per layer (after the attention
  and after the MLP); the boundary is the later one, made by the residual ``Add``.
- each part is extracted between its boundaries. A layer part keeps the attention
  mask and the positions as inputs (``attention_mask``, ``position_ids``, as the parts
  made from ``transformers`` have them: sequences of different lengths then share a
  batch, padded on the left); ``cache_position`` is computed inside from the cache's
  length, and a shape read from the token ids or from another layer's cache is read
  from the part's own hidden state or cache instead.
- the parts are then composed and checked against the whole model on a prefill and
  decode steps: they must give its logits, or the model is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slicer_compile.errors import ModelError
from slicer_compile.frontend.onnx_model import MAX_IR_VERSION, graph_inputs, load_onnx, tensor_types
from slicer_compile.llm.export import (
    ATTENTION_MASK,
    HIDDEN,
    HIDDEN_OUT,
    INPUT_IDS,
    LOGITS,
    PAST_KEY,
    PAST_VALUE,
    POSITION_IDS,
    PRESENT_KEY,
    PRESENT_VALUE,
    LlmParts,
)
from slicer_compile.llm.llama import LlamaSpec

#: ``past_key_values.3.key``, ``present.3.value``, ``past_key_3``, ``present_value.3``
_KV_SUFFIX = re.compile(r"[._/](\d+)[._/](key|value)$", re.IGNORECASE)
_KV_PREFIX = re.compile(r"[._/]?(key|value)[._/]?(\d+)$", re.IGNORECASE)
#: side inputs the parts can compute for themselves (see module docstring)
MASK, POSITIONS, CACHE_POSITION = "mask", "positions", "cache_position"

#: Side inputs a layer part keeps as inputs, under the names of llm.export, so that
#: sequences of different lengths can share a batch (padded caches, masked); the rest
#: (cache_position: positions in the padded batch) are computed inside.
KEPT = {MASK: ATTENTION_MASK, POSITIONS: POSITION_IDS}

#: A part reproduces the model if its logits are this close (relative to their scale):
#: the same float32 arithmetic, regrouped.
LOGITS_TOLERANCE = 1e-4


@dataclass(frozen=True)
class KvLayout:
    """Where a model's cache and side inputs are: per layer (past key, past value,
    present key, present value); the token-id input, the logits output; the side
    inputs by kind."""

    layers: tuple[tuple[str, str, str, str], ...]
    input_ids: str
    logits: str
    side: dict[str, str]  # input name -> MASK | POSITIONS | CACHE_POSITION

    @property
    def num_layers(self) -> int:
        return len(self.layers)


def _kv_index(name: str) -> tuple[int, str] | None:
    found = _KV_SUFFIX.search(name)
    if found:
        return int(found.group(1)), found.group(2).lower()
    found = _KV_PREFIX.search(name)
    if found:
        return int(found.group(2)), found.group(1).lower()
    return None


def _cache_names(names: list[str], word: str, what: str, source: str) -> dict[int, dict[str, str]]:
    found: dict[int, dict[str, str]] = {}
    for name in names:
        index = _kv_index(name)
        if index is None or word not in name.lower():
            continue
        layer, kind = index
        if kind in found.setdefault(layer, {}):
            raise ModelError(f"{source}: two {what} {kind} tensors for layer {layer} "
                             f"({found[layer][kind]!r}, {name!r})")
        found[layer][kind] = name
    return found


def find_kv_layout(model, source: str) -> KvLayout:
    """The cache, token-id, logits and side tensors of an exported decoder-only LLM.

    Raises:
        ModelError: no KV cache (not an export "with past"), an incomplete one, or an
            input or output that the split runtime cannot provide or use.
    """
    inputs = [i.name for i in graph_inputs(model)]
    outputs = [o.name for o in model.graph.output]
    past = _cache_names(inputs, "past", "past", source)
    present = _cache_names(outputs, "present", "present", source)
    if not past:
        raise ModelError(f"{source}: no KV-cache inputs (past_key_values.N.key/value): export the model with its "
                         "cache (a 'with past' / use_cache=True export) to split it token by token")
    layers = []
    for i in range(len(past)):
        kinds, outs = past.get(i, {}), present.get(i, {})
        if set(kinds) != {"key", "value"} or set(outs) != {"key", "value"}:
            raise ModelError(f"{source}: layer {i} lacks a past or present key/value (found layers "
                             f"{sorted(past)} in, {sorted(present)} out)")
        layers.append((kinds["key"], kinds["value"], outs["key"], outs["value"]))
    if sorted(present) != list(range(len(past))):
        raise ModelError(f"{source}: present outputs for layers {sorted(present)} but past inputs for "
                         f"{sorted(past)}")
    cache_inputs = {n for layer in layers for n in layer[:2]}
    cache_outputs = {n for layer in layers for n in layer[2:]}
    rest_in = [n for n in inputs if n not in cache_inputs]
    ids = [n for n in rest_in if n in ("input_ids", "tokens", "token_ids", "ids")]
    if len(ids) != 1:
        raise ModelError(f"{source}: cannot tell the token-id input among {rest_in} (expected 'input_ids')")
    side = {}
    for name in rest_in:
        lowered = name.lower()
        if name == ids[0]:
            continue
        if "mask" in lowered:
            side[name] = MASK
        elif lowered == "cache_position":
            side[name] = CACHE_POSITION
        elif "position" in lowered:
            side[name] = POSITIONS
        else:
            raise ModelError(f"{source}: input {name!r} is not one the split runtime provides (token ids, an "
                             "attention mask, positions, the KV cache)")
    rest_out = [n for n in outputs if n not in cache_outputs]
    if len(rest_out) != 1:
        raise ModelError(f"{source}: expected one logits output beside the cache, found {rest_out}")
    return KvLayout(tuple(layers), ids[0], rest_out[0], side)


def _check_cache_shapes(types: dict, layout: KvLayout, source: str) -> tuple[int, int]:
    """(KV heads, head dim): the cache must be float32 [batch, heads, past, head_dim]
    with the past length symbolic, alike in every layer."""
    seen = set()
    for name in (n for layer in layout.layers for n in layer[:2]):
        shape, dtype = types.get(name, (None, None))
        if dtype != np.float32:
            raise ModelError(f"{source}: the cache input {name!r} is {dtype}; only float32 exports are supported "
                             "(export in float32 and let the compiler quantise the edge's weights)")
        if shape is None or len(shape) != 4:
            raise ModelError(f"{source}: the cache input {name!r} is not 4-D [batch, heads, past, head_dim]")
        if shape[2] is not None:
            raise ModelError(f"{source}: the cache input {name!r} has a fixed length {shape[2]} on axis 2; the "
                             "layout [batch, heads, past_sequence, head_dim] with a symbolic past is expected")
        if shape[1] is None or shape[3] is None:
            raise ModelError(f"{source}: the cache input {name!r} has no fixed heads/head_dim "
                             f"({shape}); cannot find the KV layout [batch, heads, past, head_dim]")
        seen.add((shape[1], shape[3]))
    if len(seen) != 1:
        raise ModelError(f"{source}: the layers' caches differ in shape ({sorted(seen)})")
    return seen.pop()


def _embedding(model, input_ids: str, source: str) -> tuple[int, int]:
    """(vocabulary, hidden size) from the token embedding: a Gather of an [V, H] weight by the ids."""
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == input_ids:
            dims = weights.get(node.input[0])
            if dims is not None and len(dims) == 2:
                return int(dims[0]), int(dims[1])
    raise ModelError(f"{source}: cannot find the token embedding (a Gather of a [vocab, hidden] weight by "
                     f"{input_ids!r})")


def _stream_tags(model, sources: dict[str, int]) -> dict[str, int]:
    """Per tensor, the bitmask of stream sources its value depends on; shapes depend on none."""
    tags = dict(sources)
    for node in model.graph.node:
        if node.op_type in ("Shape", "Size"):
            tag = 0
        else:
            tag = 0
            for name in [*node.input, *_outer_names(node)]:
                tag |= tags.get(name, 0)
        for out in node.output:
            tags[out] = tag
    return tags


def _outer_names(node) -> list[str]:
    """Tensors a node's subgraphs (If, Loop, Scan) read from the enclosing graph."""
    names = []
    for attr in node.attribute:
        for graph in [attr.g] if attr.HasField("g") else list(attr.graphs):
            local = {i.name for i in graph.input} | {i.name for i in graph.initializer}
            for inner in graph.node:
                names += [n for n in [*inner.input, *_outer_names(inner)] if n and n not in local]
                local.update(inner.output)
    return names


class _Boundaries:
    """The residual-stream tensor entering each layer and the head (see module docstring)."""

    def __init__(self, model, layout: KvLayout, hidden_size: int):
        self._producer = {out: node for node in model.graph.node for out in node.output}
        self._layout = layout
        self._ids_bit = 1
        sources = {layout.input_ids: self._ids_bit}
        for i, (key, value, _, _) in enumerate(layout.layers):
            sources[key] = sources[value] = self._layer_bit(i)
        self._sources = sources
        self.tags = _stream_tags(model, sources)
        types = tensor_types(model)
        self._order = [out for node in model.graph.node for out in node.output]
        self._hidden_like = {
            name for name in self._order
            if (t := types.get(name)) and t[1] == np.float32 and t[0] is not None and len(t[0]) == 3
            and t[0][2] in (hidden_size, None)}

    @staticmethod
    def _layer_bit(i: int) -> int:
        return 1 << (i + 1)

    def entering(self, i: int) -> str | None:
        """The hidden state entering layer ``i`` (``i == L``: the head), or None."""
        want = self._ids_bit | sum(self._layer_bit(j) for j in range(i))
        candidates = [n for n in self._order if n in self._hidden_like and self.tags.get(n) == want]
        separators = [n for n in reversed(candidates) if self._separates(n, i, want)]
        if not separators:
            return None
        made_by_add = [n for n in separators if self._producer[n].op_type == "Add"]
        return (made_by_add or separators)[0]

    def _separates(self, candidate: str, i: int, want: int) -> bool:
        """Whether layers i.. and the logits are computed from ``candidate``, their own
        caches and side computations alone: walking back from them reaches no token
        id or earlier cache except through ``candidate``."""
        targets = [n for layer in self._layout.layers[i:] for n in layer[2:]] + [self._layout.logits]
        stack, seen = targets, set()
        while stack:
            name = stack.pop()
            if name in seen or name == candidate:
                continue
            seen.add(name)
            tag = self.tags.get(name, 0)
            if not tag & want:
                continue  # side computations and later caches: every part has them
            if name in self._sources:
                return False
            node = self._producer.get(name)
            if node is not None:
                stack.extend(n for n in [*node.input, *_outer_names(node)] if n)
        return True


def read_onnx_llm(path: str | Path) -> tuple[LlamaSpec, LlmParts]:
    """The spec and parts of an ONNX decoder-only LLM exported with its KV cache.

    Raises:
        ModelError: not such an export, a layout or a side input it cannot handle, or
            parts that do not reproduce the model (one line saying which).
    """
    path = Path(path)
    source = str(path)
    model = load_onnx(path)
    layout = find_kv_layout(model, source)
    types = tensor_types(model)
    kv_heads, head_dim = _check_cache_shapes(types, layout, source)
    vocab, hidden = _embedding(model, layout.input_ids, source)
    boundaries = _Boundaries(model, layout, hidden)
    entering = []
    for i in range(layout.num_layers + 1):
        name = boundaries.entering(i)
        if name is None:
            where = f"layer {i}" if i < layout.num_layers else "the head"
            raise ModelError(f"{source}: cannot find the hidden state entering {where} (no single float "
                             f"[batch, sequence, {hidden}] tensor separates it): not a decoder-only stack of layers")
        entering.append(name)
    cutter = _PartCutter(model, layout, types, boundaries.tags, source)
    parts = LlmParts(
        cutter.embed(entering[0]),
        tuple(cutter.layer(i, entering[i], entering[i + 1]) for i in range(layout.num_layers)),
        cutter.head(entering[-1]))
    heads = _attention_heads(parts.layers[0], hidden, kv_heads, head_dim)
    spec = LlamaSpec(vocab, hidden, layout.num_layers, heads, kv_heads, head_dim,
                     _intermediate_size(parts.layers[0], hidden), None, None)
    check_parts_reproduce(model, layout, spec, parts, source)
    return spec, parts


class _PartCutter:
    """Extracts each part and makes it self-contained (see module docstring)."""

    def __init__(self, model, layout: KvLayout, types: dict, tags: dict[str, int], source: str):
        from slicer_compile.graph.partition import Partitioner

        self._tags = tags

        self._model = model
        self._partitioner = Partitioner(model)
        self._producer = {out: node for node in model.graph.node for out in node.output}
        self._inputs = {i.name for i in graph_inputs(model)}
        self._layout = layout
        self._types = types
        self._source = source
        self._caches = {n: i for i, layer in enumerate(layout.layers) for n in layer[:2]}

    def _side_inputs(self, known: list[str], outputs: list[str]) -> list[str]:
        """What a part reads besides ``known``: graph inputs (side ones, or token ids and
        caches for their shape only), and tensors from before the part whose shape alone
        it reads (the embedding's, to size a mask): each is then replaced."""
        stack, seen, found = list(outputs), set(known), []
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            node = self._producer.get(name)
            if name in self._inputs:
                found.append(name)
            elif node is not None and node.op_type == "Shape" and not self._computable(node.input[0], known):
                found.append(node.input[0])
            elif node is not None:
                stack.extend(n for n in node.input if n)
        return sorted(set(found))

    def _computable(self, name: str, known: list[str]) -> bool:
        """Whether ``name`` is computed from ``known`` and side inputs (no other token
        ids or caches): inside the part, not before it."""
        stack, seen = [name], set(known)
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            if current in self._caches or current == self._layout.input_ids:
                return False
            node = self._producer.get(current)
            if node is None or not self._tags.get(current, 0):
                continue  # side computations: the main walk goes through them
            stack.extend(n for n in node.input if n)
        return True

    def _extract(self, known: list[str], outputs: list[str], name: str):
        side = self._side_inputs(known, outputs)
        return self._partitioner.extract(known + side, outputs, name), side

    def _alias_of(self, name: str) -> str:
        """The graph input ``name`` copies (through Identity, Cast, a one-input Concat), or itself."""
        node = self._producer.get(name)
        while node is not None and (node.op_type in ("Identity", "Cast")
                                    or (node.op_type == "Concat" and len(node.input) == 1)):
            name = node.input[0]
            node = self._producer.get(name)
        return name

    def _replace_side(self, rewrite: "_Rewrite", name: str, has_cache: bool) -> None:
        """Replace side input ``name`` of a layer part (``has_cache``) or the head."""
        shape, _ = self._types.get(name, (None, None))
        alias = self._alias_of(name)
        if alias == self._layout.input_ids:
            rewrite.shape_from(name, HIDDEN, rank=2)
        elif alias in self._caches and has_cache:
            rewrite.shape_from(name, PAST_KEY, rank=4)
        elif name in self._layout.side and has_cache and self._layout.side[name] in KEPT:
            rewrite.keep(name, KEPT[self._layout.side[name]])
        elif name in self._layout.side and has_cache:
            rewrite.computed(name, self._layout.side[name])
        elif name not in self._inputs and shape is not None and len(shape) == 3:
            rewrite.shape_from(name, HIDDEN, rank=3)  # a hidden state from before the part
        else:
            raise ModelError(f"{self._source}: {rewrite.what} reads {name!r}, which it cannot compute from its "
                             "own hidden state and cache")

    def embed(self, hidden: str) -> bytes:
        ids = self._layout.input_ids
        part, side = self._extract([ids], [hidden], "embed")
        if side:
            raise ModelError(f"{self._source}: the embedding also reads {side} (learned positions?): only "
                             "token embeddings are supported (a Llama-family layout)")
        return _Rewrite(part, self._source, "embed").rename({ids: INPUT_IDS, hidden: HIDDEN}).done(
            [INPUT_IDS], [HIDDEN])

    def layer(self, i: int, hidden: str, hidden_out: str) -> bytes:
        key, value, present_key, present_value = self._layout.layers[i]
        part, side = self._extract([hidden, key, value], [hidden_out, present_key, present_value], f"layer_{i:03d}")
        rewrite = _Rewrite(part, self._source, f"layer {i}").rename(
            {hidden: HIDDEN, key: PAST_KEY, value: PAST_VALUE, hidden_out: HIDDEN_OUT, present_key: PRESENT_KEY,
             present_value: PRESENT_VALUE})
        for name in side:
            self._replace_side(rewrite, name, has_cache=True)
        kept = [n for n in (ATTENTION_MASK, POSITION_IDS) if n in rewrite.kept]
        return rewrite.done([HIDDEN, PAST_KEY, PAST_VALUE, *kept], [HIDDEN_OUT, PRESENT_KEY, PRESENT_VALUE])

    def head(self, hidden: str) -> bytes:
        logits = self._layout.logits
        part, side = self._extract([hidden], [logits], "head")
        rewrite = _Rewrite(part, self._source, "the head").rename({hidden: HIDDEN, logits: LOGITS})
        for name in side:
            self._replace_side(rewrite, name, has_cache=False)
        return rewrite.done([HIDDEN], [LOGITS])


class _Rewrite:
    """One extracted part under onnx-graphsurgeon: canonical names, side inputs replaced."""

    def __init__(self, part, source: str, what: str):
        import onnx_graphsurgeon as gs

        self._gs = gs
        self._part = part
        self._graph = gs.import_onnx(part)
        self._source = source
        self.what = what
        self._made: dict[str, object] = {}
        self.kept: set[str] = set()

    def rename(self, names: dict[str, str]) -> "_Rewrite":
        tensors = self._graph.tensors()
        for new in names.values():  # a model tensor already called so steps aside
            if new in tensors and new not in names:
                tensors[new].name = f"{new}__model"
        for old, new in names.items():
            tensors[old].name = new
        return self

    def _tensor(self, name: str):
        return next(t for t in self._graph.inputs if t.name == name)

    def _replace(self, old, new) -> None:
        for node in list(old.outputs):
            _rewire(node, old, new)
        self._graph.inputs = [t for t in self._graph.inputs if t is not old]

    def _op(self, op: str, inputs: list, dtype, attrs: dict | None = None):
        name = self._graph.layer(op=op, inputs=inputs, outputs=[self._unique(op.lower())], attrs=attrs or {})[0]
        name.dtype = dtype
        return name

    def _unique(self, stem: str) -> str:
        existing = self._graph.tensors()
        n = 0
        while f"slicer_{stem}_{n}" in existing:
            n += 1
        return f"slicer_{stem}_{n}"

    def _const(self, value: np.ndarray):
        return self._gs.Constant(self._unique("const"), np.asarray(value))

    def _lengths(self):
        """(batch [1], new tokens [1], past tokens [1], total [1]) as int64 tensors, made once."""
        if not self._made:
            hidden, past = self._tensor(HIDDEN), self._tensor(PAST_KEY)
            batch = self._op("Shape", [hidden], np.int64, {"start": 0, "end": 1})
            seq = self._op("Shape", [hidden], np.int64, {"start": 1, "end": 2})
            before = self._op("Shape", [past], np.int64, {"start": 2, "end": 3})
            self._made = {"batch": batch, "seq": seq, "past": before,
                          "total": self._op("Add", [before, seq], np.int64)}
        m = self._made
        return m["batch"], m["seq"], m["past"], m["total"]

    def shape_from(self, name: str, like: str, rank: int) -> None:
        """Every ``Shape`` of input ``name`` read from ``like`` instead (same leading axes)."""
        old, source = self._tensor(name), next(t for t in self._graph.inputs if t.name == like)
        for node in list(old.outputs):
            if node.op != "Shape":
                raise ModelError(f"{self._source}: {self.what} reads the values of {name!r} ({node.op} "
                                 f"{node.name!r}); a part may only use its shape")
            start, end = node.attrs.get("start", 0), node.attrs.get("end", rank)
            start, end = (start + rank if start < 0 else start), (end + rank if end < 0 else end)
            node.attrs["start"], node.attrs["end"] = max(0, start), min(end, rank)
            _rewire(node, old, source)
        self._graph.inputs = [t for t in self._graph.inputs if t is not old]

    def keep(self, name: str, canonical: str) -> None:
        """Side input ``name`` stays an input, as ``canonical`` and int64 (cast inside to
        the model's own type where that differs)."""
        old = self._tensor(name)
        if np.dtype(old.dtype) == np.int64:
            self.rename({name: canonical})
        else:
            made = self._gs.Variable(canonical, dtype=np.int64, shape=old.shape)
            self._graph.inputs.append(made)
            cast = self._op("Cast", [made], np.dtype(old.dtype), {"to": _onnx_type(old.dtype)})
            self._replace(old, cast)
        self.kept.add(canonical)

    def computed(self, name: str, kind: str) -> None:
        """Side input ``name`` computed in the part: the positions past .. past + S - 1
        of the (padded) batch, what ``cache_position`` is."""
        assert kind == CACHE_POSITION, kind
        old = self._tensor(name)
        dtype = np.dtype(old.dtype)
        _, _, past, total = self._lengths()
        scalar = self._const(np.array([0], np.int64))
        start = self._op("Squeeze", [past, scalar], np.int64)
        stop = self._op("Squeeze", [total, scalar], np.int64)
        made = self._op("Range", [start, stop, self._const(np.array(1, np.int64))], np.int64)
        if dtype != np.int64:
            made = self._op("Cast", [made], dtype, {"to": _onnx_type(dtype)})
        self._replace(old, made)

    def done(self, inputs: list[str], outputs: list[str]) -> bytes:
        import onnx

        tensors = self._graph.tensors()
        self._graph.inputs = [tensors[n] for n in inputs]
        self._graph.outputs = [tensors[n] for n in outputs]
        self._graph.cleanup().toposort()
        model = self._gs.export_onnx(self._graph)
        model.ir_version = min(self._part.ir_version, MAX_IR_VERSION)
        del model.opset_import[:]
        model.opset_import.extend(self._part.opset_import)
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            raise ModelError(f"{self._source}: the part for {self.what} is not valid ONNX: "
                             f"{str(exc).strip().splitlines()[0]}") from None
        return model.SerializeToString()


def _rewire(node, old, new) -> None:
    """``node`` reads ``new`` wherever it read ``old`` (index by index: graphsurgeon
    keeps each tensor's consumer list in step with these assignments)."""
    for j, tensor in enumerate(node.inputs):
        if tensor is old:
            node.inputs[j] = new


def _onnx_type(dtype) -> int:
    import onnx

    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _attention_heads(layer: bytes, hidden: int, kv_heads: int, head_dim: int) -> int:
    """Query heads of a layer part: axis 1 of its attention scores (the Softmax input)
    once shapes are known, else the Q projection's width over the head dim."""
    import onnx

    model = onnx.load_from_string(layer)
    for value in list(model.graph.input):
        dims = value.type.tensor_type.shape.dim
        for axis, size in enumerate({HIDDEN: [1, 2, hidden], PAST_KEY: [1, kv_heads, 3, head_dim],
                                     PAST_VALUE: [1, kv_heads, 3, head_dim], ATTENTION_MASK: [1, 5],
                                     POSITION_IDS: [1, 2]}[value.name]):
            dims[axis].Clear()
            dims[axis].dim_value = size
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    types = tensor_types(model)
    for node in model.graph.node:
        if node.op_type == "Softmax":
            shape = types.get(node.input[0], (None,))[0]
            if shape and len(shape) == 4 and shape[1] and shape[1] % kv_heads == 0:
                return int(shape[1])
    return hidden // head_dim if (hidden // head_dim) % kv_heads == 0 else kv_heads


def _intermediate_size(layer: bytes, hidden: int) -> int | None:
    """The MLP width: the other axis of the three projection weights that share it
    (gate, up [H, I] and down [I, H]); None where the weights do not show it."""
    import onnx

    model = onnx.load_from_string(layer)
    counts: dict[int, int] = {}
    for init in model.graph.initializer:
        if len(init.dims) == 2 and hidden in init.dims:
            other = init.dims[1] if init.dims[0] == hidden else init.dims[0]
            if other != hidden:
                counts[int(other)] = counts.get(int(other), 0) + 1
    shared = [size for size, n in counts.items() if n >= 3]
    return max(shared) if shared else None


def full_model_feeds(layout: KvLayout, types: dict, ids: np.ndarray, caches: list[tuple[np.ndarray, np.ndarray]]
                     ) -> dict[str, np.ndarray]:
    """What the whole exported model is fed for new tokens ``ids`` after ``caches``."""
    past = caches[0][0].shape[2]
    feeds = {layout.input_ids: ids.reshape(1, -1).astype(types[layout.input_ids][1])}
    for name, kind in layout.side.items():
        dtype = types[name][1]
        if kind == MASK:
            feeds[name] = np.ones((1, past + ids.size), dtype)
        elif kind == POSITIONS:
            feeds[name] = np.arange(past, past + ids.size, dtype=dtype).reshape(1, -1)
        else:
            feeds[name] = np.arange(past, past + ids.size, dtype=dtype)
    for (key, value, _, _), (k, v) in zip(layout.layers, caches):
        feeds[key], feeds[value] = k, v
    return feeds


def check_parts_reproduce(model, layout: KvLayout, spec: LlamaSpec, parts: LlmParts, source: str,
                          prompt_tokens: int = 7, steps: int = 3) -> None:
    """The composed parts give the whole model's logits on a prefill and ``steps``
    greedy decode steps, or ModelError."""
    from slicer_compile.backends.onnxrt import OnnxrtRunner
    from slicer_compile.llm.stack import split_stacks

    types = tensor_types(model)
    empty = np.zeros((1, spec.num_kv_heads, 0, spec.head_dim), np.float32)
    caches = [(empty, empty)] * spec.num_layers
    ids = np.random.default_rng(0).integers(0, spec.vocab_size, prompt_tokens)
    edge, server = split_stacks(spec, parts, spec.num_layers)
    try:
        with OnnxrtRunner(model.SerializeToString(), name="whole model", optimize=True) as whole:
            for step in range(steps + 1):
                out = whole.infer(full_model_feeds(layout, types, ids, caches))
                caches = [(out[k], out[v]) for _, _, k, v in layout.layers]
                expected = out[layout.logits]
                got = server.logits(server.forward(edge.forward(edge.embed(ids))))
                scale = max(1.0, float(np.abs(expected).max()))
                error = float(np.abs(got - expected).max()) if got.shape == expected.shape else np.inf
                if not error <= LOGITS_TOLERANCE * scale:
                    raise ModelError(f"{source}: the layer parts cut from the model do not reproduce it (logits "
                                     f"differ by {error:.3g} at step {step}): its layers are not separable here")
                ids = np.array([int(np.argmax(expected[0, -1]))])
    finally:
        edge.close()
        server.close()
