"""Baselines in the same wire format: float16, int8, zstd on float16."""

from __future__ import annotations

import numpy as np
import pytest

from slicer_compile.codec import Float16Config, Int8Config, ZstdConfig, decode, encode, predict_bits


@pytest.fixture
def x():
    return (np.random.default_rng(0).standard_normal((3, 50, 7)) * 5).astype(np.float32)


def test_float16_is_the_cast_and_saturates(x):
    x = x.copy()
    x[0, 0, 0] = 1e9
    x_hat = decode(encode(x, Float16Config()))
    assert x_hat.dtype == np.float32
    assert x_hat[0, 0, 0] == np.finfo(np.float16).max
    np.testing.assert_array_equal(x_hat.ravel()[1:], x.ravel()[1:].astype(np.float16).astype(np.float32))


def test_int8_error_is_at_most_half_a_step(x):
    x_hat = decode(encode(x, Int8Config()))
    step = np.abs(x).max() / 127
    assert np.abs(x_hat - x).max() <= step / 2 * (1 + 1e-5)


def test_zstd_is_lossless_on_float16(x):
    x16 = x.astype(np.float16)
    x_hat = decode(encode(x16, ZstdConfig()))
    assert x_hat.dtype == np.float16
    np.testing.assert_array_equal(x_hat, x16)


@pytest.mark.parametrize("cfg", [Float16Config(), Int8Config(), ZstdConfig(level=19)])
@pytest.mark.parametrize("shape", [(1,), (0,), (4, 4), (2, 3, 4, 5)])
def test_bound_and_shapes(cfg, shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    payload = encode(x, cfg)
    assert 8 * len(payload) <= predict_bits(shape, cfg)
    assert decode(payload).shape == shape


def test_all_zero_int8():
    assert not decode(encode(np.zeros(9, np.float32), Int8Config())).any()
