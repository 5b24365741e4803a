"""Edge weights quantised weight-only (Sung et al.'s OPSC, Eq. 1): the edge part's
MatMul weights as int8 or int4 with a block of ``group_size`` weights per scale,
by ONNX Runtime's own quantiser (``MatMulNBitsQuantizer``, the ``MatMulNBits``
contrib op); activations stay float32, and the server part keeps full precision.
"""

from __future__ import annotations

import logging

from slicer_compile.errors import ConfigError

WEIGHT_PRECISIONS = ("fp32", "int8", "int4")
GROUP_SIZES = (32, 64, 128)


def check_weights(weights: str, group_size: int) -> None:
    if weights not in WEIGHT_PRECISIONS:
        raise ConfigError(f"edge weights must be one of {WEIGHT_PRECISIONS}, got {weights!r}")
    if group_size not in GROUP_SIZES:
        raise ConfigError(f"group size must be one of {GROUP_SIZES}, got {group_size}")


def quantise_weights(model_bytes: bytes, weights: str, group_size: int = 32) -> bytes:
    """``model_bytes`` with every MatMul by a constant weight as MatMulNBits at ``weights``
    (``fp32``: unchanged)."""
    check_weights(weights, group_size)
    if weights == "fp32":
        return model_bytes
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # The quantiser logs every node it visits at INFO; keep it to our own notes.
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    quantiser = MatMulNBitsQuantizer(onnx.load_from_string(model_bytes), bits=8 if weights == "int8" else 4,
                                     block_size=group_size, is_symmetric=True)
    quantiser.process()
    return quantiser.model.model.SerializeToString()
