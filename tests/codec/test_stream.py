"""The stream form of the wire: a session header once, compact frames per token, and
everything a frame can get wrong refused with PayloadError, the decoder left as it was."""

from __future__ import annotations

import numpy as np
import pytest

from slicer_compile.codec import (
    DecodeLimits,
    DenseConfig,
    Float16Config,
    Int8Config,
    SlicerConfig,
    TabqConfig,
    ZstdConfig,
    decode,
    encode,
)
from slicer_compile.codec.fuzz import fuzz_frames, reseal
from slicer_compile.codec.stream import FRAME_OVERHEAD_NBYTES, StreamDecoder, StreamEncoder, session_header
from slicer_compile.errors import ConfigError, PayloadError

SHAPE = (1, 1, 4096)
CONFIGS = [SlicerConfig(sparsity=0.99), SlicerConfig(sparsity=0.9, blocks=(2, 5)), TabqConfig(tau=2.0),
           DenseConfig(bits=6), DenseConfig(bits=4, entropy=False), Float16Config(), Int8Config(), ZstdConfig()]
WITH_TABLES = ("slicer", "tabq", "dense")


def tokens(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, *SHAPE)).astype(np.float32)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.name)
def test_frames_decode_to_what_their_payloads_decode_to(cfg):
    encoder = StreamEncoder(cfg, SHAPE)
    decoder = StreamDecoder(encoder.header)
    for x in tokens(4):
        frame = encoder.frame(x)
        expected = decode(encode(x, cfg, float16_ranges=True))
        np.testing.assert_array_equal(decoder.decode(frame), expected)
        assert bool(frame[0] & 0x80) == (cfg.name in WITH_TABLES)  # tables narrow where there are any
    assert decoder.seq == encoder.seq == 4


@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c.name in WITH_TABLES], ids=lambda c: c.name)
def test_a_payload_with_float32_ranges_streams_with_wide_tables(cfg):
    encoder = StreamEncoder(cfg, SHAPE, encoder=lambda x, c: encode(x, c))
    decoder = StreamDecoder(encoder.header)
    for x in tokens(3, seed=1):
        frame = encoder.frame(x)
        assert not frame[0] & 0x80
        np.testing.assert_array_equal(decoder.decode(frame), decode(encode(x, cfg)))


def test_a_frame_is_the_content_and_five_bytes():
    x = tokens(1)[0]
    assert len(StreamEncoder(Float16Config(), SHAPE).frame(x)) == 2 * 4096 + FRAME_OVERHEAD_NBYTES
    assert len(StreamEncoder(Int8Config(), SHAPE).frame(x)) == 4 + 4096 + FRAME_OVERHEAD_NBYTES
    # SLICER: the version-1 header (44 bytes with knobs and shape), seven uint32 lengths,
    # the CRC and half the block table (6 blocks x 4.5 bytes) and the meta/Golomb
    # integers (~11 bytes as varints) are what a frame does not carry.
    cfg = SlicerConfig(sparsity=0.99)
    frame, payload = StreamEncoder(cfg, SHAPE).frame(x), encode(x, cfg, float16_ranges=True)
    assert len(payload) - len(frame) >= 44 + 28 + 4 + 27 + 8 - FRAME_OVERHEAD_NBYTES


@pytest.mark.parametrize("cfg", [SlicerConfig(sparsity=0.99), SlicerConfig(sparsity=0.95), TabqConfig(tau=2.0),
                                 DenseConfig(bits=4)], ids=lambda c: f"{c.name}")
def test_float16_ranges_cost_under_a_tenth_of_a_percent_of_mse(cfg):
    x = tokens(16, seed=2)
    narrow = sum(float(((decode(encode(t, cfg, float16_ranges=True)) - t) ** 2).sum()) for t in x)
    wide = sum(float(((decode(encode(t, cfg)) - t) ** 2).sum()) for t in x)
    assert narrow <= 1.001 * wide


def test_a_frame_decodes_only_against_its_own_header():
    x = tokens(1)[0]
    frame = StreamEncoder(SlicerConfig(sparsity=0.99), SHAPE).frame(x)
    for other in (session_header(SlicerConfig(sparsity=0.98), SHAPE), session_header(SlicerConfig(sparsity=0.99),
                  (1, 1, 4097)), session_header(TabqConfig(), SHAPE)):
        with pytest.raises(PayloadError, match="CRC mismatch"):
            StreamDecoder(other).decode(frame)


def test_reordered_replayed_and_lost_frames_are_refused_and_change_nothing():
    encoder = StreamEncoder(SlicerConfig(sparsity=0.95), SHAPE)
    frames = [encoder.frame(x) for x in tokens(4)]
    decoder = StreamDecoder(encoder.header)
    decoder.decode(frames[0])
    with pytest.raises(PayloadError, match="numbered 2 .* where frame 1 was expected"):
        decoder.decode(frames[2])
    with pytest.raises(PayloadError, match="numbered 0 .* where frame 1 was expected"):
        decoder.decode(frames[0])  # a replay
    assert decoder.seq == 1
    decoder.decode(frames[1])
    # All or none: a bad frame in a batch leaves the decoder before the batch.
    with pytest.raises(PayloadError):
        decoder.decode_all([frames[2], frames[2]])
    assert decoder.seq == 2
    assert len(decoder.decode_all(frames[2:])) == 2


