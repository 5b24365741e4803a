"""An independent, slow, obviously-correct model of the SLICER codec's choices,
written from DESIGN.md with sorts instead of selections. Tests compare the fast
codec against it."""

from __future__ import annotations

import numpy as np


def reference_kept(x: np.ndarray, k: int, lam: float) -> np.ndarray:
    """Top-k flat indices by ATKF score, ties to the lower index, zeros never kept."""
    flat = x.astype(np.float32).ravel()
    lam32 = np.float32(lam)
    scores = np.where(flat > 0, flat / (np.float32(1) + lam32), -flat / (np.float32(1) - lam32)).astype(np.float32)
    scores[flat == 0] = 0
    order = np.lexsort((np.arange(flat.size), -scores.astype(np.float64)))
    top = [i for i in order[:k] if scores[i] > 0]
    return np.sort(np.array(top, dtype=np.int64))


def reference_blocks(x: np.ndarray, kept: np.ndarray, blocks: tuple[int, int]) -> list[np.ndarray]:
    """Flat indices of each MS block: positive blocks (largest first), then negative."""
    flat = x.astype(np.float32).ravel()
    out = []
    for sign, m in ((1, blocks[0]), (-1, blocks[1])):
        members = kept[np.sign(flat[kept]) == sign]
        order = np.lexsort((members, -np.abs(flat[members]).astype(np.float64)))
        ranked = members[order]
        n = ranked.size
        nb = min(m, n)
        if nb == 0:
            continue
        base = n // nb
        for b in range(nb):
            end = (b + 1) * base if b < nb - 1 else n
            out.append(np.sort(ranked[b * base: end]))
    return out
