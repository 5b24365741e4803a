"""The KServe v2 / Triton HTTP inference protocol with the binary tensor data
extension: request and response bodies, built and parsed.

A binary body is a JSON header of ``Inference-Header-Content-Length`` bytes,
then each tensor's raw little-endian bytes in order, each announced by its
``binary_data_size`` parameter. The parser trusts nothing: every size and
shape is checked against the body and the limits before an array is made.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from slicer_compile.errors import SlicerCompileError

HEADER_LENGTH = "Inference-Header-Content-Length"
ARTIFACT_PARAMETER = "slicer_artifact_id"

DATATYPES = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "UINT16": np.dtype(np.uint16), "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
DATATYPE_OF = {dtype: name for name, dtype in DATATYPES.items()}


class ProtocolError(SlicerCompileError, ValueError):
    """A request or response body that does not follow the protocol."""


@dataclass
class InferMessage:
    """An inference request or response: named tensors plus parameters."""

    tensors: dict[str, np.ndarray]
    parameters: dict = field(default_factory=dict)
    id: str = ""
    model_name: str = ""
    requested_outputs: list[str] | None = None  # requests only
    binary_outputs: bool = True  # requests only: answer tensors as binary data


def datatype_of(array: np.ndarray) -> str:
    try:
        return DATATYPE_OF[array.dtype]
    except KeyError:
        raise ProtocolError(f"dtype {array.dtype} has no KServe datatype") from None


def encode_message(message: InferMessage, request: bool) -> tuple[bytes, dict[str, str]]:
    """(body, headers) for a request (``inputs``) or a response (``outputs``)."""
    entries, blobs = [], []
    for name, array in message.tensors.items():
        array = np.ascontiguousarray(array)
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        entries.append({"name": name, "shape": list(array.shape), "datatype": datatype_of(array),
                        "parameters": {"binary_data_size": len(data)}})
        blobs.append(data)
    header: dict = {"id": message.id} if message.id else {}
    if message.parameters:
        header["parameters"] = message.parameters
    if request:
        header["inputs"] = entries
        if message.requested_outputs is not None:
            header["outputs"] = [{"name": n, "parameters": {"binary_data": message.binary_outputs}}
                                 for n in message.requested_outputs]
    else:
        header["model_name"] = message.model_name
        header["outputs"] = entries
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + b"".join(blobs), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


def decode_message(body: bytes, header_length: int | None, request: bool, max_elements: int = 1 << 28) -> InferMessage:
    """Parse a request (``inputs``) or response (``outputs``) body.

    Raises:
        ProtocolError: malformed JSON, inconsistent sizes, unknown datatypes.
    """
    if header_length is None:
        header_length = len(body)
    if not 0 < header_length <= len(body):
        raise ProtocolError(f"{HEADER_LENGTH} {header_length} outside a body of {len(body)} bytes")
    try:
        header = json.loads(body[:header_length])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"JSON header is malformed: {exc}") from None
    except RecursionError:  # json nests by recursion: a header 100,000 brackets deep
        raise ProtocolError("JSON header is nested too deeply") from None
    if not isinstance(header, dict):
        raise ProtocolError("JSON header must be an object")
    key = "inputs" if request else "outputs"
    entries = header.get(key)
    if not isinstance(entries, list) or not entries:
        raise ProtocolError(f"the header has no {key!r} list")
    tensors, offset = {}, header_length
    for entry in entries:
        name, array, offset = _tensor(entry, body, offset, max_elements)
        if name in tensors:
            raise ProtocolError(f"tensor {name!r} appears twice")
        tensors[name] = array
    if offset != len(body):
        raise ProtocolError(f"{len(body) - offset} bytes after the last tensor")
    parameters = _parameters(header, "the request" if request else "the response")
    request_id, model_name = header.get("id", ""), header.get("model_name", "")
    if not isinstance(request_id, str) or not isinstance(model_name, str):
        raise ProtocolError("id and model_name must be strings")
    requested = None
    binary_outputs = True
    outputs = header.get("outputs") if request else None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                    for o in outputs):
            raise ProtocolError("outputs must be a list of objects with a name")
        requested = [o["name"] for o in outputs]
        binary_outputs = any(_parameters(o, f"output {o['name']!r}").get("binary_data", False) for o in outputs)
    elif request:
        binary_outputs = bool(parameters.get("binary_data_output", False))
    return InferMessage(tensors, parameters, request_id, model_name, requested, binary_outputs)


def _parameters(entry: dict, what: str) -> dict:
    """An entry's ``parameters``: absent, or an object (KServe v2: a map)."""
    parameters = entry.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ProtocolError(f"parameters of {what} must be an object, got {type(parameters).__name__}")
    return parameters


def _tensor(entry, body: bytes, offset: int, max_elements: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ProtocolError("each tensor needs a name")
    name = entry["name"]
    dtype = DATATYPES.get(entry.get("datatype"))
    if dtype is None:
        raise ProtocolError(f"tensor {name!r}: unsupported datatype {entry.get('datatype')!r}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape) or len(shape) > 8:
        raise ProtocolError(f"tensor {name!r}: shape must be a list of at most 8 non-negative integers")
    count = math.prod(shape)
    if count > max_elements:
        raise ProtocolError(f"tensor {name!r}: {count} elements exceed the limit of {max_elements}")
    size = _parameters(entry, f"tensor {name!r}").get("binary_data_size")
    if size is None:  # JSON data
        data = entry.get("data")
        if not isinstance(data, list):
            raise ProtocolError(f"tensor {name!r} has neither binary data nor a data list")
        try:
            array = np.array(data, dtype=dtype).reshape(shape)
        except RecursionError:
            raise ProtocolError(f"tensor {name!r}: data is nested too deeply") from None
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"tensor {name!r}: data does not fit shape {shape}: {exc}") from None
        return name, array, offset
    if not isinstance(size, int) or size != count * dtype.itemsize:
        raise ProtocolError(f"tensor {name!r}: binary_data_size {size} != {count} x {dtype.itemsize} bytes")
    if offset + size > len(body):
        raise ProtocolError(f"tensor {name!r}: body truncated ({len(body) - offset} of {size} bytes)")
    array = np.frombuffer(body, dtype=dtype.newbyteorder("<"), count=count, offset=offset).reshape(shape)
    return name, array.astype(dtype, copy=False), offset + size


def encode_json_response(message: InferMessage) -> bytes:
    """A response with tensors as JSON data lists (when binary output was not asked for)."""
    outputs = [{"name": n, "shape": list(a.shape), "datatype": datatype_of(a), "data": a.ravel().tolist()}
               for n, a in message.tensors.items()]
    header = {"model_name": message.model_name, "outputs": outputs}
    if message.id:
        header["id"] = message.id
    if message.parameters:
        header["parameters"] = message.parameters
    return json.dumps(header).encode()


def cut_payloads(blob: np.ndarray, sizes: np.ndarray, data: str, lengths: str) -> list[bytes]:
    """Payloads sent concatenated (``data``, UINT8 [N]) cut by their lengths (``lengths``,
    INT64 [count]), the lengths checked against the bytes first."""
    if (sizes < 0).any() or int(sizes.sum()) != blob.size:
        raise ProtocolError(f"{lengths} do not add up to the {blob.size} bytes of {data}")
    raw, out, at = blob.tobytes(), [], 0
    for size in sizes.tolist():
        out.append(raw[at: at + size])
        at += size
    return out
