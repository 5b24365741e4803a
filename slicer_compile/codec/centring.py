"""Per-channel centring: code ``x - offset`` and add the offset back after decoding.

After a learnable affine layer (``x·w + b``, re-parameterised mobile blocks, a
LayerNorm's bias) the channels of an activation sit on large offsets. Top-k sets
every dropped value to zero, far from its channel's offset, and the model downstream
reads nonsense at any sparsity. Coding the residual instead drops values to their
channel's mean, which is what such a tensor is worth where nothing was sent.

The offsets are measured once, on the calibration samples, and travel once: in the
manifest and as constants in both engines (a Sub before the encoder node, an Add after
the decoder), never in a payload. Whether a tensor is centred is decided per tensor,
from the codec's own reconstruction error on those samples (:func:`choose_centre`), so
a tensor that codes better plain (a ReLU map, whose zeros would turn into -offset)
stays plain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from slicer_compile.errors import ArtifactError

#: Centre only where the residual codes with at most this share of the plain error:
#: a clear gain, not noise between two near-equal choices.
GAIN_REQUIRED = 0.8
#: Offsets smaller than this share of the tensor's energy are not worth a node.
MIN_OFFSET_ENERGY = 0.05
#: A tensor with at least this share of exact zeros (a ReLU map) stays plain without a
#: trial: its zeros cost top-k nothing, and centring would turn them into -offset.
PLAIN_ZERO_SHARE = 0.25


@dataclass(frozen=True, eq=False)
class Centre:
    """The offset of each index of ``axis`` (float32, one per channel)."""

    axis: int
    offset: np.ndarray

    def broadcast_shape(self, rank: int) -> tuple[int, ...]:
        shape = [1] * rank
        shape[self.axis] = len(self.offset)
        return tuple(shape)

    def as_dict(self) -> dict:
        # float32 -> Python float is exact, and so is the way back.
        return {"axis": self.axis, "offset": [float(v) for v in self.offset]}

    @staticmethod
    def from_dict(data, shape: tuple[int, ...], where: str) -> "Centre":
        """Checked against the tensor's ``shape``: an axis of it, one finite offset per index."""
        if not isinstance(data, dict):
            raise ArtifactError(f"{where}: centre must be an object with axis and offset")
        axis, offset = data.get("axis"), data.get("offset")
        if not isinstance(axis, int) or isinstance(axis, bool) or not 0 < axis < len(shape):
            raise ArtifactError(f"{where}: centre axis must be one of 1..{len(shape) - 1}, got {axis!r}")
        if (not isinstance(offset, list) or len(offset) != shape[axis]
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in offset)):
            raise ArtifactError(f"{where}: centre offset must be {shape[axis]} numbers (axis {axis} of {list(shape)})")
        values = np.asarray(offset, dtype=np.float32)
        if not np.isfinite(values).all():
            raise ArtifactError(f"{where}: centre offset must be finite")
        return Centre(axis, values)


def centred(x: np.ndarray, centre: Centre | None) -> np.ndarray:
    """``x`` minus its channel offsets, what the encoder is given (in ``x``'s dtype,
    which the payload header states; computed in float32)."""
    if centre is None:
        return x
    residual = np.asarray(x, np.float32) - centre.offset.reshape(centre.broadcast_shape(x.ndim))
    return residual.astype(x.dtype, copy=False)


def restored(x: np.ndarray, centre: Centre | None) -> np.ndarray:
    """The decoded residual with the channel offsets added back."""
    if centre is None:
        return x
    return x + centre.offset.reshape(centre.broadcast_shape(x.ndim))


def channel_offsets(samples: np.ndarray) -> Centre | None:
    """The per-channel means of ``samples`` (axis 0: the samples) along the axis whose
    means carry the most energy, or None where no axis carries ``MIN_OFFSET_ENERGY``
    of it. The channel axis is found, not assumed: axis 1 for NCHW maps, the last for
    [B, S, H] hidden states."""
    x = np.asarray(samples, np.float64)
    energy = float(np.square(x).sum())
    if x.ndim < 2 or energy == 0 or not np.isfinite(energy):
        return None
    best, best_energy = None, 0.0
    for axis in range(1, x.ndim):
        others = tuple(a for a in range(x.ndim) if a != axis)
        means = x.mean(axis=others)
        removed = float(np.square(means).sum()) * (x.size / x.shape[axis])
        if removed > best_energy:
            best, best_energy = Centre(axis, means.astype(np.float32)), removed
    return best if best_energy >= MIN_OFFSET_ENERGY * energy else None


def choose_centre(samples: Sequence[np.ndarray], round_trip: Callable[[int, Centre | None, float], np.ndarray],
                  sparsities: Sequence[float]) -> Centre | None:
    """The centre to code a tensor with, or None to code it plain.

    ``samples`` are the tensor's values (a few calibration runs); ``round_trip(i,
    centre, sparsity)`` codes and decodes ``samples[i]`` as the edge would (centring
    included). The offsets are the samples' channel means; they are kept where the
    centred round trip's squared error is at most ``GAIN_REQUIRED`` times the plain
    one's at every sparsity of ``sparsities`` (the loosest of the grid and the default,
    say): a ReLU map codes nearly lossless plain at s = 0.5 (half of it is zeros) and
    far worse centred, though centring may win at s = 0.9; one with
    ``PLAIN_ZERO_SHARE`` zeros is not tried at all.
    """
    values = np.concatenate([np.asarray(s) for s in samples])
    if values.size == 0 or np.count_nonzero(values == 0) >= PLAIN_ZERO_SHARE * values.size:
        return None
    centre = channel_offsets(values)
    if centre is None:
        return None

    def error(c: Centre | None, sparsity: float) -> float:
        return sum(float(np.square(round_trip(i, c, sparsity).astype(np.float64) - s).sum())
                   for i, s in enumerate(samples))

    better = all(error(centre, s) <= GAIN_REQUIRED * error(None, s) for s in sparsities)
    return centre if better else None
