"""The parts of a Llama-family LLM as ONNX graphs: ``embed`` (token ids -> hidden
states), one ``layer`` per decoder layer (hidden states, the layer's KV cache, a padding
mask and positions in; hidden states and the grown cache out) and ``head`` (hidden
states -> logits). Every
sequence axis is symbolic: the same layer graph runs the prefill (past length 0) and
each one-token decode step.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from slicer_compile.llm.llama import LlamaSpec, build_modules

EMBED, HEAD = "embed", "head"
#: the names the runtime feeds and reads
INPUT_IDS, HIDDEN, HIDDEN_OUT, LOGITS = "input_ids", "hidden", "hidden_out", "logits"
PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE = "past_key", "past_value", "present_key", "present_value"
#: a layer's padding mask [B, past + new] (int64, 0 = padding) and positions [B, new] (int64)
ATTENTION_MASK, POSITION_IDS = "attention_mask", "position_ids"
OPSET = 17


@dataclass(frozen=True)
class LlmParts:
    """Serialised ONNX models: the embedding, each decoder layer in order, the head."""

    embed: bytes
    layers: tuple[bytes, ...]
    head: bytes


def export_parts(model, spec: LlamaSpec) -> LlmParts:
    """Export a ``transformers`` Llama-family causal LM's parts (float32, CPU)."""
    import torch

    model = model.float().eval()
    embed, layers, head = build_modules(model, spec)
    batch, seq, past = 1, 3, 2  # example sizes; every one is a symbolic axis in the graphs
    hidden = torch.zeros(batch, seq, spec.hidden_size)
    cache = torch.zeros(batch, spec.num_kv_heads, past, spec.head_dim)
    with torch.no_grad():
        embed_onnx = _export(embed, (torch.zeros(batch, seq, dtype=torch.int64),), [INPUT_IDS], [HIDDEN],
                             {INPUT_IDS: {0: "batch", 1: "seq"}, HIDDEN: {0: "batch", 1: "seq"}})
        layer_axes = {HIDDEN: {0: "batch", 1: "seq"}, PAST_KEY: {0: "batch", 2: "past"},
                      PAST_VALUE: {0: "batch", 2: "past"}, ATTENTION_MASK: {0: "batch", 1: "total"},
                      POSITION_IDS: {0: "batch", 1: "seq"}, HIDDEN_OUT: {0: "batch", 1: "seq"},
                      PRESENT_KEY: {0: "batch", 2: "total"}, PRESENT_VALUE: {0: "batch", 2: "total"}}
        mask = torch.ones(batch, past + seq, dtype=torch.int64)
        positions = torch.arange(past, past + seq, dtype=torch.int64)[None].expand(batch, seq)
        layer_onnx = tuple(_export(layer, (hidden, cache, cache, mask, positions),
                                   [HIDDEN, PAST_KEY, PAST_VALUE, ATTENTION_MASK, POSITION_IDS],
                                   [HIDDEN_OUT, PRESENT_KEY, PRESENT_VALUE], layer_axes) for layer in layers)
        head_onnx = _export(head, (hidden,), [HIDDEN], [LOGITS],
                            {HIDDEN: {0: "batch", 1: "seq"}, LOGITS: {0: "batch", 1: "seq"}})
    return LlmParts(embed_onnx, layer_onnx, head_onnx)


def _export(module, args, inputs: list[str], outputs: list[str], axes: dict) -> bytes:
    import torch

    buffer = io.BytesIO()
    # The TorchScript exporter: these modules are plain tensor code, and it exports a
    # layer in a fraction of a second (the dynamo exporter takes seconds per layer).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=OPSET, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
    return buffer.getvalue()
