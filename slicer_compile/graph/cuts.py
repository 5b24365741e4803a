"""Cut points: where a model can be split, found by tensor name on the DAG.

A cut is a prefix of the graph in topological order. Its *crossing set* is
every tensor available on the edge (produced in the prefix, or a graph input)
that is still needed after it (consumed later, or a graph output). Tensors
that depend only on weights and constants ("static") never cross: both sides
can compute them.

Each crossing tensor is an *activation* (a float feature map large next to the
others: it goes through the codec) or *side* (integer, or small: sent raw).
A cut is offered when it has at most ``max_activations`` activations and every
crossing tensor has a known shape. A cut with none sends everything raw (the
cloud-only cut of a model whose inputs are token ids, for instance). Any offered cut
separates the graph by construction; :func:`check_separator` checks that for
cuts that come from elsewhere.

This module decides; it never rewrites a model (``graph.partition`` does).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from slicer_compile.artifact import CrossingTensor  # noqa: F401 (the record graph/ produces)
from slicer_compile.errors import ModelError
from slicer_compile.frontend.onnx_model import graph_inputs, tensor_types

#: A float tensor goes through the codec if it has at least this many elements;
MIN_ACTIVATION_ELEMENTS = 64
#: it counts against a cut's limit on activations if it also has this share of the largest.
MIN_ACTIVATION_SHARE = 0.25


@dataclass(frozen=True)
class Cut:
    """A valid split: the first ``position`` non-static nodes run on the edge."""

    id: str
    position: int
    crossing: tuple[CrossingTensor, ...]

    @property
    def activations(self) -> tuple[CrossingTensor, ...]:
        return tuple(t for t in self.crossing if t.kind == "activation")

    @property
    def side(self) -> tuple[CrossingTensor, ...]:
        return tuple(t for t in self.crossing if t.kind == "side")

    @property
    def crossing_names(self) -> list[str]:
        return [t.name for t in self.crossing]


@dataclass(frozen=True)
class GraphOrder:
    """The nodes of a model as the cut analysis sees them."""

    nodes: tuple  # non-static NodeProtos in topological order
    static_nodes: tuple  # nodes computable from weights and constants alone
    static_tensors: frozenset[str]


def order_graph(model) -> GraphOrder:
    """Split nodes into static (weights/constants only) and the ordered rest."""
    static = {init.name for init in model.graph.initializer} | {""}
    nodes, static_nodes = [], []
    for node in model.graph.node:
        if all(name in static for name in node.input):
            static.update(node.output)
            static_nodes.append(node)
        else:
            nodes.append(node)
    return GraphOrder(tuple(nodes), tuple(static_nodes), frozenset(static))


def split_id(position: int) -> str:
    """Stable name of the cut after ``position`` edge nodes."""
    return f"s{position:04d}"


def classify(names: list[str], types: dict) -> tuple[CrossingTensor, ...] | None:
    """Crossing tensors with their kind; None if a shape is unknown. Every float tensor
    of at least ``MIN_ACTIVATION_ELEMENTS`` goes through the codec ("activation");
    integer tensors and tiny float ones travel raw ("side")."""
    sized = []
    for name in names:
        shape, dtype = types.get(name, (None, None))
        if shape is None or any(d is None for d in shape):
            return None
        sized.append((name, tuple(int(d) for d in shape), dtype))
    out = []
    for name, shape, dtype in sized:
        coded = np.issubdtype(dtype, np.floating) and math.prod(shape) >= MIN_ACTIVATION_ELEMENTS
        out.append(CrossingTensor(name, shape, str(dtype), "activation" if coded else "side"))
    return tuple(out)


def major_activations(crossing: tuple[CrossingTensor, ...]) -> int:
    """Coded tensors of at least ``MIN_ACTIVATION_SHARE`` of the largest: what a cut's
    limit on activations counts (a small float tensor beside a large one is coded too,
    but does not make the cut a multi-feature one)."""
    return len(_major_names(crossing))


def _major_names(crossing: tuple[CrossingTensor, ...] | None) -> set[str]:
    coded = [t for t in crossing or () if t.kind == "activation"]
    largest = max((t.num_elements for t in coded), default=0)
    return {t.name for t in coded if t.num_elements >= MIN_ACTIVATION_SHARE * largest}


#: Ops cheap enough to redo on the server rather than send what they make: elementwise
#: arithmetic, comparisons, casts and shape plumbing (what turns an integer attention
#: mask into an additive bias), never a matrix product or a convolution.
CHEAP_OPS = frozenset({
    "Cast", "Add", "Sub", "Mul", "Div", "Neg", "Not", "And", "Or", "Equal", "Less", "Greater", "LessOrEqual",
    "GreaterOrEqual", "Where", "Unsqueeze", "Squeeze", "Reshape", "Expand", "Shape", "Gather", "Concat", "Slice",
    "Transpose", "ConstantOfShape", "Range", "Identity", "Tile", "Min", "Max", "Clip", "CumSum",
})


class RecomputableSides:
    """Side tensors the server can compute itself from model inputs, by cheap ops only:
    at a cut, such a tensor is replaced in the crossing by those inputs where they
    are no more bytes (an int64 mask [B, S] instead of its float bias [B, 1, S, S]),
    and the server part then recomputes it (the partitioner extracts it with the rest).
    """

    def __init__(self, model, order: GraphOrder, types: dict):
        self._producer = {out: node for node in model.graph.node for out in node.output}
        self._inputs = {i.name for i in graph_inputs(model)}
        self._static = order.static_tensors
        self._types = types
        self._memo: dict[str, frozenset[str] | None] = {}

    def inputs_of(self, name: str) -> frozenset[str] | None:
        """The model inputs ``name`` is computed from by cheap ops alone; None if it needs more."""
        if name in self._memo:
            return self._memo[name]
        # Post-order without recursion (deep graphs would exhaust the limit): a tensor is
        # resolved once every input of its producer is.
        stack = [(name, False)]
        while stack:
            current, inputs_done = stack.pop()
            if current in self._memo:
                continue
            node = self._producer.get(current)
            pending = [] if node is None or current in self._static else [
                i for i in node.input if i and i not in self._memo]
            if inputs_done or not pending:
                self._memo[current] = self._resolve(current)
            else:
                stack.append((current, True))
                stack.extend((i, False) for i in pending)
        return self._memo[name]

    def _resolve(self, name: str) -> frozenset[str] | None:
        if name in self._inputs:
            return frozenset({name})
        if name in self._static or not name:
            return frozenset()
        node = self._producer.get(name)
        if node is None or node.op_type not in CHEAP_OPS:
            return None
        found: set[str] = set()
        for i in node.input:
            sub = self._memo.get(i) if i else frozenset()
            if sub is None:
                return None
            found |= sub
        return frozenset(found)

    def _nbytes(self, name: str) -> int | None:
        shape, dtype = self._types.get(name, (None, None))
        if shape is None or any(d is None for d in shape):
            return None
        return math.prod(shape) * np.dtype(dtype).itemsize

    def substitute(self, names: list[str], only: list[str], prefer: set[str] = frozenset()) -> list[str]:
        """``names`` with each recomputable tensor of ``only`` (the side and minor ones)
        replaced by its model inputs, where that sends no more bytes. The major
        activations stay: the cut is where the edge's work ends, not something to redo."""
        out = list(names)
        for name in only:
            if name in self._inputs:
                continue
            sources = self.inputs_of(name)
            size = self._nbytes(name)
            if not sources or size is None:
                continue
            added = [s for s in sorted(sources) if s not in out]
            added_bytes = [self._nbytes(s) for s in added]
            if None in added_bytes or (sum(added_bytes) > size and not sources & prefer):
                continue
            out = [n for n in out if n != name] + added
        return out


