"""The dense codec: every element kept at ``bits`` bits, each group's range chosen to
minimise the error, the codes ANS-coded where that is smaller; bounded by predict_bits."""

from __future__ import annotations

import numpy as np
import pytest

from slicer_compile.codec import DenseConfig, PayloadError, decode, encode, predict_bits
from slicer_compile.codec import dense
from slicer_compile.codec.wire import read_header
from slicer_compile.errors import ConfigError


def relative_mse(x, y):
    return float(((x - y) ** 2).mean() / (x ** 2).mean())


def mode_of(payload: bytes) -> int:
    return payload[read_header(payload).body_offset + 4]  # after the meta section's length


@pytest.mark.parametrize("bits, worst", [(2, 0.2), (4, 0.02), (8, 1e-4)])
def test_a_dense_tensor_comes_back_within_its_bits(bits, worst):
    x = np.random.default_rng(0).standard_normal((2, 16, 300)).astype(np.float32)
    y = decode(encode(x, DenseConfig(bits=bits)))
    assert y.shape == x.shape and y.dtype == np.float32
    assert relative_mse(x, y) < worst


def test_the_range_is_clipped_where_that_lowers_the_error():
    """A heavy-tailed group: the full min..max range wastes the levels on the tails."""
    x = np.random.default_rng(1).laplace(size=(1, 1, 4096)).astype(np.float32)
    levels = 16
    values = x.reshape(1, -1)
    full = dense.dequantise(dense.quantise(values, values.min(1), values.max(1), levels), values.min(1),
                            values.max(1), levels)
    chosen = decode(encode(x, DenseConfig(bits=4, entropy=False))).reshape(1, -1)
    assert relative_mse(values, chosen) < 0.8 * relative_mse(values, full)


def test_ans_is_used_where_it_is_smaller_and_packing_otherwise():
    x = np.random.default_rng(2).standard_normal(1 << 16).astype(np.float32)
    coded, packed = encode(x, DenseConfig(bits=4)), encode(x, DenseConfig(bits=4, entropy=False))
    assert mode_of(coded) == dense.ANS and mode_of(packed) == dense.PACKED
    assert len(coded) < 0.95 * len(packed)  # a Gaussian's codes carry less than 4 bits each
    np.testing.assert_array_equal(decode(coded), decode(packed))  # the same codes either way
    uniform = np.random.default_rng(3).uniform(-1, 1, 4096).astype(np.float32)
    assert mode_of(encode(uniform, DenseConfig(bits=8))) == dense.PACKED  # nothing for ANS to gain


@pytest.mark.parametrize("shape", [(1, 1, 128), (3, 7), (1, 64, 16, 16), (5000,), (0, 4), ()])
@pytest.mark.parametrize("bits", [1, 3, 8])
def test_predict_bits_bounds_every_payload_and_encoding_is_deterministic(shape, bits):
    rng = np.random.default_rng(bits)
    for x in (rng.standard_normal(shape).astype(np.float32), np.full(shape, 2.5, np.float32),
              rng.standard_normal(shape).astype(np.float16)):
        cfg = DenseConfig(bits=bits)
        payload = encode(x, cfg)
        assert 8 * len(payload) <= predict_bits(shape, cfg)
        assert encode(x, cfg) == payload
        y = decode(payload)
        assert y.shape == x.shape and y.dtype == x.dtype
        if x.size and np.ptp(x) == 0:
            np.testing.assert_array_equal(y, x)  # a constant group is exact


def test_groups_merge_short_rows():
    assert dense.groups_of((1, 1, 4096)) == (4096, 1)
    assert dense.groups_of((1, 64, 16, 16)) == (256, 64)  # rows of 16 merged to a channel's map
    assert dense.groups_of((3, 7)) == (21, 1)
    assert dense.groups_of((0, 4)) == (0, 0)


def test_bad_knobs_and_bad_sections_are_refused():
    with pytest.raises(ConfigError):
        DenseConfig(bits=0)
    with pytest.raises(ConfigError):
        DenseConfig(bits=9)
    with pytest.raises(ConfigError):
        DenseConfig(entropy=1)
    x = np.random.default_rng(4).standard_normal(5000).astype(np.float32)
    payload = encode(x, DenseConfig(bits=3))
    from slicer_compile.codec.fuzz import restamp

    header = read_header(payload)
    broken = bytearray(payload)
    broken[header.body_offset + 4] = 7  # an unknown mode
    with pytest.raises(PayloadError, match="mode 7"):
        decode(restamp(bytes(broken)))
