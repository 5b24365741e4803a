"""The ``ai.slicer`` codec ops on ONNX Runtime, through onnxruntime-extensions.

onnxruntime-extensions runs Python custom ops in its own domain
(``ai.onnx.contrib``); artifacts keep the ``ai.slicer`` domain (the name the
TensorRT plugins register under), so a model is re-labelled in memory just
before a session is created. The ops call ``slicer_compile.codec.ops``.
"""

from __future__ import annotations

import threading

import numpy as np

from slicer_compile.codec.ops import DECODE_OP, DOMAIN, ENCODE_OP, decode_from, encode_into

ORT_PYOP_DOMAIN = "ai.onnx.contrib"

_registered = False

# An exception escaping a Python op aborts the whole process (onnxruntime-extensions
# cannot carry it through ONNX Runtime). So the ops never raise: a failure returns
# zeros and is recorded here, and the runner raises it as a SlicerCompileError once
# the run returns (runner.OnnxrtRunner.infer_impl).
_failures: list[str] = []
_failures_lock = threading.Lock()


def failures_since(mark: int) -> list[str]:
    """Failures recorded after ``mark`` (a value of :func:`failure_mark`)."""
    with _failures_lock:
        return _failures[mark:]


def failure_mark() -> int:
    with _failures_lock:
        return len(_failures)


def _record(exc: Exception) -> None:
    with _failures_lock:
        _failures.append(str(exc) or type(exc).__name__)


def register_codec_ops() -> None:
    """Declare the Python ops to onnxruntime-extensions (once per process)."""
    global _registered
    if _registered:
        return
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    @onnx_op(op_type=ENCODE_OP, inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_float],
             outputs=[PyCustomOpDef.dt_uint8, PyCustomOpDef.dt_int64],
             attrs={"payload_bytes": PyCustomOpDef.dt_int64, "min_sparsity": PyCustomOpDef.dt_float,
                    "max_blocks": PyCustomOpDef.dt_int64, "max_q_bits": PyCustomOpDef.dt_int64})
    def slicer_encode(x, knobs, **attrs):
        try:
            return encode_into(x, knobs, int(attrs["payload_bytes"]), float(attrs["min_sparsity"]),
                               int(attrs["max_blocks"]), int(attrs["max_q_bits"]))
        except Exception as exc:  # noqa: BLE001 (see _failures: raising here would abort the process)
            _record(exc)
            return np.zeros(int(attrs["payload_bytes"]), np.uint8), np.zeros(1, np.int64)

    @onnx_op(op_type=DECODE_OP, inputs=[PyCustomOpDef.dt_uint8], outputs=[PyCustomOpDef.dt_float],
             attrs={"shape": PyCustomOpDef.dt_string})
    def slicer_decode(payload, **attrs):
        shape = tuple(int(d) for d in attrs["shape"].split(",") if d)
        try:
            return decode_from(payload, shape)
        except Exception as exc:  # noqa: BLE001 (see _failures)
            _record(exc)
            return np.zeros(shape, np.float32)

    _registered = True


def uses_codec_ops(model) -> bool:
    return any(node.domain == DOMAIN for node in model.graph.node)


def prepare_for_ort(model, session_options) -> bytes:
    """Serialized model ready for a session: codec ops moved to the extensions'
    domain and their library registered on ``session_options``."""
    if isinstance(model, (bytes, bytearray)):
        import onnx

        model = onnx.load_from_string(bytes(model))
    if not uses_codec_ops(model):
        return model.SerializeToString()
    from onnxruntime_extensions import get_library_path

    register_codec_ops()
    session_options.register_custom_ops_library(get_library_path())
    relabelled = type(model).FromString(model.SerializeToString())
    for node in relabelled.graph.node:
        if node.domain == DOMAIN:
            node.domain = ORT_PYOP_DOMAIN
    for opset in relabelled.opset_import:
        if opset.domain == DOMAIN:
            opset.domain = ORT_PYOP_DOMAIN
    return relabelled.SerializeToString()
