"""Padding-aware coding: where an attention mask crosses beside an activation whose
first two axes are the mask's (batch, sequence), the padded rows are zeroed before the
encoder and the kept count is taken over the valid rows only, so no bit is spent on
positions the model's masked attention and pooling throw away. The server restores
zeros there, which is what those positions are worth to it.

The same two steps run wherever a payload is made: the edge client's Python encoder,
calibration, and (as a Mul node before the encoder node, with the knobs computed here)
an engine that encodes inside.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: The largest float32 sparsity below 1 (a wholly padded tensor keeps nothing).
_MAX_SPARSITY = float(np.nextafter(np.float32(1), np.float32(0)))


def masked(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``x`` [B, S, ...] with the rows where ``mask`` [B, S] is 0 set to zero."""
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"mask of shape {mask.shape} does not cover the first axes of {x.shape}")
    keep = (mask != 0).reshape(mask.shape + (1,) * (x.ndim - 2))
    return np.where(keep, x, np.zeros((), x.dtype))


def valid_fraction(mask: np.ndarray) -> float:
    return float(np.count_nonzero(mask)) / mask.size if mask.size else 1.0


def sparsity_for_valid(sparsity: float, fraction: float) -> float:
    """The sparsity over the whole tensor that keeps ``(1 - sparsity)`` of the valid
    elements: ``k = (1 - s)·T_valid``."""
    return min(1.0 - (1.0 - float(sparsity)) * fraction, _MAX_SPARSITY)


def padded_config(cfg, mask: np.ndarray):
    """``cfg`` with the sparsity that keeps ``(1 - cfg.sparsity)`` of the rows ``mask`` keeps."""
    return dataclasses.replace(cfg, sparsity=sparsity_for_valid(cfg.sparsity, valid_fraction(mask)))
