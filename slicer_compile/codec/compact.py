"""Each codec's sections in the stream form of the wire (docs/wire-format.md, version 2):
what one token frame carries where a version-1 payload has its body.

A version-1 body is sections, each behind a uint32 length. In a frame:

* a section's length is not sent where the session header and the sections before it
  give it (a label section from its counts, a bitmap from the space, the value section
  runs to the frame's end); what no earlier field gives is a varint;
* the counts of a meta section and a Golomb section's (m, U) are varints;
* bit streams that version 1 pads to a byte per block (SLICER's values) or per
  word (its labels' last word) are packed on: SLICER's block values one after the
  other, its last label word in the bits its own labels need;
* a quantiser table (SLICER's blocks, TAB-Q's tokens, the dense codec's groups) is
  *narrow* where every range is a float16 value (``encode(..., float16_ranges=True)``
  makes them so): 4-bit widths and float16 ends, 4.5 bytes a group instead of 9. A
  frame says in its tag whether its tables are narrow or as in version 1 (wide).

Each codec has a :class:`Form`: ``compact`` from the version-1 sections, ``expand``
back, exactly; the version-1 decoder then decodes, and checks, what ``expand`` gives.
``expand`` reads nothing that a count it has checked against the frame does not bound.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

import numpy as np

from slicer_compile.codec import dense, slicer, tabq
from slicer_compile.codec.bits import pack_uint, packed_nbytes, unpack_uint
from slicer_compile.codec.config import DenseConfig, Float16Config, Int8Config, SlicerConfig, TabqConfig, ZstdConfig
from slicer_compile.codec.positions import (
    BITMAP,
    FIXED,
    GOLOMB,
    GOLOMB_COMPLEMENT,
    TRIVIAL,
    golomb_streams_nbytes,
    index_width,
    label_chunk,
)
from slicer_compile.codec.quant import GROUP_DTYPE
from slicer_compile.codec.wire import Header
from slicer_compile.errors import PayloadError

_GOLOMB_HEADER = struct.Struct("<II")  # m, unary bits (version 1)
_UINT32_MAX = 2**32 - 1
#: Widths a narrow table holds (4 bits each).
_NARROW_MAX_Q = 15


# --- varints and the frame reader ---------------------------------------------------


def varint(value: int) -> bytes:
    """Unsigned LEB128: seven bits a byte, low first, the high bit set on all but the last."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class FrameReader:
    """Reads a frame's body in order; every read checked against what is left."""

    def __init__(self, view: memoryview):
        self._view, self._pos = view, 0

    def take(self, nbytes: int, what: str) -> memoryview:
        if nbytes > len(self._view) - self._pos:
            raise PayloadError(f"frame truncated in {what}: it needs {nbytes} bytes, "
                               f"{len(self._view) - self._pos} remain")
        start = self._pos
        self._pos += nbytes
        return self._view[start: self._pos]

    def varint(self, what: str, limit: int = _UINT32_MAX) -> int:
        """A canonical (shortest) varint no larger than ``limit``."""
        value = shift = 0
        for i in range(5):
            byte = self.take(1, what)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if i and byte == 0:
                    raise PayloadError(f"{what} is not in its shortest varint form")
                if value > limit:
                    raise PayloadError(f"{what} of {value} exceeds {limit}")
                return value
            shift += 7
        raise PayloadError(f"{what} runs past five varint bytes")

    def remaining(self) -> memoryview:
        """What is left, not consumed (to measure a section before taking it)."""
        return self._view[self._pos:]

    def rest(self) -> memoryview:
        start = self._pos
        self._pos = len(self._view)
        return self._view[start:]


# --- shared pieces: position sections, quantiser tables -------------------------------


def _compact_subset(section: memoryview) -> bytes:
    """A version-1 position section with a Golomb body's (m, U) as varints."""
    if len(section) >= 1 + _GOLOMB_HEADER.size and section[0] in (GOLOMB, GOLOMB_COMPLEMENT):
        m, unary_bits = _GOLOMB_HEADER.unpack_from(section, 1)
        return bytes(section[:1]) + varint(m) + varint(unary_bits) + bytes(section[1 + _GOLOMB_HEADER.size:])
    return bytes(section)


