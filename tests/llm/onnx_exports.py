"""ONNX exports of ``transformers`` causal LMs as users make them: the model's own
forward (its mask and position arithmetic, its cache object), wrapped the way optimum
wraps it for a "with past" export, with optimum's tensor names (``input_ids``,
``attention_mask``, ``position_ids``, ``past_key_values.N.key/value`` in; ``logits``,
``present.N.key/value`` out), by the TorchScript exporter (symbolic batch, unknown
intermediate dims) or the dynamo exporter (static batch 1, named symbolic lengths)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
import transformers


class WithPast(torch.nn.Module):
    """A causal LM with its cache as flat tensors: (ids, mask, positions, k0, v0, k1, …)
    -> (logits, present k0, v0, …)."""

    def __init__(self, model, position_ids: bool = True):
        super().__init__()
        self.model = model
        self.layers = model.config.num_hidden_layers
        self.position_ids = position_ids

    def forward(self, input_ids, attention_mask, *rest):
        positions, past = (rest[0], rest[1:]) if self.position_ids else (None, rest)
        cache = transformers.DynamicCache(config=self.model.config)
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                         past_key_values=cache, use_cache=True)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


def io_names(layers: int, position_ids: bool = True) -> tuple[list[str], list[str]]:
    inputs = ["input_ids", "attention_mask"] + (["position_ids"] if position_ids else [])
    inputs += [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    return inputs, ["logits"] + [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def example_inputs(config, past: int = 2, seq: int = 3, position_ids: bool = True) -> tuple:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = config.num_key_value_heads or config.num_attention_heads
    ids = torch.randint(0, config.vocab_size, (1, seq))
    mask = torch.ones(1, past + seq, dtype=torch.int64)
    positions = (torch.arange(past, past + seq)[None],) if position_ids else ()
    cache = tuple(torch.randn(1, kv_heads, past, head_dim) for _ in range(2 * config.num_hidden_layers))
    return (ids, mask, *positions, *cache)


def export_with_past(model, path: Path, exporter: str = "torchscript", position_ids: bool = True,
                     static_past: bool = False) -> Path:
    """``model`` written to ``path`` as a with-past ONNX export; ``static_past`` fixes
    the cache length (an export that cannot grow its cache)."""
    model = model.float().eval()
    layers = model.config.num_hidden_layers
    inputs, outputs = io_names(layers, position_ids)
    args = example_inputs(model.config, position_ids=position_ids)
    wrapped = WithPast(model, position_ids)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            axes = {"input_ids": {0: "batch", 1: "sequence_length"}, "attention_mask": {0: "batch", 1: "total_length"},
                    "logits": {0: "batch", 1: "sequence_length"}}
            if position_ids:
                axes["position_ids"] = {0: "batch", 1: "sequence_length"}
            for name in inputs[len(inputs) - 2 * layers:]:
                axes[name] = {0: "batch"} if static_past else {0: "batch", 2: "past_sequence_length"}
            for name in outputs[1:]:
                axes[name] = {0: "batch", 2: "total_length"}
            buffer = io.BytesIO()
            torch.onnx.export(wrapped, args, buffer, dynamo=False, opset_version=17, input_names=inputs,
                              output_names=outputs, dynamic_axes=axes)
            path.write_bytes(buffer.getvalue())
        else:
            from torch.export import Dim

            seq, past = Dim("sequence_length", max=512), Dim("past_sequence_length", max=512)
            rest = ([{1: seq}] if position_ids else []) + [{2: past} for _ in range(2 * layers)]
            shapes = ({1: seq}, {1: Dim("total_length", max=1024)}, tuple(rest))  # forward(ids, mask, *rest)
            program = torch.onnx.export(wrapped, args, dynamo=True, input_names=inputs, output_names=outputs,
                                        dynamic_shapes=shapes, external_data=False, optimize=True, verbose=False)
            program.save(str(path), external_data=False)
    return path


def export_without_past(model, path: Path) -> Path:
    """A plain (no cache) export: input_ids -> logits."""
    model = model.float().eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        ids = torch.zeros(1, 3, dtype=torch.int64)
        torch.onnx.export(_LogitsOnly(model), (ids, torch.ones_like(ids), torch.arange(3)[None]), buffer,
                          dynamo=False, opset_version=17, input_names=["input_ids", "attention_mask", "position_ids"],
                          output_names=["logits"], dynamic_axes={n: {1: "seq"} for n in (
                              "input_ids", "attention_mask", "position_ids", "logits")})
    path.write_bytes(buffer.getvalue())
    return path


class _LogitsOnly(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False).logits
