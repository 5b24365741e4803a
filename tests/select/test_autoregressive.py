"""Autoregressive selection: SLICER Eq. 5-6 and the early exit of Sung et al. (Algorithm 2)."""

from __future__ import annotations

import numpy as np
import pytest

from slicer_compile.errors import ConfigError
from slicer_compile.select import ARTable, select_autoregressive
from slicer_compile.select.channel import best_rate, snr_from_db

LAYERS = 8
TABLE = ARTable(
    full_step_s=8e-3,
    step_s=np.arange(1, LAYERS + 1) * 1e-3,  # 1 ms per layer
    hidden_bits=np.full(LAYERS, 4096 * 2.0),  # a 4096-wide hidden state at ~2 bits/element
    kv_bits_per_token=np.arange(1, LAYERS + 1) * 2 * 4096 * 2.0,  # K and V per layer
    weights_bytes=np.arange(1, LAYERS + 1) * 100e6,
    kv_bytes_per_token=np.arange(1, LAYERS + 1) * 2 * 4096 * 2,
)
CHANNEL = {"bandwidth_hz": 10e6, "epsilon": 1e-3, "snr_db": 10.0}


def test_latency_matches_slicer_eq5_by_hand():
    d = select_autoregressive(TABLE, max_tokens=4, deadline_s=1.0, **CHANNEL)
    assert d.feasible and (d.tokens, d.layer, d.kv_cache, d.early_exit, d.binding) == (4, LAYERS, True, False, "none")
    rate, _ = best_rate(1.0, 10e6, snr_from_db(10.0), 1e-3, 1e3, 10e6 * np.log2(1 + 1000 * 10))
    bits = 4 * (4096 * 2.0 + LAYERS * 2 * 4096 * 2.0)
    transmit = bits * 5 / rate  # 5 transmissions at the best rate for γ = 10
    edge = 3 * 8e-3 + LAYERS * 1e-3  # (w-1) full steps + the partial step to ℓ
    assert d.payload_bits == int(bits) and d.rate_bps == pytest.approx(rate)
    assert d.latency_s == pytest.approx(edge + transmit) and d.edge_s == pytest.approx(edge)


def test_tightening_deadline_drops_kv_cache_before_tokens_and_never_deepens():
    previous = None
    seen_kv_dropped_with_all_tokens = False
    for deadline in np.geomspace(0.5, 5e-3, 40):
        d = select_autoregressive(TABLE, max_tokens=16, deadline_s=float(deadline), **CHANNEL)
        if not d.feasible:
            break
        depth = d.tokens * d.layer
        if previous is not None:
            assert depth <= previous
        previous = depth
        if d.tokens == 16 and not d.kv_cache:
            seen_kv_dropped_with_all_tokens = True
        if d.tokens < 16:
            # tokens were cut: keeping all 16 was impossible even without the KV cache at this layer
            assert d.early_exit
    assert seen_kv_dropped_with_all_tokens


def test_memory_and_offload_cap_bind():
    # Edge memory for layers 1..ℓ with room for 16 tokens of KV cache: only 3 layers fit in 350 MB.
    d = select_autoregressive(TABLE, max_tokens=16, deadline_s=10.0, memory_bytes=350e6, **CHANNEL)
    assert d.feasible and d.layer == 3 and d.binding == "memory"
    capped = select_autoregressive(TABLE, max_tokens=16, deadline_s=10.0, offload_cap_bits=100_000, **CHANNEL)
    assert capped.feasible and capped.payload_bits <= 100_000 and capped.binding == "offload_cap"
    none = select_autoregressive(TABLE, max_tokens=16, deadline_s=1e-4, **CHANNEL)
    assert not none.feasible and none.binding == "deadline" and none.tokens == 0


def test_bad_arguments():
    with pytest.raises(ConfigError):
        select_autoregressive(TABLE, max_tokens=0, deadline_s=1.0, **CHANNEL)
    with pytest.raises(ConfigError, match="give the SNR once"):
        select_autoregressive(TABLE, max_tokens=4, deadline_s=1.0, bandwidth_hz=1e6)
    with pytest.raises(ConfigError, match="layers"):
        ARTable(1.0, np.ones(3), np.ones(2), np.ones(3), np.ones(3), np.ones(3))