def _expand_subset(reader: FrameReader, count: int, space: int, what: str) -> bytes:
    """The version-1 section of ``count`` positions among ``space``; its length follows
    from its method, the counts and, for Golomb, its (m, U) and field stream."""
    method = reader.take(1, what)[0]
    if method == TRIVIAL:
        return bytes([method])
    if method == BITMAP:
        return bytes([method]) + bytes(reader.take(packed_nbytes(space, 1), what))
    if method == FIXED:
        return bytes([method]) + bytes(reader.take(packed_nbytes(count, index_width(space)), what))
    if method not in (GOLOMB, GOLOMB_COMPLEMENT):
        raise PayloadError(f"unknown position coding method {method} in {what}")
    coded = count if method == GOLOMB else space - count
    m = reader.varint(f"{what} Golomb modulus", limit=max(space, 1))
    unary_bits = reader.varint(f"{what} Golomb unary bits")
    if m < 1 or unary_bits < coded or (unary_bits - coded) * m > space:
        raise PayloadError(f"{what}: Golomb (m={m}, U={unary_bits}) is inconsistent with {coded} of {space}")
    nbytes = golomb_streams_nbytes(m, unary_bits, coded, reader.remaining())
    return bytes([method]) + _GOLOMB_HEADER.pack(m, unary_bits) + bytes(reader.take(nbytes, what))


def _concat_bits(streams: list[memoryview], bits: list[int]) -> bytes:
    """Byte-padded streams of ``bits`` bits each, as one stream padded once."""
    if not streams:
        return b""
    flat = [np.unpackbits(np.frombuffer(s, np.uint8))[:n] for s, n in zip(streams, bits)]
    return np.packbits(np.concatenate(flat)).tobytes()


def _split_bits(buf: memoryview, bits: list[int], what: str) -> list[bytes]:
    """Inverse of :func:`_concat_bits`: ``buf`` must be exactly the bits, zero-padded."""
    total = sum(bits)
    if len(buf) != packed_nbytes(total, 1):
        raise PayloadError(f"{what} of {len(buf)} bytes, its counts need {packed_nbytes(total, 1)}")
    flat = np.unpackbits(np.frombuffer(buf, np.uint8))
    if flat[total:].any():
        raise PayloadError(f"{what}: padding bits are not zero")
    ends = np.cumsum(bits)
    return [np.packbits(flat[end - n: end]).tobytes() for end, n in zip(ends, bits)]


def _last_word_bits(count: int, base: int) -> tuple[int, int, int]:
    """(full words, labels in the last word, the last word's bits in a frame)."""
    per_word, _ = label_chunk(base)
    full, last = divmod(count, per_word)
    return full, last, (base ** last - 1).bit_length() if last else 0


def _compact_labels(section: memoryview, count: int, base: int) -> bytes:
    """Version-1 labels (whole words, the last padded with zero labels) with the last
    word in only the bits its own labels need."""
    if base <= 1 or count == 0:
        return b""
    per_word, bits = label_chunk(base)
    full, last, last_bits = _last_word_bits(count, base)
    words = unpack_uint(section, full + (1 if last else 0), bits)
    if not last:
        return pack_uint(words, bits)
    tail = int(words[-1]) // base ** (per_word - last)  # the padding labels are the low digits
    return _concat_bits([memoryview(pack_uint(words[:-1], bits)), memoryview(pack_uint(np.array([tail]), last_bits))],
                        [full * bits, last_bits])


def _expand_labels(reader: FrameReader, count: int, base: int, what: str) -> bytes:
    if base <= 1 or count == 0:
        return b""
    per_word, bits = label_chunk(base)
    full, last, last_bits = _last_word_bits(count, base)
    if not last:
        return bytes(reader.take(packed_nbytes(full, bits), what))
    head, tail = _split_bits(reader.take(packed_nbytes(full * bits + last_bits, 1), what),
                             [full * bits, last_bits], what)
    tail_value = int(unpack_uint(tail, 1, last_bits)[0])
    if tail_value >= base ** last:
        raise PayloadError(f"{what}: the last label word is out of range")
    words = np.append(unpack_uint(head, full, bits), np.uint64(tail_value * base ** (per_word - last)))
    return pack_uint(words, bits)


