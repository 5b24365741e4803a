"""Decoder fuzzing: mutate valid payloads and check that decoding either succeeds
or raises PayloadError. Used by the test suite (a few thousand cases) and by
``tools/fuzz_decoder.py`` (as many as you like).

Half of the mutated payloads get their CRC re-stamped, so the fuzz reaches the
section parsers instead of stopping at the checksum.
"""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from typing import Iterator

import numpy as np

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
from slicer_compile.errors import PayloadError


def restamp(payload: bytes) -> bytes:
    """Replace the CRC trailer so that only the structure is wrong."""
    return payload[:-4] + struct.pack("<I", zlib.crc32(payload[:-4]))


def seed_payloads() -> list[bytes]:
    """Valid payloads of every codec, dtype and the main code paths."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 33)).astype(np.float32)
    x[0, :5] = 0
    x[1, 3] = 9.0
    relu = np.maximum(x, 0)
    return [
        encode(x, SlicerConfig(sparsity=0.5)),
        encode(x, SlicerConfig(sparsity=0.9, lam=0.3, blocks=(2, 4), q_bits=5, q_min=1, delta=1.0)),
        encode(relu, SlicerConfig(sparsity=0.1)),
        encode(x.astype(np.float16), SlicerConfig(sparsity=0.75)),
        encode(np.random.default_rng(1).standard_normal(5000).astype(np.float32), SlicerConfig(sparsity=0.95)),
        encode(x, TabqConfig(tau=1.0)),
        encode(x.astype(np.float16), TabqConfig(tau=0.5, q_max=6, delta=0.0)),
        encode(x, Float16Config()),
        encode(x, Int8Config()),
        encode(x, ZstdConfig()),
        encode(x, DenseConfig(bits=4)),  # packed (a small tensor)
        encode(np.random.default_rng(2).standard_normal(5000).astype(np.float32), DenseConfig(bits=3)),  # ANS
        encode(x.astype(np.float16), DenseConfig(bits=8, entropy=False)),
    ]


def mutate(payload: bytes, rng: np.random.Generator) -> bytes:
    """One random corruption: byte flips, truncation, insertion, extreme 32-bit
    fields, deleted spans or bit flips."""
    data = bytearray(payload)
    kind = rng.integers(6)
    if kind == 0:
        for _ in range(rng.integers(1, 4)):
            data[rng.integers(len(data))] = rng.integers(256)
    elif kind == 1:
        data = data[: rng.integers(len(data))]
    elif kind == 2:
        at = rng.integers(len(data))
        data[at:at] = rng.bytes(rng.integers(1, 9))
    elif kind == 3:
        at = rng.integers(max(1, len(data) - 4))
        data[at: at + 4] = struct.pack("<I", int(rng.choice([0, 1, 2**31, 2**32 - 1, rng.integers(2**32)])))
    elif kind == 4:
        at = rng.integers(len(data))
        del data[at: at + rng.integers(1, 16)]
    else:
        for _ in range(rng.integers(1, 6)):
            at = rng.integers(len(data))
            data[at] ^= 1 << rng.integers(8)
    return bytes(data)


def mutated_payloads(seeds: list[bytes], count: int, rng: np.random.Generator) -> Iterator[bytes]:
    """``count`` corruptions of the seeds in turn; every other one gets a fresh CRC."""
    for i in range(count):
        payload = mutate(seeds[i % len(seeds)], rng)
        yield restamp(payload) if i % 2 and len(payload) >= 4 else payload


def fuzz_decoder(iterations: int, seed: int = 0, limits: DecodeLimits = DecodeLimits(max_elements=1 << 20)) -> Counter:
    """Decode ``iterations`` mutated payloads; return counts of "decoded" and
    "rejected". Any exception other than PayloadError propagates: that is a bug."""
    outcomes: Counter = Counter()
    for payload in mutated_payloads(seed_payloads(), iterations, np.random.default_rng(seed)):
        try:
            out = decode(payload, limits)
        except PayloadError:
            outcomes["rejected"] += 1
        else:
            if not isinstance(out, np.ndarray):
                raise AssertionError(f"decode returned {type(out).__name__}")
            outcomes["decoded"] += 1
    return outcomes


# --- stream frames (codec.stream) ---------------------------------------------------


def seed_streams() -> list[tuple[bytes, list[bytes]]]:
    """(session header, three frames) of every codec, narrow tables and wide."""
    from slicer_compile.codec.stream import StreamEncoder

    rng = np.random.default_rng(3)
    tokens = rng.standard_normal((3, 1, 1, 300)).astype(np.float32)
    tokens[1, 0, 0, :7] = 0
    tokens[2, 0, 0, 5] = 40.0
    streams = []
    for cfg, wide in ((SlicerConfig(sparsity=0.9), False), (SlicerConfig(sparsity=0.5, blocks=(2, 3)), True),
                      (TabqConfig(tau=1.5), False), (DenseConfig(bits=4), False), (DenseConfig(bits=3), True),
                      (Float16Config(), False), (Int8Config(), False), (ZstdConfig(), False)):
        # "wide": the version-1 encoder's float32 ranges, which the frame carries as they are.
        encoder = StreamEncoder(cfg, tokens.shape[1:], encoder=(lambda x, c: encode(x, c)) if wide else None)
        streams.append((encoder.header, [encoder.frame(t) for t in tokens]))
    return streams


def reseal(frame: bytes, header: bytes, seq: int) -> bytes:
    """A frame's CRC made right again for its header and number, so that only its
    structure is wrong (what a fuzz must reach)."""
    (header_crc,) = struct.unpack_from("<I", header, len(header) - 4)
    crc = zlib.crc32(frame[:-4], zlib.crc32(struct.pack("<Q", seq), header_crc))
    return frame[:-4] + struct.pack("<I", crc)


def fuzz_frames(iterations: int, seed: int = 0) -> Counter:
    """Decode ``iterations`` mutated frames (every other one resealed) at their place in
    their stream; count "decoded" and "rejected". A decoder must answer each with a
    tensor of its header's shape or a PayloadError, and a rejected frame must leave it
    where it was (the true frame still decodes after it)."""
    from slicer_compile.codec.stream import StreamDecoder

    rng = np.random.default_rng(seed)
    streams = seed_streams()
    outcomes: Counter = Counter()
    for i in range(iterations):
        header, frames = streams[i % len(streams)]
        seq = int(rng.integers(len(frames)))
        decoder = StreamDecoder(header)
        decoder.decode_all(frames[:seq])
        frame = mutate(frames[seq], rng)
        if i % 2 and len(frame) >= 5:
            frame = reseal(frame, header, seq)
        try:
            out = decoder.decode(frame)
        except PayloadError:
            outcomes["rejected"] += 1
            if decoder.seq != seq:
                raise AssertionError("a rejected frame moved the decoder on")
            decoder.decode(frames[seq])
        else:
            if out.shape != decoder.header.shape:
                raise AssertionError(f"a frame decoded to {out.shape}, its header says {decoder.header.shape}")
            outcomes["decoded"] += 1
    return outcomes
