"""The decoder trusts nothing: header checks, limits, and a fuzz of every codec.

Mutated payloads get their CRC re-stamped half of the time, so the fuzz reaches
the section parsers instead of stopping at the checksum.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from slicer_compile.codec import DecodeLimits, PayloadError, decode, inspect_payload
from slicer_compile.codec.fuzz import fuzz_decoder, restamp, seed_payloads
from slicer_compile.codec.wire import FORMAT_VERSION, MAGIC


def test_valid_payloads_decode():
    for payload in seed_payloads():
        assert decode(payload).shape in ((4, 33), (5000,))


def test_fuzz_mutated_payloads_decode_or_raise_payload_error():
    outcomes = fuzz_decoder(6000, seed=1234)
    assert outcomes["rejected"] > 3000  # the validation is doing work
    assert outcomes["decoded"] > 0  # and some mutations are still valid tensors


def test_fuzz_random_bytes_behind_a_valid_header():
    rng = np.random.default_rng(99)
    rejected = decoded = 0
    for i in range(2000):
        codec_id = 1 + i % 5
        ndim = int(rng.integers(0, 4))
        shape = [int(d) for d in rng.integers(0, 40, ndim)]
        knobs = {1: struct.pack("<fffBBBB", 0.5, 0.0, 0.01, 3, 3, 8, 2), 2: struct.pack("<ffBB", 1.0, 0.2, 4, 1),
                 5: b"\x03"}.get(codec_id, b"")
        head = struct.pack("<4sBBBBHH", MAGIC, FORMAT_VERSION, codec_id, 1 + i % 2, ndim, 0, len(knobs))
        body = head + struct.pack(f"<{ndim}I", *shape) + knobs + rng.bytes(int(rng.integers(0, 80)))
        payload = body + struct.pack("<I", zlib.crc32(body))
        try:
            decode(payload)
            decoded += 1
        except PayloadError:
            rejected += 1
    assert rejected + decoded == 2000
    assert rejected > 1000  # random sections behind a valid header are mostly refused: the checks run


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "shorter than any valid"),
        (b"NOPE" + bytes(20), "not a slicer payload"),
        (restamp(MAGIC + bytes([99]) + bytes(20)), "format version 99 where version 1 was expected"),
    ],
)
def test_header_errors_say_what_is_wrong(payload, message):
    with pytest.raises(PayloadError, match=message):
        decode(payload)


def test_crc_mismatch():
    payload = bytearray(seed_payloads()[0])
    payload[30] ^= 0xFF
    with pytest.raises(PayloadError, match="CRC"):
        decode(bytes(payload))


def test_oversized_tensor_is_rejected_before_allocation():
    # A 12-byte payload that claims 2^31 elements must not allocate 8 GiB.
    knobs = struct.pack("<fffBBBB", 0.99, 0.0, 0.01, 3, 3, 8, 2)
    body = struct.pack("<4sBBBBHH", MAGIC, FORMAT_VERSION, 1, 1, 2, 0, len(knobs)) + struct.pack("<2I", 2**16, 2**15)
    body += knobs
    with pytest.raises(PayloadError, match="exceeds the limit"):
        decode(body + struct.pack("<I", zlib.crc32(body)))
    with pytest.raises(PayloadError, match="payload of .* exceeds"):
        decode(seed_payloads()[0], DecodeLimits(max_payload_bytes=16))


def test_unknown_codec_and_trailing_bytes():
    good = seed_payloads()[7]
    bad_codec = bytearray(good)
    bad_codec[5] = 42
    with pytest.raises(PayloadError, match="unknown codec id 42"):
        decode(restamp(bytes(bad_codec)))
    with pytest.raises(PayloadError, match="unexpected bytes"):
        decode(restamp(good[:-4] + b"\x00\x00" + good[-4:]))


def test_inspect_payload_reports_sections():
    info = inspect_payload(seed_payloads()[0])
    assert info.codec == "slicer" and info.shape == (4, 33)
    assert sum(info.section_bytes.values()) + info.header_bits // 8 - 4 * len(info.section_bytes) > 0
    assert info.position_bits + info.value_bits + info.header_bits == 8 * info.total_bytes


def test_decode_rejects_non_bytes():
    with pytest.raises(PayloadError, match="must be bytes"):
        decode("SLCR")  # type: ignore[arg-type]