def test_a_frame_from_128_frames_ago_is_refused_by_its_crc():
    encoder = StreamEncoder(Int8Config(), (1, 1, 8))
    frames = [encoder.frame(np.full((1, 1, 8), i, np.float32)) for i in range(129)]
    decoder = StreamDecoder(encoder.header)
    decoder.decode_all(frames[:128])
    with pytest.raises(PayloadError, match="frame 128: CRC mismatch"):
        decoder.decode(frames[0])  # same tag (0 mod 128), another number
    decoder.decode(frames[128])


@pytest.mark.parametrize("cfg", CONFIGS[:4], ids=lambda c: c.name)
def test_every_truncation_is_refused(cfg):
    encoder = StreamEncoder(cfg, SHAPE)
    frame = encoder.frame(tokens(1)[0])
    decoder = StreamDecoder(encoder.header)
    refused = 0
    for length in range(len(frame)):
        with pytest.raises(PayloadError):
            decoder.decode(frame[:length])
        if length >= 5:  # resealed, so only the structure says it is short
            try:
                assert decoder.decode(reseal(frame[:length], encoder.header, 0)).shape == SHAPE
                decoder.seq = 0
            except PayloadError:
                refused += 1
    # The structure gives every length but a section that runs to the frame's end: an
    # ANS section cut at a word boundary can still be a valid (other) section.
    assert refused >= (len(frame) - 5) * (0.99 if cfg.name == "dense" else 1.0)
    decoder.decode(frame)


def test_lengths_that_disagree_with_the_header_are_refused():
    header = session_header(Float16Config(), SHAPE)
    frame = StreamEncoder(Float16Config(), SHAPE).frame(tokens(1)[0])
    longer = reseal(frame[:-4] + b"\0\0" + frame[-4:], header, 0)
    with pytest.raises(PayloadError, match="float16 section of 8194 bytes"):
        StreamDecoder(header).decode(longer)
    # A table-less codec's frame cannot claim narrow tables.
    with pytest.raises(PayloadError, match="claims narrow tables"):
        StreamDecoder(header).decode(reseal(bytes([0x80]) + frame[1:], header, 0))


def test_counts_larger_than_the_header_allows_are_refused_before_allocating():
    header = session_header(SlicerConfig(sparsity=0.99), SHAPE)
    # kept count 2^31 as a varint, where k = 40 for 4096 elements
    crafted = reseal(bytes([0x80]) + bytes([0x80, 0x80, 0x80, 0x80, 0x08, 0]) + bytes(8), header, 0)
    with pytest.raises(PayloadError, match="kept count of 2147483648 exceeds 40"):
        StreamDecoder(header).decode(crafted)


def test_session_headers_are_checked():
    with pytest.raises(PayloadError, match="format version 1 where version 2 was expected"):
        StreamDecoder(encode(tokens(1)[0], Float16Config()))
    with pytest.raises(PayloadError, match="a stream session header where version 1 was expected"):
        decode(session_header(Float16Config(), SHAPE))
    with pytest.raises(PayloadError, match="exceeds the limit"):
        StreamDecoder(session_header(Float16Config(), SHAPE), DecodeLimits(max_elements=1024))
    with pytest.raises(PayloadError):
        StreamDecoder(b"SLCR\x02garbage")


def test_the_encoder_takes_only_its_own_tensors():
    encoder = StreamEncoder(SlicerConfig(sparsity=0.9), SHAPE)
    with pytest.raises(ConfigError, match="shape"):
        encoder.frame(np.zeros((1, 1, 4095), np.float32))
    with pytest.raises(ConfigError, match="not of this stream"):
        encoder.frame_of(encode(tokens(1)[0], SlicerConfig(sparsity=0.8)))
    assert encoder.seq == 0


def test_fuzzed_frames_decode_or_raise_payload_error():
    outcomes = fuzz_frames(3000, seed=7)
    assert outcomes["rejected"] > 1000 and outcomes["decoded"] > 0


def test_the_wire_benchmark_measures_both_forms():
    from slicer_compile.codec.bench import run_wire_benchmark

    rows = run_wire_benchmark(elements=1024, sparsities=(0.9,), tokens=4)
    assert {r.codec for r in rows} >= {"slicer", "tabq", "dense-6", "dense-4", "float16", "int8", "zstd"}
    for row in rows:
        # a frame is what a payload holds less its header, lengths and CRC, plus its 5 bytes
        assert row.frame_bytes < row.payload_bytes - 20 and row.frame_overhead_bytes == FRAME_OVERHEAD_NBYTES
        assert abs(row.mse_change) < 0.005  # (bench wire: within 0.1% at 4096 values)
        # SLICER's kept values: a few blocks of 8-bit codes, their error moved by float16 ends either way
        assert abs(row.kept_mse_change) < (0.5 if row.codec == "slicer" else 0.01)
        assert row.narrow_tables == (1.0 if row.codec.split("-")[0] in WITH_TABLES else 0.0)
