"""The codec nodes' I/O as a TensorRT engine carries it.

TensorRT plugins cannot output uint8, so in an engine the payload travels as int32
words: the wire message in the first ``nbytes`` bytes of the buffer, zeros after.

* edge: ``SlicerEncode`` outputs ``X.payload: int32[ceil(P/4)]`` and ``X.nbytes: int32[1]``
  (in ONNX: uint8[P] and int64[1]);
* server: ``SlicerDecode`` takes ``X.payload: int32[ceil(P/4)]`` and a second input
  ``X.nbytes: int32[1]`` (in ONNX: one uint8 input of the message's length).

:func:`to_engine_contract` rewrites an ONNX part before the TensorRT parser sees it;
:func:`message_to_words` and :func:`words_to_message` convert at the engine's edge,
so a TensorRT runner has the same inputs and outputs as the ONNX Runtime one.
"""

from __future__ import annotations

import math

import numpy as np

from slicer_compile.codec.ops import DECODE_OP, DOMAIN, ENCODE_OP
from slicer_compile.errors import ModelError, PayloadError

PAYLOAD_SUFFIX = ".payload"
NBYTES_SUFFIX = ".nbytes"


def payload_words(payload_bytes: int) -> int:
    """int32 words that hold ``payload_bytes`` bytes."""
    return math.ceil(payload_bytes / 4)


def encoder_payload_bytes(model) -> dict[str, int]:
    """{payload tensor name: its static size P} of every SlicerEncode node in ``model``."""
    sizes = {}
    for node in model.graph.node:
        if node.domain == DOMAIN and node.op_type == ENCODE_OP:
            attrs = {a.name: a for a in node.attribute}
            if "payload_bytes" not in attrs:
                raise ModelError(f"encoder node {node.name} has no payload_bytes attribute")
            sizes[node.output[0]] = int(attrs["payload_bytes"].i)
    return sizes


def to_engine_contract(model, payload_bytes: dict[str, int] | None = None):
    """A copy of an edge or server part with the codec I/O in the engine contract.

    Args:
        model: an ``onnx.ModelProto`` holding SlicerEncode and/or SlicerDecode nodes.
        payload_bytes: for a server part, each payload input's static size P (the
            edge encoder's ``payload_bytes``, see :func:`encoder_payload_bytes`).
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    payload_bytes = dict(payload_bytes or {})
    sizes = encoder_payload_bytes(model)
    for i, out in enumerate(graph.output):
        if out.name in sizes:
            graph.output[i].CopyFrom(helper.make_tensor_value_info(out.name, TensorProto.INT32,
                                                                   [payload_words(sizes[out.name])]))
        elif any(node.domain == DOMAIN and node.op_type == ENCODE_OP and len(node.output) > 1
                 and node.output[1] == out.name for node in graph.node):
            graph.output[i].CopyFrom(helper.make_tensor_value_info(out.name, TensorProto.INT32, [1]))
    decoded = [node for node in graph.node if node.domain == DOMAIN and node.op_type == DECODE_OP]
    for node in decoded:
        payload = node.input[0]
        if payload not in payload_bytes:
            raise ModelError(f"decoder {node.name}: the payload size of {payload} is needed "
                             "(pass the edge encoder's payload_bytes)")
        nbytes = payload[: -len(PAYLOAD_SUFFIX)] + NBYTES_SUFFIX if payload.endswith(PAYLOAD_SUFFIX) \
            else payload + NBYTES_SUFFIX
        for i, inp in enumerate(graph.input):
            if inp.name == payload:
                graph.input[i].CopyFrom(helper.make_tensor_value_info(
                    payload, TensorProto.INT32, [payload_words(payload_bytes[payload])]))
        graph.input.append(helper.make_tensor_value_info(nbytes, TensorProto.INT32, [1]))
        node.input.append(nbytes)
    # Every tensor whose type changed must not keep a stale value_info.
    changed = set(sizes) | {n.output[1] for n in graph.node if n.domain == DOMAIN and n.op_type == ENCODE_OP
                            and len(n.output) > 1} | {n.input[0] for n in decoded}
    kept = [vi for vi in graph.value_info if vi.name not in changed]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return model


def message_to_words(message: np.ndarray | bytes, words: int) -> tuple[np.ndarray, np.ndarray]:
    """A wire message as the engine's (payload int32[words], nbytes int32[1])."""
    data = np.frombuffer(bytes(message), dtype=np.uint8) if not isinstance(message, np.ndarray) \
        else np.ascontiguousarray(message, dtype=np.uint8).ravel()
    if data.size > 4 * words:
        raise PayloadError(f"payload of {data.size} bytes exceeds the engine's {4 * words}-byte input")
    buffer = np.zeros(4 * words, dtype=np.uint8)
    buffer[: data.size] = data
    return buffer.view("<i4"), np.array([data.size], dtype=np.int32)


def words_to_message(words: np.ndarray, nbytes: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """An engine's (payload words, nbytes) as the ONNX contract's (uint8 buffer, int64[1])."""
    data = np.ascontiguousarray(words).astype("<i4", copy=False).view(np.uint8)
    count = int(np.asarray(nbytes).ravel()[0])
    if not 0 <= count <= data.size:
        raise PayloadError(f"engine reported {count} payload bytes in a {data.size}-byte buffer")
    return data, np.array([count], dtype=np.int64)
