"""The selector's autoregressive table from a compiled LLM artifact: SLICER Eq. 5-6 and
Sung et al.'s early exit (select.autoregressive) on what `slicer-compile llm` measured
or modelled per layer."""

from __future__ import annotations

import math

import numpy as np

from slicer_compile.codec import SlicerConfig, predict_bits
from slicer_compile.llm.artifact import LlmArtifact
from slicer_compile.select.autoregressive import ARTable


def ar_table(artifact: LlmArtifact, codec: SlicerConfig = SlicerConfig(), accuracy_budget: float = 0.01) -> ARTable:
    """Per hand-over layer ℓ = 1..L: the edge's step time through layers 1..ℓ, one
    token's hidden state — the fewest measured bits per token within
    ``accuracy_budget`` where calibration measured ℓ (llm.calibrate), else under
    ``codec``'s payload bound —, the KV cache of layers 1..ℓ per token (likewise the
    cheapest measured hand-over within the budget, else raw), and the edge's weights
    and KV growth."""
    from slicer_compile.llm.calibrate import cheapest_within

    spec, cuts = artifact.spec, artifact.cuts[1:]  # ℓ = 0 hands over before any layer
    bound = math.ceil(predict_bits((1, 1, spec.hidden_size), codec))
    calibration = artifact.manifest.get("calibration")
    hidden_bits, kv_bits = [], []
    for c in cuts:
        chosen = cheapest_within(calibration, c["cut"], accuracy_budget)
        hidden_bits.append(math.ceil(chosen[1]) if chosen else bound)
        kv = cheapest_within(calibration, c["cut"], accuracy_budget, "handover", "kv_bits_per_token")
        kv_bits.append(math.ceil(kv[1]) if kv else 8 * c["edge_kv_bytes_per_token"])
    return ARTable(
        full_step_s=artifact.manifest["edge_full_step_ms"] * 1e-3,
        step_s=np.array([c["edge_ms_per_token"] * 1e-3 for c in cuts]),
        hidden_bits=np.array(hidden_bits, dtype=np.int64),
        kv_bits_per_token=np.array(kv_bits, dtype=np.int64),
        weights_bytes=np.array([c["edge_weight_bytes"] for c in cuts], dtype=np.int64),
        kv_bytes_per_token=np.array([c["edge_kv_bytes_per_token"] for c in cuts], dtype=np.int64),
    )
