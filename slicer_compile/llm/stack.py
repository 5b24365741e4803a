"""Running the parts token by token: a stack of decoder layers with the KV cache of
each, on one side of a cut. The edge holds the embedding and layers 1..ℓ, the server
layers ℓ+1..L and the head; between them crosses the hidden state of the new tokens.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from slicer_compile.backends.onnxrt import OnnxrtRunner
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
)
from slicer_compile.llm.llama import LlamaSpec


def part_inputs(blob: bytes) -> frozenset[str]:
    """The input names of a part (a layer part from before the padding mask has none)."""
    import onnx

    return frozenset(i.name for i in onnx.load_from_string(blob).graph.input)


def layer_feeds(inputs: frozenset[str], hidden: np.ndarray, past_key: np.ndarray, past_value: np.ndarray,
                mask: np.ndarray | None = None, positions: np.ndarray | None = None) -> dict:
    """What a layer part is fed: without ``mask``/``positions``, sequences with no
    padding (every key seen, positions from the past length on)."""
    feeds = {HIDDEN: hidden, PAST_KEY: past_key, PAST_VALUE: past_value}
    batch, new, past = hidden.shape[0], hidden.shape[1], past_key.shape[2]
    if ATTENTION_MASK in inputs:
        feeds[ATTENTION_MASK] = mask if mask is not None else np.ones((batch, past + new), np.int64)
    if POSITION_IDS in inputs:
        feeds[POSITION_IDS] = positions if positions is not None else np.broadcast_to(
            np.arange(past, past + new, dtype=np.int64), (batch, new))
    return feeds


class LayerStack:
    """Decoder layers ``first..first+len(layers)-1`` (optionally the embedding before
    them and the head after), each with its own KV cache, for one sequence."""

    def __init__(self, spec: LlamaSpec, layers: Sequence[bytes], embed: bytes | None = None,
                 head: bytes | None = None):
        self.spec = spec
        self._embed = OnnxrtRunner(embed, name="embed", optimize=True).activate() if embed else None
        self._layers = [OnnxrtRunner(m, name=f"layer{i}", optimize=True).activate() for i, m in enumerate(layers)]
        self._inputs = [part_inputs(m) for m in layers]
        self._head = OnnxrtRunner(head, name="head", optimize=True).activate() if head else None
        self.reset()

    def reset(self) -> None:
        """Forget the sequence: every layer's cache empty."""
        empty = np.zeros((1, self.spec.num_kv_heads, 0, self.spec.head_dim), np.float32)
        self.caches = [(empty, empty) for _ in self._layers]

    @property
    def length(self) -> int:
        """Tokens in the caches (0 for a stack without layers)."""
        return self.caches[0][0].shape[2] if self.caches else 0

    def embed(self, token_ids: np.ndarray) -> np.ndarray:
        return self._embed.infer({INPUT_IDS: np.asarray(token_ids, np.int64).reshape(1, -1)})[HIDDEN]

    def forward(self, hidden: np.ndarray) -> np.ndarray:
        """The new tokens' hidden states [1, S, H] through every layer, caches grown by S."""
        for i, layer in enumerate(self._layers):
            past_key, past_value = self.caches[i]
            out = layer.infer(layer_feeds(self._inputs[i], hidden, past_key, past_value))
            hidden = out[HIDDEN_OUT]
            self.caches[i] = (out[PRESENT_KEY], out[PRESENT_VALUE])
        return hidden

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        return self._head.infer({HIDDEN: hidden})[LOGITS]

    @property
    def kv_bytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.caches)

    def close(self) -> None:
        for runner in [self._embed, *self._layers, self._head]:
            if runner is not None:
                runner.deactivate()


