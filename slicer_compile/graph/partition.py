"""Cut a model into its edge part and server part, by tensor name.

The inverse of a cut is ``onnx.compose.merge_models``; the test suite checks
that edge + server reproduce the full model exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from slicer_compile.errors import ModelError
from slicer_compile.frontend.onnx_model import MAX_IR_VERSION, graph_inputs
from slicer_compile.graph.cuts import Cut, check_separator


@dataclass(frozen=True)
class SplitPair:
    """The two halves of a model at one cut, before any codec is inserted."""

    cut: Cut
    edge: object  # onnx.ModelProto: graph inputs -> crossing tensors
    server: object  # onnx.ModelProto: crossing tensors -> graph outputs


class Partitioner:
    """Cuts one model at any number of cuts, reusing one ``onnx.utils.Extractor``
    (building it runs shape inference over the whole model)."""

    def __init__(self, model):
        from onnx.utils import Extractor

        self.model = model
        self._extractor = Extractor(model)
        self._inputs = [i.name for i in graph_inputs(model)]
        self._outputs = [o.name for o in model.graph.output]
        self._producer = {out: node for node in model.graph.node for out in node.output}

    def extract(self, inputs: list[str], outputs: list[str], name: str):
        """The subgraph computing ``outputs`` from ``inputs`` (and the weights it needs)."""
        import onnx

        check_separator(self.model, inputs, outputs)
        _ensure_value_info(self.model, inputs + outputs)
        try:
            part = self._extractor.extract_model(inputs, outputs)
        except Exception as exc:
            raise ModelError(f"cannot extract {name}: {exc}") from None
        part.graph.name = name
        part.ir_version = min(self.model.ir_version, MAX_IR_VERSION)
        del part.opset_import[:]
        part.opset_import.extend(self.model.opset_import)
        part.producer_name = "slicer-compile"
        # The model's own metadata (a recogniser's character set, labels, a version)
        # belongs to both halves: whoever runs a part may need it.
        del part.metadata_props[:]
        part.metadata_props.extend(self.model.metadata_props)
        onnx.checker.check_model(part)
        return part

    def split(self, cut: Cut) -> SplitPair:
        """Edge part (graph inputs -> crossing tensors) and server part (crossing -> outputs)."""
        crossing = cut.crossing_names
        edge_inputs = [n for n in self._inputs if self._is_ancestor(n, crossing)]
        edge = self.extract(edge_inputs, crossing, f"{cut.id}_edge")
        server = self.extract(crossing, self._outputs, f"{cut.id}_server")
        return SplitPair(cut, edge, server)

    def server_part(self, cut: Cut):
        return self.extract(cut.crossing_names, self._outputs, f"{cut.id}_server")

    def _is_ancestor(self, name: str, targets: list[str]) -> bool:
        """Whether graph input ``name`` is one of, or an ancestor of, ``targets``."""
        stack, seen = list(targets), set()
        while stack:
            t = stack.pop()
            if t == name:
                return True
            if t in seen or t not in self._producer:
                continue
            seen.add(t)
            stack.extend(self._producer[t].input)
        return False


def _ensure_value_info(model, names: list[str]) -> None:
    """Extractor needs a type for every boundary tensor; shape inference may have
    left one untyped (an op it cannot infer). Fail clearly instead of KeyError."""
    typed = {v.name for v in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)}
    typed |= {i.name for i in model.graph.initializer}
    untyped = [n for n in names if n not in typed]
    if untyped:
        raise ModelError(f"tensor(s) without an inferred type at the cut: {', '.join(untyped[:5])}")


def split_model(model, cut: Cut) -> SplitPair:
    """Edge and server parts of ``model`` at ``cut`` (one-off; see :class:`Partitioner`)."""
    return Partitioner(model).split(cut)
