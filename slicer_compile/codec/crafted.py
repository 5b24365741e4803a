"""Hand-built payloads that claim far more than they carry: a few bytes whose header
and counts describe 2^26 elements or more. The reliability tests (decoders that
refuse them before allocating, a server that checks the crossing first) and the
reliability benchmark (tools/reliability_battery.py) make them here, in one place.

Every payload is well framed (magic, version, CRC), so a decoder gets past the frame
and must judge the sections.
"""

from __future__ import annotations

import struct

import numpy as np

from slicer_compile.codec import slicer, tabq
from slicer_compile.codec.config import SlicerConfig, TabqConfig
from slicer_compile.codec.positions import GOLOMB_COMPLEMENT, TRIVIAL
from slicer_compile.codec.wire import PayloadWriter

HUGE = 1 << 26


def _complement_of_first(space: int) -> bytes:
    """Position section: every index of ``space`` but index 0 (a complement Golomb
    code of one gap: m = 1, one unary bit)."""
    return bytes([GOLOMB_COMPLEMENT]) + struct.pack("<II", 1, 1) + b"\x80"


def slicer_constant(elements: int = HUGE, valid: bool = True, dtype=np.float32) -> bytes:
    """A SLICER payload of ~100 bytes: T - 1 kept values, all in one constant block
    (q = 0: no value bits). Valid, it decodes to ``elements`` values; with
    ``valid=False`` it claims two positive blocks but carries no labels for them."""
    cfg = SlicerConfig(sparsity=0.0, blocks=(1 if valid else 2, 1))
    writer = PayloadWriter(cfg.codec_id, np.dtype(dtype), (elements,), slicer.KNOBS.pack(*cfg.knob_values()))
    writer.section(slicer.META.pack(elements - 1, 0))
    writer.section(_complement_of_first(elements))
    writer.section(bytes([TRIVIAL]))  # no negative values
    writer.section(b"")  # labels+: none needed with one block; two blocks need (T-1) labels
    writer.section(b"")  # labels-
    blocks = 1 if valid else 2
    writer.section(b"".join(struct.pack("<Bff", 0, 1.0, 1.0) for _ in range(blocks)))
    writer.section(b"")  # values: constant blocks carry none
    return writer.finish()


def slicer_short_values(elements: int = HUGE) -> bytes:
    """A SLICER payload whose lengths hold until the last section: T - 1 kept values
    in one block at 8 bits, and a value section of a single byte."""
    cfg = SlicerConfig(sparsity=0.0, blocks=(1, 1), q_bits=8, q_min=8)
    writer = PayloadWriter(cfg.codec_id, np.dtype(np.float32), (elements,), slicer.KNOBS.pack(*cfg.knob_values()))
    writer.section(slicer.META.pack(elements - 1, 0))
    writer.section(_complement_of_first(elements))
    writer.section(bytes([TRIVIAL]))
    writer.section(b"")
    writer.section(b"")
    writer.section(struct.pack("<Bff", 8, 0.0, 1.0))
    writer.section(b"\x00")
    return writer.finish()


def tabq_one_per_token(elements: int = HUGE) -> bytes:
    """A TS + TAB-Q payload of ~60 bytes, shape (T, 1): every element is its own
    token, none exact, and none of the sign, token or value bytes that needs."""
    cfg = TabqConfig()
    writer = PayloadWriter(cfg.codec_id, np.dtype(np.float32), (elements, 1),
                           tabq.KNOBS.pack(cfg.tau, cfg.delta, cfg.q_max, cfg.q_min))
    writer.section(tabq.META.pack(0))
    writer.section(bytes([TRIVIAL]))
    for _ in range(4):  # above, tokens, signs, values
        writer.section(b"")
    return writer.finish()


def raw_short(codec_id: int, knobs: bytes = b"", sections: int = 1, elements: int = HUGE) -> bytes:
    """A baseline payload (float16, int8, zstd) claiming ``elements`` with empty sections."""
    writer = PayloadWriter(codec_id, np.dtype(np.float32), (elements,), knobs)
    for _ in range(sections):
        writer.section(b"")
    return writer.finish()


def zstd_truncated(elements: int = HUGE) -> bytes:
    """A zstd payload whose frame declares 2·T bytes of content and then stops."""
    frame = struct.pack("<I", 0xFD2FB528) + bytes([0xA0]) + struct.pack("<I", 2 * elements)[:4]
    writer = PayloadWriter(5, np.dtype(np.float32), (elements,), b"\x03")
    writer.section(frame)
    return writer.finish()


def dense_short(elements: int = HUGE, mode: int = 1) -> bytes:
    """A dense payload claiming ``elements`` whose range table and values are missing."""
    from slicer_compile.codec import dense

    writer = PayloadWriter(6, np.dtype(np.float32), (elements,), dense.KNOBS.pack(4, 1))
    for section in (dense.META.pack(mode), b"", b"\x01\x00" * 16, b"\x00" * 8):
        writer.section(section)
    return writer.finish()


def tiny_but_huge() -> dict[str, bytes]:
    """Every codec's few-byte payload that claims 2^26 elements and is invalid."""
    return {
        "slicer-labels": slicer_constant(valid=False),
        "slicer-values": slicer_short_values(),
        "tabq": tabq_one_per_token(),
        "float16": raw_short(3),
        "int8": raw_short(4, sections=2),
        "zstd": zstd_truncated(),
        "dense": dense_short(),
    }
