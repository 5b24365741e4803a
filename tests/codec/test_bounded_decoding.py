"""Decoders refuse a few bytes that claim a huge tensor before they allocate for it,
never decode a finite tensor to Inf, and accept every payload their encoder writes."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest

from slicer_compile.codec import DecodeLimits, Int8Config, SlicerConfig, decode, encode
from slicer_compile.codec.crafted import HUGE, slicer_constant, tiny_but_huge
from slicer_compile.codec.positions import GOLOMB, decode_subset
from slicer_compile.errors import PayloadError

#: The bound the reliability issue sets on what a refused tiny payload may cost.
GROWTH_LIMIT = 64 << 20


def _peak_while(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("name", sorted(tiny_but_huge()))
def test_a_tiny_payload_claiming_2_26_elements_is_refused_cheaply(name):
    payload = tiny_but_huge()[name]
    assert len(payload) < 128

    def refuse():
        with pytest.raises(PayloadError):
            decode(payload)

    assert _peak_while(refuse) < GROWTH_LIMIT


def test_a_valid_tiny_payload_can_describe_a_huge_tensor_so_servers_bound_the_elements():
    # ~100 bytes that honestly decode to 2^20 values: only max_elements stops this at 2^28.
    payload = slicer_constant(1 << 20)
    assert len(payload) < 128
    out = decode(payload)
    assert out.shape == (1 << 20,) and out[0] == 0 and out[1:].min() == 1.0
    huge = slicer_constant(HUGE)

    def refuse():
        with pytest.raises(PayloadError, match="exceeds the limit"):
            decode(huge, DecodeLimits(max_elements=4096))

    assert _peak_while(refuse) < 1 << 20


@pytest.mark.parametrize("q_bits", range(1, 17))
@pytest.mark.parametrize("lo", [0.0, 1e30, 1e37, 1e38, 3e38])
def test_a_block_reaching_float32_max_decodes_finite(q_bits, lo):
    top = np.finfo(np.float32).max
    x = np.array([top, lo, np.float32(lo / 2 + top / 2), -top], dtype=np.float32)
    # One block per sign, so that [lo, max] is quantised (q > 0), not sent exactly.
    out = decode(encode(x, SlicerConfig(sparsity=0.0, blocks=(1, 1), q_bits=q_bits, q_min=q_bits)))
    assert np.isfinite(out).all()
    # The block maxima come back within a rounding of the maximum, not past it.
    np.testing.assert_allclose(out[[0, 3]].astype(np.float64), [top, -top], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_int8_decodes_what_it_encodes_at_the_dtype_maximum(dtype):
    top = np.finfo(dtype).max
    x = np.array([top, -top, top / 3, 0], dtype=dtype)
    out = decode(encode(x, Int8Config()))
    assert np.isfinite(out).all() and out.dtype == dtype
    np.testing.assert_allclose(out.astype(np.float64), x.astype(np.float64), rtol=0.01, atol=float(top) / 127)


def test_int8_refuses_a_code_its_encoder_never_writes():
    payload = bytearray(encode(np.array([1.0, -1.0], dtype=np.float32), Int8Config()))
    codes_at = len(payload) - 4 - 2  # the two codes sit just before the CRC
    payload[codes_at] = 0x80  # -128
    payload[-4:] = struct.pack("<I", __import__("zlib").crc32(bytes(payload[:-4])))
    with pytest.raises(PayloadError, match="-128"):
        decode(bytes(payload))


def test_golomb_modulus_one_with_trailing_bytes_is_refused():
    # m = 1: gaps are all unary; three positions 0, 2, 3 of 8 = gaps 0, 1, 0 -> "1" "01" "1".
    section = bytes([GOLOMB]) + struct.pack("<II", 1, 4) + bytes([0b10110000])
    np.testing.assert_array_equal(decode_subset(memoryview(section), 3, 8), [0, 2, 3])
    with pytest.raises(PayloadError, match="streams need"):
        decode_subset(memoryview(section + b"\x00"), 3, 8)
