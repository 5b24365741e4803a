"""Asymmetric integer quantisation (AIQ) and its adaptive bit choice (ABQ / TAB-Q).

Shared by the SLICER codec (groups = magnitude blocks) and TS + TAB-Q (groups
= tokens). All arithmetic is float32 with no fused multiply-add, the contract
a GPU implementation must reproduce bit for bit.
"""

from __future__ import annotations

import numpy as np

_F32 = np.float32


def quantize(values: np.ndarray, lo: np.ndarray, step: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """AIQ codes ``round((v - lo) / step)``, at most ``levels`` (float32, ties to even).

    ``values >= lo`` holds (lo is the group's minimum), so no lower clamp is
    needed; a constant group (step 0) gets code 0.
    """
    safe_step = np.where(step > 0, step, _F32(1))
    codes = np.rint((values - lo) / safe_step)
    return np.minimum(codes, levels.astype(_F32, copy=False)).astype(np.int32)


def dequantize(codes: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``lo + code·step`` in float32: a product then a sum, never fused."""
    return codes.astype(_F32) * step + lo


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
    lo_e = np.repeat(lo, sizes)
    levels0 = np.repeat((np.int32(1) << q) - 1, sizes)
    reference = quantize(mags, lo_e, np.repeat(block_step(lo, hi, q), sizes), levels0)
    codes = reference.copy()
    active = q > 0
    for trial in range(q_bits - 1, q_min - 1, -1):
        if not active.any():
            break
        q_trial = np.where(active, trial, q)
        step_e = np.repeat(block_step(lo, hi, q_trial), sizes)
        trial_codes = quantize(mags, lo_e, step_e, np.repeat((np.int32(1) << q_trial) - 1, sizes))
        mismatch = np.abs((reference >> (q_bits - trial)) - trial_codes)
        ds = np.add.reduceat(mismatch, starts) / sizes
        passed = active & (ds <= delta)
        q = np.where(passed, trial, q)
        take = np.repeat(passed, sizes)
        codes[take] = trial_codes[take]
        active = passed
    return q, codes