def padding_masks(model, types: dict) -> dict[str, tuple[int, ...]]:
    """Model inputs that are attention masks: integer or boolean, [batch, sequence], named
    as exporters name them (``attention_mask``, ``input_mask``, ``padding_mask``)."""
    found = {}
    for inp in graph_inputs(model):
        shape, dtype = types.get(inp.name, (None, None))
        if (shape is not None and len(shape) == 2 and None not in shape and "mask" in inp.name.lower()
                and (np.issubdtype(dtype, np.integer) or dtype == np.bool_)):
            found[inp.name] = tuple(shape)
    return found


def _with_padding_masks(crossing: tuple[CrossingTensor, ...], masks: dict) -> tuple[CrossingTensor, ...]:
    """Each major activation whose first two axes a crossing padding mask covers, marked
    with that mask (codec.padding: its padded rows are not coded)."""
    crossing_masks = {t.name: t.shape for t in crossing if t.name in masks and t.kind == "side"}
    major = _major_names(crossing)
    out = []
    for t in crossing:
        mask = next((m for m, shape in crossing_masks.items() if t.name in major and t.shape[:2] == shape), None)
        out.append(dataclasses.replace(t, mask=mask) if mask else t)
    return tuple(out)


def crossing_sets(model, order: GraphOrder | None = None) -> list[list[str]]:
    """For every prefix length p (0 … n-1), the names of the tensors crossing it.

    Names come in a deterministic order: graph inputs first, then by producer.
    """
    order = order or order_graph(model)
    static = order.static_tensors
    outputs = {o.name for o in model.graph.output}
    last_use: dict[str, int] = {}
    for pos, node in enumerate(order.nodes):
        for name in node.input:
            if name not in static:
                last_use[name] = pos
    n = len(order.nodes)
    for name in outputs:
        last_use[name] = n  # needed at the very end
    live: dict[str, None] = {i.name: None for i in graph_inputs(model) if i.name in last_use}
    sets = []
    for pos, node in enumerate(order.nodes):
        sets.append([name for name in live if last_use.get(name, -1) >= pos])
        live = {name: None for name in live if last_use.get(name, -1) > pos}
        for name in node.output:
            if name and name in last_use and name not in static:
                live[name] = None
    return sets


