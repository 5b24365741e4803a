"""The SLICER codec against DESIGN.md: properties, the bound, the spec's choices."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from slicer_compile.codec import PayloadError, SlicerConfig, decode, encode, inspect_payload, predict_bits
from slicer_compile.codec.bench import information_bound_bits
from slicer_compile.codec.slicer import BLOCK_DTYPE, block_layout
from slicer_compile.codec.wire import PayloadReader, read_header
from slicer_compile.errors import ConfigError, TensorError

from .reference import reference_blocks, reference_kept


def tensors(dtype):
    big = 60000.0 if dtype == np.float16 else 1e6
    return hnp.arrays(
        dtype=dtype,
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=9),
        elements=st.floats(-big, big, width=16 if dtype == np.float16 else 32, allow_subnormal=False),
    )


configs = st.builds(
    lambda s, lam, mp, mn, qb, qmin_frac, delta: SlicerConfig(
        sparsity=s, lam=lam, blocks=(mp, mn), q_bits=qb, q_min=max(1, round(qb * qmin_frac)), delta=delta),
    s=st.one_of(st.sampled_from([0.0, 0.5, 0.9, 0.99]), st.floats(0.0, 0.999)),
    lam=st.one_of(st.just(0.0), st.floats(-0.9, 0.9)),
    mp=st.integers(1, 6), mn=st.integers(1, 6),
    qb=st.integers(1, 16), qmin_frac=st.floats(0, 1),
    delta=st.sampled_from([0.0, 0.01, 0.2, 1.0, 5.0]),
)


def block_table(payload: bytes) -> np.ndarray:
    header = read_header(payload)
    reader = PayloadReader(payload, header)
    for name in ("meta", "mask", "signs", "labels+", "labels-"):
        reader.section(name)
    return np.frombuffer(reader.section("blocks"), dtype=BLOCK_DTYPE)


def check_properties(x: np.ndarray, cfg: SlicerConfig) -> None:
    payload = encode(x, cfg)
    x_hat = decode(payload)
    assert x_hat.shape == x.shape and x_hat.dtype == x.dtype
    assert 8 * len(payload) <= predict_bits(x.shape, cfg)
    assert encode(x.copy(), cfg) == payload  # deterministic

    T = x.size
    k = cfg.kept_count(T)  # checked against a person's count in test_kept_count_is_a_persons_count
    kept = reference_kept(x, k, cfg.lam)
    nnz = int(np.count_nonzero(x))
    assert kept.size == min(k, nnz)
    # Exactly the reference's kept set survives; everything else decodes to 0.
    assert np.array_equal(np.flatnonzero(x_hat.ravel()), kept)

    # Each block: lo/hi are its magnitude range, q within bounds, error <= step/2.
    table = block_table(payload)
    members = reference_blocks(x, kept, cfg.blocks)
    assert len(members) == table.size
    flat, flat_hat = x.astype(np.float32).ravel(), x_hat.astype(np.float32).ravel()
    for idx, (q, lo, hi) in zip(members, table.tolist()):
        mags = np.abs(flat[idx])
        assert (lo, hi) == (mags.min(), mags.max())
        assert q == 0 if lo == hi else cfg.q_min <= q <= cfg.q_bits
        step = (np.float32(hi) - np.float32(lo)) / np.float32(2 ** q - 1) if q else 0.0
        err = np.abs(flat_hat[idx].astype(np.float64) - flat[idx])
        slack = 1e-6 * float(hi) + (float(np.finfo(np.float16).eps) * np.abs(flat[idx]) if x.dtype == np.float16 else 0)
        assert (err <= step / 2 + slack).all()
        assert (np.sign(flat_hat[idx]) == np.sign(flat[idx])).all()


@given(tensors(np.float32), configs)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_properties_float32(x, cfg):
    check_properties(x, cfg)


@given(tensors(np.float16), configs)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_properties_float16(x, cfg):
    check_properties(x, cfg)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", [(1,), (5,), (3, 4), (2, 3, 4), (2, 3, 4, 5), (64, 64)])
@pytest.mark.parametrize("fill", [0.0, 1.5, -2.0])
def test_constant_and_all_zero_tensors(dtype, shape, fill):
    x = np.full(shape, fill, dtype=dtype)
    for cfg in (SlicerConfig(sparsity=0.5), SlicerConfig(sparsity=0.0, blocks=(2, 2))):
        check_properties(x, cfg)
        if fill == 0.0:
            assert not decode(encode(x, cfg)).any()


def test_ties_go_to_lower_flat_index():
    x = np.array([1, 3, 3, 3, 2, 3], dtype=np.float32)
    x_hat = decode(encode(x, SlicerConfig(sparsity=0.5, blocks=(1, 1), q_bits=4)))  # k = 3
    assert np.flatnonzero(x_hat).tolist() == [1, 2, 3]


def test_asymmetry_favours_negative_values_for_positive_lambda():
    x = np.array([1.0, -0.9, 0.8, -0.7], dtype=np.float32)
    kept_plain = np.flatnonzero(decode(encode(x, SlicerConfig(sparsity=0.5, lam=0.0))))
    kept_asym = np.flatnonzero(decode(encode(x, SlicerConfig(sparsity=0.5, lam=0.5))))
    assert kept_plain.tolist() == [0, 1]
    assert kept_asym.tolist() == [1, 3]  # scores 1/1.5, 0.9/0.5, 0.8/1.5, 0.7/0.5


def test_abq_lowers_bits_under_a_loose_budget_and_not_under_a_tight_one():
    x = np.random.default_rng(3).standard_normal(20_000).astype(np.float32)
    tight = block_layout(encode(x, SlicerConfig(sparsity=0.5, delta=0.0)))[1]
    loose = block_layout(encode(x, SlicerConfig(sparsity=0.5, delta=5.0, q_min=2)))[1]
    assert (tight == 8).all()
    assert (loose < 8).all() and (loose >= 2).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_rejected_at_encode(bad):
    x = np.ones(10, dtype=np.float32)
    x[3] = bad
    with pytest.raises(TensorError, match="NaN/Inf"):
        encode(x, SlicerConfig())
    with pytest.raises(ValueError):
        encode(x, SlicerConfig())


def test_other_dtypes_and_bad_configs_are_rejected():
    with pytest.raises(TensorError, match="float32 or float16"):
        encode(np.ones(4, dtype=np.float64), SlicerConfig())
    for kwargs in ({"sparsity": 1.0}, {"sparsity": -0.1}, {"lam": 1.0}, {"blocks": (0, 3)},
                   {"q_bits": 17}, {"q_min": 9}, {"delta": -1}, {"sparsity": float("nan")}):
        with pytest.raises(ConfigError):
            SlicerConfig(**kwargs)


@pytest.mark.parametrize("sparsity", [0.5, 0.6, 0.62, 0.7, 0.8, 0.9, 0.95, 0.99])
def test_position_bits_within_3_percent_of_information_bound(sparsity):
    # Random masks: i.i.d. Gaussian values put the kept set, signs and blocks at random.
    x = np.random.default_rng(11).standard_normal(1 << 18).astype(np.float32)
    payload = encode(x, SlicerConfig(sparsity=sparsity))
    sizes, _ = block_layout(payload)
    bound = information_bound_bits(x.size, sizes)
    assert inspect_payload(payload).position_bits <= 1.03 * bound


def test_total_bits_within_5_percent_of_content_at_1mi():
    x = np.random.default_rng(5).standard_normal(1 << 20).astype(np.float32)
    payload = encode(x, SlicerConfig(sparsity=0.9))
    sizes, q = block_layout(payload)
    content = information_bound_bits(x.size, sizes) + float(np.dot(sizes, q)) + 8 * 9 * sizes.size
    assert 8 * len(payload) <= 1.05 * content


def test_compression_is_real():
    x = np.random.default_rng(1).standard_normal((64, 56, 56)).astype(np.float32)
    payload = encode(x, SlicerConfig(sparsity=0.9))
    assert len(payload) < 0.06 * x.nbytes  # ~1.5 bits per element vs 32


def test_decoder_rejects_kept_count_beyond_k():
    x = np.arange(1, 101, dtype=np.float32)
    payload = bytearray(encode(x, SlicerConfig(sparsity=0.9)))
    header = read_header(bytes(payload))
    meta_at = header.body_offset + 4
    payload[meta_at: meta_at + 4] = (11).to_bytes(4, "little")
    import zlib
    payload[-4:] = zlib.crc32(bytes(payload[:-4])).to_bytes(4, "little")
    with pytest.raises(PayloadError, match="exceed k"):
        decode(bytes(payload))


@pytest.mark.parametrize("sparsity", ["0.1", "0.3", "0.5", "0.7", "0.75", "0.9", "0.95", "0.99", "0.999", "0.33"])
def test_kept_count_is_a_persons_count(sparsity):
    """k = floor((1 - s)·T) with s the decimal the user wrote, although s travels as
    float32 (0.99 of 300 keeps 3, not 2), at every small T; and the encoder keeps it."""
    from fractions import Fraction

    cfg = SlicerConfig(sparsity=float(sparsity))
    for T in range(1, 3001):
        assert cfg.kept_count(T) == math.floor((1 - Fraction(sparsity)) * T), (sparsity, T)
    x = np.arange(1, 301, dtype=np.float32)
    assert np.count_nonzero(decode(encode(x, cfg))) == math.floor((1 - Fraction(sparsity)) * 300)
