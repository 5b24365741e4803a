"""TS + TAB-Q (Sung et al., Algorithm 1): exact outliers, token-wise sign-magnitude AIQ."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from slicer_compile.codec import TabqConfig, decode, encode, predict_bits
from slicer_compile.codec.tabq import TOKEN_DTYPE
from slicer_compile.codec.wire import PayloadReader, read_header
from slicer_compile.errors import ConfigError


def token_table(payload: bytes) -> np.ndarray:
    header = read_header(payload)
    reader = PayloadReader(payload, header)
    for name in ("meta", "mask", "above"):
        reader.section(name)
    return np.frombuffer(reader.section("tokens"), dtype=TOKEN_DTYPE)


def check_tabq(x: np.ndarray, cfg: TabqConfig) -> None:
    payload = encode(x, cfg)
    x_hat = decode(payload)
    assert x_hat.shape == x.shape and x_hat.dtype == x.dtype
    assert 8 * len(payload) <= predict_bits(x.shape, cfg, x.dtype)
    assert encode(x.copy(), cfg) == payload
    rows = x.astype(np.float32).reshape(-1, x.shape[-1] if x.ndim else 1)
    rows_hat = x_hat.astype(np.float32).reshape(rows.shape)
    above = np.abs(rows) >= cfg.tau
    assert np.array_equal(rows_hat[above], rows[above])  # outliers travel exactly
    table = iter(token_table(payload).tolist())
    for row, row_hat, row_above in zip(rows, rows_hat, above):
        below = ~row_above
        if not below.any():
            continue
        q, lo, hi = next(table)
        mags = np.abs(row[below])
        assert (lo, hi) == (mags.min(), mags.max())
        assert q == 0 if lo == hi else cfg.q_min <= q <= cfg.q_max - 1
        step = (np.float32(hi) - np.float32(lo)) / np.float32(2 ** q - 1) if q else 0.0
        err = np.abs(np.abs(row_hat[below]).astype(np.float64) - mags)
        slack = 1e-6 * float(hi) + (1e-3 * mags if x.dtype == np.float16 else 0)
        assert (err <= step / 2 + slack).all()
        negative = row[below] < 0
        assert (row_hat[below][negative] <= 0).all()


@given(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=9),
               elements=st.floats(-20, 20, width=32, allow_subnormal=False)),
    st.floats(0.1, 10), st.integers(2, 9), st.sampled_from([0.0, 0.2, 1.0, 10.0]),
)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_tabq_properties(x, tau, q_max, delta):
    check_tabq(x, TabqConfig(tau=tau, q_max=q_max, delta=delta))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_tabq_on_llm_like_hidden_states(dtype):
    # A token-major hidden state with a few large outlier channels, as in LLMs.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 256)).astype(np.float32)
    x[:, [7, 99]] *= 40
    x = x.astype(dtype)
    check_tabq(x, TabqConfig())
    payload = encode(x, TabqConfig(tau=5.0, q_max=4, delta=0.2))
    assert len(payload) < x.nbytes / 3


def test_tabq_lowers_bits_per_token_under_a_loose_budget():
    x = np.random.default_rng(1).standard_normal((8, 512)).astype(np.float32)
    assert (token_table(encode(x, TabqConfig(q_max=6, delta=0.0)))["q"] == 5).all()
    assert (token_table(encode(x, TabqConfig(q_max=6, delta=10.0)))["q"] == 1).all()


def test_tabq_config_validation():
    for kwargs in ({"tau": 0}, {"q_max": 1}, {"q_min": 4, "q_max": 4}, {"delta": -1}):
        with pytest.raises(ConfigError):
            TabqConfig(**kwargs)