def split_stacks(spec: LlamaSpec, parts, cut: int, edge_parts=None) -> tuple[LayerStack, LayerStack]:
    """The edge stack (embedding, layers 1..cut of ``edge_parts``, default ``parts``:
    the quantised copies where OPSC applies) and the server stack (layers cut+1..L,
    head) of ``parts`` (``export.LlmParts``)."""
    if not 0 <= cut <= spec.num_layers:
        raise ValueError(f"cut must be a layer boundary 0..{spec.num_layers}, got {cut}")
    edge_parts = edge_parts or parts
    return (LayerStack(spec, edge_parts.layers[:cut], embed=edge_parts.embed),
            LayerStack(spec, parts.layers[cut:], head=parts.head))


def generate_greedy(edge: LayerStack, server: LayerStack, prompt: Sequence[int], new_tokens: int,
                    crossing=None) -> list[int]:
    """Greedy generation through a split: the prompt in one prefill, then one token per
    step. ``crossing(hidden) -> hidden`` is what the hidden state goes through between
    the sides (default: nothing: the exact split)."""
    crossing = crossing or (lambda h: h)
    edge.reset()
    server.reset()
    hidden = edge.forward(edge.embed(np.asarray(prompt)))
    tokens = []
    for _ in range(new_tokens):
        logits = server.logits(server.forward(crossing(hidden)))
        token = int(np.argmax(logits[0, -1]))
        tokens.append(token)
        hidden = edge.forward(edge.embed(np.array([token])))
    return tokens


class PartRunners:
    """The ONNX Runtime sessions of an LLM's parts, made once and shared by every
    sequence a server runs (a session per part, not per sequence); the caches live with
    the sequences. ``max_batch``: how many sequences one call may carry (1 where an
    export fixed the batch axis at 1)."""

    def __init__(self, spec: LlamaSpec, parts, threads: int = 0):
        self.spec = spec
        make = lambda blob, name: OnnxrtRunner(blob, name=name, optimize=True, threads=threads).activate()  # noqa: E731
        self._embed = make(parts.embed, "embed")
        self._layers = [make(blob, f"layer{i}") for i, blob in enumerate(parts.layers)]
        self._inputs = [part_inputs(blob) for blob in parts.layers]
        self._head = make(parts.head, "head")
        self.max_batch = 1 if _fixed_batch(parts.layers[0]) else None
        #: whether sequences of different lengths can share a batch (padded, masked)
        self.ragged = all({ATTENTION_MASK, POSITION_IDS} <= names for names in self._inputs)

    def embed(self, token_ids: np.ndarray) -> np.ndarray:
        """Token ids [B, S] -> hidden states [B, S, H]."""
        return self._embed.infer({INPUT_IDS: np.asarray(token_ids, np.int64)})[HIDDEN]

    def forward(self, first: int, hidden: np.ndarray, caches: list[tuple[np.ndarray, np.ndarray]],
                mask: np.ndarray | None = None, positions: np.ndarray | None = None
                ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """Hidden states [B, S, H] through layers ``first``.. ``first + len(caches) - 1``,
        each with its cache [B, kv heads, past, head dim]; (hidden out, the grown caches).
        ``mask`` [B, past + S] and ``positions`` [B, S]: caches padded on the left (only
        where :attr:`ragged`)."""
        grown = []
        for i, (past_key, past_value) in enumerate(caches):
            feeds = layer_feeds(self._inputs[first + i], hidden, past_key, past_value, mask, positions)
            out = self._layers[first + i].infer(feeds)
            hidden = out[HIDDEN_OUT]
            grown.append((out[PRESENT_KEY], out[PRESENT_VALUE]))
        return hidden, grown

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        return self._head.infer({HIDDEN: hidden})[LOGITS]

    def close(self) -> None:
        for runner in [self._embed, *self._layers, self._head]:
            runner.deactivate()


def _fixed_batch(layer: bytes) -> bool:
    """Whether a layer part's hidden input has its batch axis fixed at 1."""
    import onnx

    graph = onnx.load_from_string(layer).graph
    hidden = next(i for i in graph.input if i.name == HIDDEN)
    first = hidden.type.tensor_type.shape.dim[0]
    return first.HasField("dim_value") and first.dim_value == 1
