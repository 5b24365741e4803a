"""Asymmetric integer quantisation (AIQ) and its adaptive bit choice (ABQ / TAB-Q).

Shared by the SLICER codec (groups = magnitude blocks) and TS + TAB-Q (groups
= tokens). All arithmetic is float32 with no fused multiply-add, the contract
a GPU implementation must reproduce bit for bit.
"""

from __future__ import annotations

import numpy as np

from slicer_compile.errors import PayloadError

_F32 = np.float32
_F32_MAX = np.finfo(np.float32).max
#: One quantiser group on the wire: bit-width, then the magnitude range (9 bytes, unaligned).
GROUP_DTYPE = np.dtype([("q", "u1"), ("lo", "<f4"), ("hi", "<f4")])


# Few groups (SLICER blocks) are processed one slice at a time with scalar lo
# and step; many groups (TAB-Q tokens) with per-element arrays. Both do the same
# float32 operations, so they give the same codes.
_SLICE_MAX_GROUPS = 64


def quantize_groups(mags: np.ndarray, starts: np.ndarray, sizes: np.ndarray, lo: np.ndarray,
                    step: np.ndarray, q: np.ndarray) -> np.ndarray:
    """AIQ codes ``rint((v - lo) / step)`` (ties to even), at most ``2^q - 1``.

    ``mags`` is grouped contiguously; group g has ``lo[g]``, ``step[g]`` and
    ``q[g]`` bits. ``v >= lo`` holds (lo is the group's minimum), so there is
    no lower clamp; a constant group (step 0) gets code 0.
    """
    levels = ((np.int64(1) << q.astype(np.int64)) - 1).astype(_F32)
    safe_step = np.where(step > 0, step, _F32(1)).astype(_F32)
    if sizes.size <= _SLICE_MAX_GROUPS:
        codes = np.empty(mags.size, dtype=np.int32)
        for start, size, g_lo, g_step, g_levels in zip(starts, sizes, lo, safe_step, levels):
            group = mags[start: start + size]
            codes[start: start + size] = np.minimum(np.rint((group - g_lo) / g_step), g_levels)
        return codes
    codes = np.rint((mags - np.repeat(lo, sizes)) / np.repeat(safe_step, sizes))
    return np.minimum(codes, np.repeat(levels, sizes)).astype(np.int32)


def dequantize_groups(codes: np.ndarray, sizes: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``lo + code·step`` in float32 per group: a product then a sum, never fused.

    Near the float32 maximum the sum can round past ``hi`` to +Inf; it is clamped to
    the largest finite value (as every C++ and CUDA decoder does: codec_math.h
    clampFinite), so that a finite tensor never decodes to Inf.
    """
    with np.errstate(over="ignore"):
        if sizes.size <= _SLICE_MAX_GROUPS:
            out = np.empty(codes.size, dtype=_F32)
            start = 0
            for size, g_lo, g_step in zip(sizes, lo, step):
                out[start: start + size] = codes[start: start + size].astype(_F32) * g_step + g_lo
                start += size
        else:
            out = codes.astype(_F32) * np.repeat(step, sizes) + np.repeat(lo, sizes)
    return np.minimum(out, _F32_MAX, out=out)


def block_step(lo: np.ndarray, hi: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Quantiser step ``(hi - lo) / (2^q - 1)`` in float32 (0 where q = 0)."""
    levels = ((np.int64(1) << q.astype(np.int64)) - 1).astype(_F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = (hi - lo) / levels
    return np.where(q > 0, step, _F32(0)).astype(_F32)


def choose_bits(mags: np.ndarray, starts: np.ndarray, sizes: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                q_bits: int, q_min: int, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """ABQ: per group, lower q from q_bits while ``DS(q) <= δ``; return (q, codes).

    ``mags`` is grouped (``starts``/``sizes``: SLICER blocks, or TAB-Q tokens).
    ``DS(q)`` is the mean of ``|floor(C0 / 2^(q_bits - q)) - C_q|`` with ``C0``
    the codes at q_bits. Constant groups (lo == hi) need no bits: q = 0.
    """
    q = np.full(sizes.size, q_bits, dtype=np.int64)
    q[lo == hi] = 0
    reference = quantize_groups(mags, starts, sizes, lo, block_step(lo, hi, q), q)
    codes = reference
    active = q > 0
    for trial in range(q_bits - 1, q_min - 1, -1):
        if not active.any():
            break
        q_trial = np.where(active, trial, q)
        trial_codes = quantize_groups(mags, starts, sizes, lo, block_step(lo, hi, q_trial), q_trial)
        mismatch = np.abs((reference >> (q_bits - trial)) - trial_codes)
        ds = np.add.reduceat(mismatch, starts) / sizes
        passed = active & (ds <= delta)
        q = np.where(passed, trial, q)
        codes = np.where(np.repeat(passed, sizes), trial_codes, codes)
        active = passed
    return q, codes


def float16_outward(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``[lo, hi]`` widened to the nearest float16 values outside it (float32 arrays),
    or None where a bound lies beyond float16's range.

    The stream form of the wire carries a group's range in 4 bytes instead of 8 when
    both ends are float16 values; an encoder that quantises against this slightly wider
    range loses ~2^-11 of the range's ends in resolution, and every value stays inside.
    """
    with np.errstate(over="ignore"):
        lo16, hi16 = lo.astype(np.float16), hi.astype(np.float16)
    if not (np.isfinite(lo16).all() and np.isfinite(hi16).all()):
        return None
    lo16 = np.where(lo16.astype(_F32) > lo, np.nextafter(lo16, np.float16(-np.inf)), lo16)
    hi16 = np.where(hi16.astype(_F32) < hi, np.nextafter(hi16, np.float16(np.inf)), hi16)
    if not (np.isfinite(lo16).all() and np.isfinite(hi16).all()):
        return None
    return lo16.astype(_F32), hi16.astype(_F32)


def group_table(groups: int, q: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bytes:
    """The wire form of ``groups`` quantiser groups."""
    table = np.empty(groups, dtype=GROUP_DTYPE)
    table["q"], table["lo"], table["hi"] = q, lo, hi
    return table.tobytes()


def read_group_table(buf, groups: int, out_dtype: np.dtype, q_min: int, q_max: int,
                     what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decoder side of :func:`group_table`: (q, lo, hi), every entry checked.

    Each range must be finite, ordered, non-negative and representable in the
    output dtype (so decoding cannot overflow to inf); a constant group has
    q = 0 and every other q lies in ``[q_min, q_max]``.
    """
    if len(buf) != groups * GROUP_DTYPE.itemsize:
        raise PayloadError(f"{what} table of {len(buf)} bytes for {groups} {what}s")
    table = np.frombuffer(buf, dtype=GROUP_DTYPE)
    q = table["q"].astype(np.int64)
    lo, hi = table["lo"].astype(_F32), table["hi"].astype(_F32)
    top = float(np.finfo(out_dtype).max)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all() and (lo >= 0).all() and (hi >= lo).all()
            and (hi <= top).all()):
        raise PayloadError(f"{what} table holds a non-finite, inverted or out-of-range magnitude range")
    varying = lo < hi
    if (q[~varying] != 0).any() or ((q[varying] < q_min) | (q[varying] > q_max)).any():
        raise PayloadError(f"{what} bit-widths outside [{q_min}, {q_max}] (0 for constant {what}s)")
    return q, lo, hi