def _block_bits(blocks: bytes | memoryview, kept: int, negative: int, cfg) -> tuple[list[int], list[int]]:
    """Per SLICER block, (bits of its codes, its bytes in version 1)."""
    sizes = np.concatenate([slicer.block_sizes(kept - negative, cfg.blocks[0]),
                            slicer.block_sizes(negative, cfg.blocks[1])])
    q = np.frombuffer(blocks, dtype=GROUP_DTYPE)["q"].astype(np.int64)
    bits = (sizes * q).tolist()
    return bits, [packed_nbytes(n, 1) for n in bits]


_RANGES = dense.RANGE_DTYPE  # (lo, hi) float32: a table without widths


def _table_dtype(has_q: bool) -> np.dtype:
    return GROUP_DTYPE if has_q else _RANGES


def _narrowable(section: memoryview, has_q: bool) -> bool:
    """Whether a version-1 table fits the narrow form exactly."""
    table = np.frombuffer(section, dtype=_table_dtype(has_q))
    ends = np.concatenate([table["lo"], table["hi"]]).astype(np.float32)
    with np.errstate(over="ignore"):
        exact = bool((ends.astype(np.float16).astype(np.float32) == ends).all())
    return exact and (not has_q or bool((table["q"] <= _NARROW_MAX_Q).all()))


