"""KServe v2 bodies with the binary tensor extension: round trips and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slicer_compile.runtime.protocol import InferMessage, ProtocolError, decode_message, encode_message


def test_round_trip_request_and_response():
    tensors = {"a.payload": np.arange(10, dtype=np.uint8), "mask": np.ones((1, 4), np.int64),
               "h": np.random.default_rng(0).standard_normal((1, 3)).astype(np.float16)}
    body, headers = encode_message(InferMessage(tensors, {"k": "v"}, id="7"), request=True)
    msg = decode_message(body, int(headers["Inference-Header-Content-Length"]), request=True)
    assert msg.id == "7" and msg.parameters == {"k": "v"}
    for name, value in tensors.items():
        np.testing.assert_array_equal(msg.tensors[name], value)
        assert msg.tensors[name].dtype == value.dtype
    body, headers = encode_message(InferMessage({"y": np.ones((1, 2), np.float32)}, model_name="m"), request=False)
    reply = decode_message(body, int(headers["Inference-Header-Content-Length"]), request=False)
    assert reply.model_name == "m" and reply.tensors["y"].shape == (1, 2)


def test_json_data_inputs_are_accepted():
    body = json.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.5, 2.5]}]}).encode()
    msg = decode_message(body, None, request=True)
    np.testing.assert_array_equal(msg.tensors["x"], np.array([1.5, 2.5], np.float32))


def good_body():
    body, headers = encode_message(InferMessage({"x": np.ones(4, np.float32)}), request=True)
    return body, int(headers["Inference-Header-Content-Length"])


@pytest.mark.parametrize("mutate, message", [
    (lambda b, n: (b"{not json" + b[n:], 9), "malformed"),
    (lambda b, n: (b[:-3], n), "truncated"),
    (lambda b, n: (b + b"xx", n), "after the last tensor"),
    (lambda b, n: (b, len(b) + 5), "outside a body"),
    (lambda b, n: (b.replace(b'"FP32"', b'"FP99"'), n), "unsupported datatype"),
    (lambda b, n: (b.replace(b'"shape":[4]', b'"shape":[5]'), n), "binary_data_size"),
    (lambda b, n: (b.replace(b'"shape":[4]', b'"shape":[-4]'), n + 1), "shape must be"),
    (lambda b, n: (b.replace(b'"inputs"', b'"inputz"'), n), "no 'inputs'"),
])
def test_malformed_bodies_raise_protocol_error(mutate, message):
    body, n = mutate(*good_body())
    with pytest.raises(ProtocolError, match=message):
        decode_message(body, n, request=True)


def test_oversized_tensor_is_refused_before_allocation():
    body = json.dumps({"inputs": [{"name": "x", "shape": [1 << 20, 1 << 20], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 4}}]}).encode() + b"\0" * 4
    with pytest.raises(ProtocolError, match="exceed the limit"):
        decode_message(body, len(body) - 4, request=True)