def find_cuts(concrete_model, max_activations: int = 1) -> list[Cut]:
    """The cuts worth offering, shallowest first.

    Args:
        concrete_model: a normalised model with every dimension known
            (``frontend.concretize``), so crossing tensors can be sized.
        max_activations: most codec-carried tensors a cut may have.
    Raises:
        ModelError: the model has no valid cut.
    """
    order = order_graph(concrete_model)
    if not order.nodes:
        raise ModelError("the model has no computation to split (every node is constant)")
    types = tensor_types(concrete_model)
    recomputable = RecomputableSides(concrete_model, order, types)
    masks = padding_masks(concrete_model, types)
    cuts, offered = [], set()
    for position, names in enumerate(crossing_sets(concrete_model, order)):
        crossing = classify(names, types)
        major = _major_names(crossing)
        minor = [t.name for t in crossing or () if t.name not in major]
        if minor:  # what the server can recompute from model inputs is not sent at all
            # A padding mask of a major activation is worth sending even where it is more
            # bytes than what it replaces: with it the padded rows are not coded.
            wanted = {m for m, shape in masks.items() if any(types[a][0][:2] == shape for a in major)}
            crossing = classify(recomputable.substitute(names, only=minor, prefer=wanted), types)
        if crossing is not None:
            crossing = _with_padding_masks(crossing, masks)
        if crossing is None:
            continue
        if major_activations(crossing) > max_activations:
            continue
        names = frozenset(t.name for t in crossing)
        if names in offered:
            continue  # the same tensors cross at a shallower cut: more edge work, nothing gained
        offered.add(names)
        cuts.append(Cut(split_id(position), position, crossing))
    if len(cuts) < 2:
        raise ModelError(
            f"the model has no valid cut: {len(order.nodes)} node(s), and fewer than two points where "
            f"at most {max_activations} activation tensor(s) cross"
        )
    return cuts


def check_separator(model, inputs: list[str], outputs: list[str]) -> None:
    """Raise ModelError unless ``outputs`` can be computed from ``inputs`` and weights alone.

    ``onnx.utils.Extractor`` gives a misleading "not topologically sorted" error
    for a cut that does not separate the graph (one inside a residual block);
    this says which tensors are missing instead.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    known = set(inputs) | {i.name for i in model.graph.initializer} | {""}
    missing, stack, seen = set(), list(outputs), set()
    while stack:
        name = stack.pop()
        if name in known or name in seen:
            continue
        seen.add(name)
        node = producer.get(name)
        if node is None:
            missing.add(name)
            continue
        stack.extend(node.input)
    if missing:
        raise ModelError(f"not a valid cut: {', '.join(sorted(missing)[:5])} would be needed but does not cross")
