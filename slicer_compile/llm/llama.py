"""Llama-family decoder layers (RMSNorm, rotary positions, grouped-query attention,
SwiGLU) as small torch modules with the KV cache as explicit tensors, so that each
exports to an ONNX graph with ``past_key``/``past_value`` inputs and ``present_key``/
``present_value`` outputs. The weights are a ``transformers`` Llama model's; the
arithmetic follows its modelling code (tests/llm compares logits and greedy tokens).

Each layer also takes an attention mask over past + new tokens and the new tokens'
positions, so that sequences of different lengths run as one batch (their caches
padded on the left, the padding masked); one sequence alone feeds ones and its past
length onwards. Every axis is symbolic: one graph serves the prefill (past length 0)
and every decode step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from slicer_compile.errors import ModelError


@dataclass(frozen=True)
class LlamaSpec:
    """The shape of a Llama-family model, as the compiler and the runtime need it."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    # None where the source does not say (an ONNX export: llm.onnx_import); only the
    # export from ``transformers`` builds layers from these.
    intermediate_size: int | None
    rope_theta: float | None
    rms_norm_eps: float | None

    @staticmethod
    def from_config(config) -> "LlamaSpec":
        """From a ``transformers`` config; refuses what the layers here do not implement."""
        kind = getattr(config, "model_type", None)
        if kind not in SUPPORTED_TYPES:
            raise ModelError(f"model type {kind!r} is not a supported decoder-only LLM "
                             f"(supported: {', '.join(sorted(SUPPORTED_TYPES))})")
        for flag, why in (("attention_bias", "attention projections with biases"),
                          ("mlp_bias", "MLP projections with biases")):
            if getattr(config, flag, False):
                raise ModelError(f"{why} ({flag}=True) are not supported")
        rope = getattr(config, "rope_scaling", None) or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", None):
            raise ModelError(f"rope scaling {rope_type!r} is not supported (only the default rotary embedding)")
        if getattr(config, "hidden_act", "silu") != "silu":
            raise ModelError(f"activation {config.hidden_act!r} is not supported (SwiGLU with silu)")
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        if heads % kv_heads:
            raise ModelError(f"{heads} attention heads do not group over {kv_heads} key/value heads")
        theta = getattr(config, "rope_theta", None) or (rope.get("rope_theta") if rope else None) or 10000.0
        return LlamaSpec(config.vocab_size, config.hidden_size, config.num_hidden_layers, heads, kv_heads, head_dim,
                         config.intermediate_size, float(theta), float(config.rms_norm_eps))

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @property
    def kv_bytes_per_token_per_layer(self) -> int:
        """Key and value of one token in one layer, float32."""
        return 2 * self.num_kv_heads * self.head_dim * 4

    @property
    def hidden_bytes_per_token(self) -> int:
        return self.hidden_size * 4


SUPPORTED_TYPES = {"llama", "mistral", "qwen2"}


def _torch():
    import torch

    return torch


def rms_norm(x, weight, eps: float):
    torch = _torch()
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def rotate_half(x):
    torch = _torch()
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def build_modules(model, spec: LlamaSpec):
    """The embedding, one module per decoder layer, and the head of a ``transformers``
    Llama-family causal LM, sharing its weights (no copies)."""
    torch = _torch()
    nn = torch.nn

    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = model.model.embed_tokens.weight

        def forward(self, input_ids):
            return nn.functional.embedding(input_ids, self.weight)

    class Layer(nn.Module):
        def __init__(self, layer):
            super().__init__()
            attn, mlp = layer.self_attn, layer.mlp
            self.q, self.k, self.v, self.o = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
            self.gate, self.up, self.down = mlp.gate_proj, mlp.up_proj, mlp.down_proj
            self.norm1, self.norm2 = layer.input_layernorm.weight, layer.post_attention_layernorm.weight
            inv_freq = 1.0 / (spec.rope_theta ** (torch.arange(0, spec.head_dim, 2, dtype=torch.float32) / spec.head_dim))
            self.register_buffer("inv_freq", inv_freq, persistent=False)

        def forward(self, hidden, past_key, past_value, attention_mask, position_ids):
            # attention_mask [B, past + new]: 0 where a sequence's cache is padding (a
            # batch of sequences of different lengths is padded on the left);
            # position_ids [B, new]: each new token's position in its own sequence.
            batch, new = hidden.shape[0], hidden.shape[1]
            past = past_key.shape[2]
            x = rms_norm(hidden, self.norm1, spec.rms_norm_eps)
            q = self.q(x).view(batch, new, spec.num_heads, spec.head_dim).transpose(1, 2)
            k = self.k(x).view(batch, new, spec.num_kv_heads, spec.head_dim).transpose(1, 2)
            v = self.v(x).view(batch, new, spec.num_kv_heads, spec.head_dim).transpose(1, 2)
            freqs = position_ids.to(torch.float32)[:, :, None] * self.inv_freq[None, None, :]
            angles = torch.cat((freqs, freqs), dim=-1)
            cos, sin = angles.cos()[:, None], angles.sin()[:, None]
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            key = torch.cat((past_key, k), dim=2)
            value = torch.cat((past_value, v), dim=2)
            groups = spec.num_heads // spec.num_kv_heads
            keys = key.repeat_interleave(groups, dim=1)
            values = value.repeat_interleave(groups, dim=1)
            scores = torch.matmul(q, keys.transpose(2, 3)) / math.sqrt(spec.head_dim)
            # Causal over the whole (past + new) sequence: new token i sees past + i + 1 keys.
            total = past + new
            rows = torch.arange(new, device=hidden.device)[:, None] + past
            cols = torch.arange(total, device=hidden.device)[None, :]
            hidden_keys = (attention_mask == 0)[:, None, None, :]
            scores = scores.masked_fill((cols > rows)[None, None] | hidden_keys, torch.finfo(scores.dtype).min)
            attention = torch.softmax(scores, dim=-1)
            mixed = torch.matmul(attention, values).transpose(1, 2).reshape(batch, new, spec.num_heads * spec.head_dim)
            hidden = hidden + self.o(mixed)
            x = rms_norm(hidden, self.norm2, spec.rms_norm_eps)
            hidden = hidden + self.down(nn.functional.silu(self.gate(x)) * self.up(x))
            return hidden, key, value

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = model.model.norm.weight
            self.lm_head = model.lm_head

        def forward(self, hidden):
            return self.lm_head(rms_norm(hidden, self.norm, spec.rms_norm_eps))

    return Embed(), [Layer(layer) for layer in model.model.layers], Head()