def _compact_table(section: memoryview, has_q: bool, narrow: bool) -> bytes:
    if not narrow:
        return bytes(section)
    table = np.frombuffer(section, dtype=_table_dtype(has_q))
    ends = np.stack([table["lo"], table["hi"]], axis=1).astype("<f2").tobytes()
    if not has_q:
        return ends
    q = np.zeros(2 * -(-table.size // 2), dtype=np.uint8)
    q[: table.size] = table["q"]
    return (q[0::2] << 4 | q[1::2]).astype(np.uint8).tobytes() + ends


def _expand_table(reader: FrameReader, count: int, has_q: bool, narrow: bool, what: str) -> bytes:
    dtype = _table_dtype(has_q)
    if not narrow:
        return bytes(reader.take(count * dtype.itemsize, what))
    table = np.zeros(count, dtype=dtype)
    if has_q:
        nibbles = np.frombuffer(reader.take(-(-count // 2), what), dtype=np.uint8)
        q = np.stack([nibbles >> 4, nibbles & 0x0F], axis=1).ravel()
        if q[count:].any():
            raise PayloadError(f"{what}: the padding width is not zero")
        table["q"] = q[:count]
    ends = np.frombuffer(reader.take(4 * count, what), dtype="<f2").reshape(count, 2).astype(np.float32)
    table["lo"], table["hi"] = ends[:, 0], ends[:, 1]
    return table.tobytes()


# --- one form per codec ----------------------------------------------------------------


@dataclass(frozen=True)
class Form:
    """A codec's stream form: ``compact(sections, header, narrow) -> body`` and
    ``expand(reader, header, narrow) -> sections``; ``tables(sections)``: its quantiser
    tables as (section, has widths), to decide whether a frame can be narrow (None: it
    has none, and its frames are never narrow)."""

    compact: Callable[[list[memoryview], Header, bool], bytes]
    expand: Callable[[FrameReader, Header, bool], list[bytes]]
    tables: Callable[[list[memoryview]], list[tuple[memoryview, bool]]] | None = None


def _slicer_compact(sections, header, narrow):
    meta, mask, signs, labels_pos, labels_neg, blocks, values = sections
    cfg = slicer.read_config(header)
    kept, negative = slicer.META.unpack(meta)
    positive = kept - negative
    bits, nbytes = _block_bits(blocks, kept, negative, cfg)
    streams = np.split(np.frombuffer(values, np.uint8), np.cumsum(nbytes)[:-1]) if nbytes else []
    return b"".join([varint(kept), varint(negative), _compact_subset(mask), _compact_subset(signs),
                     _compact_labels(labels_pos, positive, min(cfg.blocks[0], positive)),
                     _compact_labels(labels_neg, negative, min(cfg.blocks[1], negative)),
                     _compact_table(blocks, True, narrow), _concat_bits([memoryview(s) for s in streams], bits)])


def _slicer_expand(reader, header, narrow):
    cfg = slicer.read_config(header)
    total = header.num_elements
    kept = reader.varint("SLICER kept count", limit=cfg.kept_count(total))
    negative = reader.varint("SLICER negative count", limit=kept)
    mask = _expand_subset(reader, kept, total, "SLICER mask")
    signs = _expand_subset(reader, negative, kept, "SLICER signs")
    positive = kept - negative
    blocks_pos, blocks_neg = min(cfg.blocks[0], positive), min(cfg.blocks[1], negative)
    labels_pos = _expand_labels(reader, positive, blocks_pos, "SLICER labels+")
    labels_neg = _expand_labels(reader, negative, blocks_neg, "SLICER labels-")
    blocks = _expand_table(reader, blocks_pos + blocks_neg, True, narrow, "SLICER block table")
    bits, _ = _block_bits(blocks, kept, negative, cfg)
    values = b"".join(_split_bits(reader.rest(), bits, "SLICER values"))
    return [slicer.META.pack(kept, negative), mask, signs, labels_pos, labels_neg, blocks, values]


def _tabq_compact(sections, header, narrow):
    meta, mask, above, tokens, signs, values = sections
    (exact,) = tabq.META.unpack(meta)
    return b"".join([varint(exact), _compact_subset(mask), bytes(above), varint(len(tokens) // GROUP_DTYPE.itemsize),
                     _compact_table(tokens, True, narrow), bytes(signs), bytes(values)])


def _tabq_expand(reader, header, narrow):
    total = header.num_elements
    width = tabq.token_length(header.shape)
    exact = reader.varint("TAB-Q exact count", limit=total)
    mask = _expand_subset(reader, exact, total, "TAB-Q mask")
    above = bytes(reader.take(exact * header.dtype.itemsize, "TAB-Q exact values"))
    tokens = reader.varint("TAB-Q token count", limit=total // width if width else 0)
    table = _expand_table(reader, tokens, True, narrow, "TAB-Q token table")
    signs = bytes(reader.take(packed_nbytes(total - exact, 1), "TAB-Q signs"))
    return [tabq.META.pack(exact), mask, above, table, signs, bytes(reader.rest())]


def _dense_compact(sections, header, narrow):
    meta, ranges, model, values = sections
    return b"".join([bytes(meta), _compact_table(ranges, False, narrow), bytes(model), bytes(values)])


def _dense_expand(reader, header, narrow):
    cfg = dense.read_config(header)
    meta = bytes(reader.take(dense.META.size, "dense meta"))
    _, groups = dense.groups_of(header.shape)
    ranges = _expand_table(reader, groups, False, narrow, "dense ranges")
    model = bytes(reader.take(2 << cfg.bits if meta[0] == dense.ANS else 0, "dense model"))
    return [meta, ranges, model, bytes(reader.rest())]


def _values_only(sections, header, narrow):
    return b"".join(bytes(s) for s in sections)


def _int8_expand(reader, header, narrow):
    return [bytes(reader.take(4, "int8 scale")), bytes(reader.rest())]


#: The stream form of every codec, by codec id.
FORMS: dict[int, Form] = {
    SlicerConfig.codec_id: Form(_slicer_compact, _slicer_expand, lambda s: [(s[5], True)]),
    TabqConfig.codec_id: Form(_tabq_compact, _tabq_expand, lambda s: [(s[3], True)]),
    DenseConfig.codec_id: Form(_dense_compact, _dense_expand, lambda s: [(s[1], False)]),
    Float16Config.codec_id: Form(_values_only, lambda reader, header, narrow: [bytes(reader.rest())]),
    Int8Config.codec_id: Form(_values_only, _int8_expand),
    ZstdConfig.codec_id: Form(_values_only, lambda reader, header, narrow: [bytes(reader.rest())]),
}


def can_narrow(form: Form, sections: list[memoryview]) -> bool:
    """Whether every quantiser table of these sections fits the narrow form (a codec
    without tables: no, so its frames never claim it)."""
    if form.tables is None:
        return False
    return all(_narrowable(section, has_q) for section, has_q in form.tables(sections))
