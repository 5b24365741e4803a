"""Autoregressive split selection: how many tokens ``w`` to generate on the edge,
at which layer ``ℓ`` to hand over, and whether the KV cache travels.

SLICER Eq. 5: the edge runs ``w - 1`` full decoding steps of its (compressed)
model, then the ``w``-th step up to layer ``ℓ``, and offloads the feature:

    L_AR(ℓ, w, R) = (w - 1)·L_full + L_d(1:ℓ) + ζ̂ + L_c(B_io(w, ℓ, I_kv), R)

with ``B_io = w·b_hidden(ℓ) + I_kv·w·b_kv(ℓ)``: the hidden states of the ``w``
tokens at ``ℓ`` and, when ``I_kv = 1``, the KV cache of layers ``1..ℓ`` so the
server can carry on decoding without recomputing them.

SLICER Eq. 6 / Sung Eq. 12: maximise ``w·ℓ`` subject to ``L_AR ≤ D``,
``B_io ≤ M_ar`` (the per-step offload cap) and the edge memory
``m(ℓ) + W̄·kv_bytes(ℓ) ≤ M`` (Sung Eq. 8c). Ties prefer keeping the KV
cache, then the deeper layer. This reproduces Sung's Algorithm 2 early exit:
when the deadline tightens the KV cache is dropped before tokens are, and
tokens are cut before the split moves shallower only when ``w·ℓ`` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from slicer_compile.errors import ConfigError
from slicer_compile.select.channel import best_rate, snr_from_db, transmissions


@dataclass(frozen=True)
class ARTable:
    """Per-layer costs of an autoregressive model on the edge (index i = layer i+1).

    Args:
        full_step_s: one decoding step through the whole edge model.
        step_s: one decoding step through layers 1..ℓ (cumulative), per ℓ.
        hidden_bits: payload bound of one token's hidden state at ℓ.
        kv_bits_per_token: payload bound of one token's KV cache for layers 1..ℓ.
        weights_bytes: edge memory of layers 1..ℓ (weights + working buffers).
        kv_bytes_per_token: edge KV-cache memory per token for layers 1..ℓ.
        codec_s: encode time of a step's payload at ℓ (ζ̂), default 0.
    """

    full_step_s: float
    step_s: np.ndarray
    hidden_bits: np.ndarray
    kv_bits_per_token: np.ndarray
    weights_bytes: np.ndarray
    kv_bytes_per_token: np.ndarray
    codec_s: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.step_s)
        for name in ("hidden_bits", "kv_bits_per_token", "weights_bytes", "kv_bytes_per_token"):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"ARTable.{name} has {len(getattr(self, name))} layers, step_s has {n}")
        if n == 0:
            raise ConfigError("ARTable needs at least one layer")


@dataclass(frozen=True)
class ARDecision:
    feasible: bool
    tokens: int  # w: tokens generated before the hand-over (0 if infeasible)
    layer: int  # ℓ, 1-based (0 if infeasible)
    kv_cache: bool  # I_kv
    early_exit: bool  # fewer than W̄ tokens, or the KV cache dropped
    rate_bps: float
    payload_bits: int
    latency_s: float
    edge_s: float
    transmit_s: float
    binding: str  # "none", "deadline", "memory", "offload_cap" or "channel"
    reason: str


def select_autoregressive(table: ARTable, max_tokens: int, deadline_s: float, bandwidth_hz: float,
                          epsilon: float = 1e-3, snr_db: float | None = None, snr: float | None = None,
                          rate_bps: float | None = None, memory_bytes: float = math.inf,
                          offload_cap_bits: float = math.inf) -> ARDecision:
    """Choose ``(w, ℓ, I_kv)`` maximising ``w·ℓ`` under the deadline and memory."""
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}")
    if not (deadline_s > 0 and bandwidth_hz > 0 and 0 < epsilon < 1):
        raise ConfigError("deadline and bandwidth must be positive and epsilon in (0, 1)")
    if (snr_db is None) == (snr is None):
        raise ConfigError("give the SNR once: snr_db or snr (linear)")
    gamma = snr_from_db(snr_db) if snr_db is not None else float(snr)
    if rate_bps is None:
        rate_bps, _ = best_rate(1.0, bandwidth_hz, gamma, epsilon, 1e3, bandwidth_hz * math.log2(1 + 1000 * gamma))
    spb = transmissions(rate_bps, bandwidth_hz, gamma, epsilon) / rate_bps

    w = np.arange(1, max_tokens + 1, dtype=np.float64)[None, :, None]  # (1, W, 1)
    layers = np.arange(1, len(table.step_s) + 1)
    kv = np.array([1.0, 0.0])[:, None, None]  # prefer keeping the KV cache
    bits = w * (np.asarray(table.hidden_bits)[None, None, :] + kv * np.asarray(table.kv_bits_per_token)[None, None, :])
    codec = np.zeros(len(layers)) if table.codec_s is None else np.asarray(table.codec_s)
    edge = (w - 1) * table.full_step_s + np.asarray(table.step_s)[None, None, :] + codec[None, None, :]
    latency = edge + bits * spb
    memory_ok = (np.asarray(table.weights_bytes) + max_tokens * np.asarray(table.kv_bytes_per_token)) <= memory_bytes
    ok = (latency <= deadline_s) & (bits <= offload_cap_bits) & memory_ok[None, None, :]
    if not ok.any():
        binding = ("channel" if not math.isfinite(spb) else "memory" if not memory_ok.any()
                   else "offload_cap" if not (bits <= offload_cap_bits).any() else "deadline")
        return ARDecision(False, 0, 0, False, True, rate_bps, 0, math.inf, math.inf, math.inf, binding,
                          f"no (tokens, layer) fits: {binding}")
    depth = np.where(ok, w * layers[None, None, :], -1)
    best = depth.max()
    # Among the deepest w·ℓ: keep the KV cache if possible, then the deeper layer.
    candidates = np.argwhere(depth == best)
    k, wi, li = min(candidates.tolist(), key=lambda c: (c[0], -c[2]))
    tokens, layer, keep_kv = wi + 1, li + 1, k == 0
    full_depth_ok = ok[:, -1, :].any()
    # What stops the full plan (all tokens, the last layer, the KV cache kept):
    last = len(layers) - 1
    if tokens == max_tokens and layer == len(layers) and keep_kv:
        binding = "none"
    elif not memory_ok[last]:
        binding = "memory"
    elif bits[0, -1, last] > offload_cap_bits:
        binding = "offload_cap"
    else:
        binding = "deadline"
    return ARDecision(
        True, tokens, layer, keep_kv, tokens < max_tokens or not keep_kv, rate_bps, int(bits[k, wi, li]),
        float(latency[k, wi, li]), float(edge[0, wi, li]), float(bits[k, wi, li] * spb), binding,
        f"w·ℓ = {tokens}·{layer}" + ("" if full_depth_ok else f"; all {max_tokens} tokens do not fit the deadline"))
