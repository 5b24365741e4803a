"""TensorRT layer names back to ONNX nodes.

The ONNX parser names each layer after its node; the builder then fuses: ``a + b``
(fused pointwise chain), ``PWN(a, b)``, ``{ForeignNode[first...last]}`` (a
Myelin region: every node from first to last in graph order), reformat layers
(``Reformatting CopyNode for Input Tensor 0 to conv``). A layer's time is shared by
the nodes it holds in proportion to their roofline weight (FLOPs, or bytes moved
for nodes without FLOPs); a layer that names no node is reported as unmapped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FOREIGN = re.compile(r"\{ForeignNode\[(.+?)\.\.\.(.+?)\]\}")
# Characters that can belong to an ONNX node name: a match must not continue into one.
_NAME_CHAR = re.compile(r"[A-Za-z0-9_./:\-]")


@dataclass(frozen=True)
class LayerTime:
    """One engine layer: its median time and the ONNX nodes it ran (several when fused,
    none for a layer TensorRT added, such as a reformat). Profiles keep a table of them."""

    layer: str
    latency_s: float
    nodes: tuple[str, ...]

    @property
    def fused(self) -> bool:
        return len(self.nodes) > 1


def nodes_of_layer(layer: str, node_order: list[str]) -> tuple[str, ...]:
    """The ONNX nodes (in graph order) a TensorRT layer name covers."""
    index = {name: i for i, name in enumerate(node_order)}
    found: set[str] = set()
    for match in _FOREIGN.finditer(layer):
        first, last = match.group(1), match.group(2)
        if first in index and last in index:
            lo, hi = sorted((index[first], index[last]))
            found.update(node_order[lo: hi + 1])
    remainder = _FOREIGN.sub(" ", layer)
    # Longest names first, so that "conv1" does not claim the layer of "conv1_relu".
    for name in sorted(index, key=len, reverse=True):
        start = remainder.find(name)
        while start >= 0:
            end = start + len(name)
            before = remainder[start - 1] if start > 0 else " "
            after = remainder[end] if end < len(remainder) else " "
            if not _NAME_CHAR.match(before) and not _NAME_CHAR.match(after):
                found.add(name)
                remainder = remainder[:start] + " " * len(name) + remainder[end:]
                break
            start = remainder.find(name, start + 1)
    return tuple(sorted(found, key=index.__getitem__))


def attribute_layer_times(layer_times: dict[str, float], node_order: list[str],
                          node_weight: dict[str, float]) -> tuple[dict[str, float], list[LayerTime]]:
    """Per-node latency from per-layer latency.

    Returns:
        ({node: seconds}, [LayerTime for every layer, unmapped ones with no nodes]).
    """
    per_node = {name: 0.0 for name in node_order}
    layers = []
    for layer, seconds in layer_times.items():
        nodes = nodes_of_layer(layer, node_order)
        layers.append(LayerTime(layer, seconds, nodes))
        if not nodes:
            continue
        weights = [max(node_weight.get(n, 0.0), 0.0) for n in nodes]
        total = sum(weights)
        for node, weight in zip(nodes, weights):
            per_node[node] += seconds * (weight / total if total > 0 else 1.0 / len(nodes))
    return per_node, layers
