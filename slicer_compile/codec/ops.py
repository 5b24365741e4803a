"""The codec as graph nodes: the contract of the ``ai.slicer`` ops, shared by every
runtime that hosts them (ONNX Runtime Python ops here; TensorRT plugins in
``plugins/`` implement the same contract on the GPU).

* ``SlicerEncode(x: float32[...], knobs: float32[7]) -> (payload: uint8[P], nbytes: int64[1])``,
  knobs in ``KNOB_FIELDS`` order
  with attribute ``payload_bytes = P`` and the loosest knobs the node accepts
  (``min_sparsity``, ``max_blocks``, ``max_q_bits``); ``payload[:nbytes]`` is the
  wire message, the rest zero.
* ``SlicerDecode(payload: uint8[n]) -> float32[...]`` with attribute ``shape``
  (comma-separated dimensions).
"""

from __future__ import annotations

import numpy as np

from slicer_compile.codec import SlicerConfig, decode, encode
from slicer_compile.codec.config import SLICER_KNOB_ORDER
from slicer_compile.errors import SlicerCompileError

DOMAIN = "ai.slicer"
ENCODE_OP = "SlicerEncode"
DECODE_OP = "SlicerDecode"
KNOBS_INPUT = "slicer_knobs"
#: Order of the values in the knobs input: the codec's one knob order (the wire header's and the C ABI's).
KNOB_FIELDS = SLICER_KNOB_ORDER


def knobs_tensor(cfg: SlicerConfig) -> np.ndarray:
    """The runtime knobs input for ``cfg``."""
    return np.array(cfg.knob_values(), dtype=np.float32)


def config_from_knobs(knobs: np.ndarray) -> SlicerConfig:
    """Inverse of :func:`knobs_tensor`; raises ConfigError on bad values."""
    return SlicerConfig.from_knob_values(np.asarray(knobs, dtype=np.float64).ravel().tolist())


def encode_into(x: np.ndarray, knobs: np.ndarray, payload_bytes: int, min_sparsity: float,
                max_blocks: int, max_q_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """What the SlicerEncode node computes; shared by every runtime that hosts it."""
    cfg = config_from_knobs(knobs)
    if cfg.sparsity < min_sparsity or max(cfg.blocks) > max_blocks or cfg.q_bits > max_q_bits:
        raise SlicerCompileError(
            f"knobs {cfg} are looser than this encoder node was sized for "
            f"(sparsity >= {min_sparsity}, blocks <= {max_blocks}, q_bits <= {max_q_bits})")
    message = encode(np.ascontiguousarray(x, dtype=np.float32), cfg)
    if len(message) > payload_bytes:  # cannot happen while predict_bits holds; say so if it does
        raise SlicerCompileError(f"payload of {len(message)} bytes exceeds the node's {payload_bytes}")
    payload = np.zeros(payload_bytes, dtype=np.uint8)
    payload[: len(message)] = np.frombuffer(message, dtype=np.uint8)
    return payload, np.array([len(message)], dtype=np.int64)


def decode_from(payload: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """What the SlicerDecode node computes: the message must decode to ``shape``."""
    x_hat = decode(np.ascontiguousarray(payload, dtype=np.uint8).tobytes())
    if tuple(x_hat.shape) != tuple(shape):
        raise SlicerCompileError(f"payload decodes to shape {x_hat.shape}, this node expects {tuple(shape)}")
    return x_hat.astype(np.float32, copy=False)
