"""Position coders: round trips, the bound, never worse than bitmap / fixed width."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slicer_compile.codec.bits import pack_uint, packed_nbytes, unpack_uint
from slicer_compile.codec.positions import (
    BITMAP,
    FIXED,
    GOLOMB,
    GOLOMB_COMPLEMENT,
    decode_labels,
    decode_subset,
    encode_labels,
    encode_subset,
    index_width,
    subset_worst_nbytes,
)
from slicer_compile.errors import PayloadError


@given(st.integers(0, 64), st.data())
@settings(max_examples=200, deadline=None)
def test_pack_uint_round_trip_every_width(width, data):
    n = data.draw(st.integers(0, 70))
    top = (1 << width) - 1
    values = np.array(data.draw(st.lists(st.integers(0, top), min_size=n, max_size=n)), dtype=np.uint64)
    packed = pack_uint(values, width)
    assert len(packed) == packed_nbytes(n, width)
    assert np.array_equal(unpack_uint(packed, n, width), values if width else np.zeros(n, np.uint64))


def test_unpack_uint_rejects_short_buffer():
    with pytest.raises(PayloadError, match="truncated"):
        unpack_uint(b"\x00", 3, 5)


@given(st.integers(1, 3000), st.data())
@settings(max_examples=300, deadline=None)
def test_subset_round_trip_and_never_worse_than_bitmap_or_fixed(space, data):
    density = data.draw(st.sampled_from([0.0, 0.001, 0.01, 0.1, 0.3, 0.5, 0.7, 0.95, 1.0]))
    seed = data.draw(st.integers(0, 2**32 - 1))
    mask = np.random.default_rng(seed).random(space) < density
    indices = np.flatnonzero(mask)
    coded = encode_subset(indices, space)
    assert np.array_equal(decode_subset(memoryview(coded), indices.size, space), indices)
    if 0 < indices.size < space:
        assert len(coded) <= 1 + packed_nbytes(space, 1)
        assert len(coded) <= 1 + packed_nbytes(indices.size, index_width(space))
    assert len(coded) <= subset_worst_nbytes(indices.size, space)
    assert len(coded) <= subset_worst_nbytes(space, space)  # a bound for any count


@pytest.mark.parametrize("sparsity", [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99])
def test_kept_mask_near_information_bound(sparsity):
    # The mask alone: log2 C(T, k) bits. Golomb codes are within ~4.2% of the
    # entropy of a geometric gap at their worst density (~0.38) and within 3%
    # elsewhere; the full position bound (mask + signs + blocks) is tested in
    # test_slicer.py at 3%.
    T = 1 << 17
    k = int((1 - sparsity) * T)
    indices = np.sort(np.random.default_rng(7).choice(T, k, replace=False))
    coded = encode_subset(indices, T)
    bound = (math.lgamma(T + 1) - math.lgamma(k + 1) - math.lgamma(T - k + 1)) / math.log(2)
    assert 8 * len(coded) <= 1.045 * bound
    assert np.array_equal(decode_subset(memoryview(coded), k, T), indices)


def test_subset_picks_each_method():
    T = 4096
    rng = np.random.default_rng(0)
    sparse = np.sort(rng.choice(T, 40, replace=False))
    dense = np.setdiff1d(np.arange(T), sparse)
    half = np.flatnonzero(rng.random(T) < 0.5)
    few = np.array([5, 4000])
    assert encode_subset(sparse, T)[0] == GOLOMB
    assert encode_subset(dense, T)[0] == GOLOMB_COMPLEMENT
    assert encode_subset(half, T)[0] == BITMAP
    assert encode_subset(few, 1 << 31)[0] == FIXED


@pytest.mark.parametrize("base", [2, 3, 5, 6, 7, 16, 64])
def test_labels_round_trip_within_one_percent_of_log2_base(base):
    labels = np.random.default_rng(base).integers(0, base, 50_000)
    coded = encode_labels(labels, base)
    assert np.array_equal(decode_labels(memoryview(coded), labels.size, base), labels)
    assert 8 * len(coded) <= 1.01 * labels.size * math.log2(base) + 64


def test_decode_subset_rejects_inconsistent_sections():
    T = 1000
    indices = np.array([3, 10, 900])
    coded = bytearray(encode_subset(indices, T))
    with pytest.raises(PayloadError):
        decode_subset(memoryview(bytes(coded)), 4, T)  # wrong count
    with pytest.raises(PayloadError):
        decode_subset(memoryview(bytes(coded[:-1])), 3, T)  # truncated
    with pytest.raises(PayloadError, match="unknown position coding"):
        decode_subset(memoryview(bytes([9]) + bytes(coded[1:])), 3, T)
    with pytest.raises(PayloadError):
        decode_subset(memoryview(bytes(coded)), 3, 600)  # index beyond the space
