"""The embedded server with real clients on loopback: answers equal local
computation, tritonclient talks to it, bad requests get clear errors while
normal clients keep being served, and shutdown is graceful."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

import numpy as np
import onnx
import pytest

from slicer_compile.backends.onnxrt import OnnxrtRunner
from slicer_compile.codec import SlicerConfig, decode, encode
from slicer_compile.compiler import compile_model
from slicer_compile.graph.codec_nodes import strip_decoders, strip_encoders
from slicer_compile.runtime.client import EdgeClient, ServerError
from slicer_compile.runtime.loadtest import drive
from slicer_compile.runtime.protocol import InferMessage, encode_message
from slicer_compile.runtime.server import ServerConfig, SplitServer
from tests.models import EXAMPLES

CONFIG = SlicerConfig(sparsity=0.75)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return compile_model(EXAMPLES / "digits_cnn.onnx", device="jetson", out_dir=tmp_path_factory.mktemp("a") / "out",
                         max_pairs=4)


@pytest.fixture(scope="module")
def server(artifact):
    with SplitServer(artifact.path, port=0, config=ServerConfig(max_batch=16, client_timeout_s=1.0,
                                                                request_timeout_s=1.0,
                                                                max_request_bytes=1 << 20)) as s:
        yield s


def deep_split(artifact):
    return max((s for s in artifact.splits if s.files), key=lambda s: s.position).id


def local_reference(artifact, split_id, x, cfg):
    """Edge part, codec round trip, server part: all here, one sample at a time."""
    info = artifact.split(split_id)
    edge = strip_encoders(onnx.load(str(artifact.part_path(split_id, "edge"))), list(info.crossing))
    server = strip_decoders(onnx.load(str(artifact.part_path(split_id, "server"))), list(info.crossing))
    out = []
    with OnnxrtRunner(edge) as e, OnnxrtRunner(server) as s:
        for sample in x:
            mid = e.infer({"x": sample[None]})
            feeds = {t.name: decode(encode(mid[t.name], cfg)) if t.kind == "activation" else mid[t.name]
                     for t in info.crossing}
            out.append(s.infer(feeds)["logits"])
    return np.concatenate(out)


def test_client_answers_equal_local_computation(artifact, server):
    x = np.load(EXAMPLES / "digits_calib.npz")["x"][:20]
    sid = deep_split(artifact)
    expected = local_reference(artifact, sid, x, CONFIG)
    with EdgeClient(artifact.path, server.url) as client:
        got = np.concatenate([client.infer({"x": s[None]}, split=sid, config=CONFIG).outputs["logits"] for s in x])
        result = client.infer({"x": x[:1]}, split=sid, config=CONFIG)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    t = result.timings
    assert t["bytes_sent"] > t["payload_bytes"] > 0 and t["round_trip_s"] >= t["server_s"] > 0
    assert t["batch_size"] >= 1 and t["edge_s"] > 0 and t["encode_s"] > 0


def test_tritonclient_talks_to_the_server(artifact, server):
    import tritonclient.http as th

    sid = deep_split(artifact)
    client = th.InferenceServerClient(server.url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(sid)
    meta = client.get_model_metadata(sid)
    info = artifact.split(sid)
    activation = info.activations[0].name
    assert meta["inputs"][0] == {"name": f"{activation}.payload", "datatype": "UINT8", "shape": [-1]}
    x = np.load(EXAMPLES / "digits_calib.npz")["x"][:1]
    edge = strip_encoders(onnx.load(str(artifact.part_path(sid, "edge"))), list(info.crossing))
    with OnnxrtRunner(edge) as e:
        payload = np.frombuffer(encode(e.infer({"x": x})[activation], CONFIG), dtype=np.uint8)
    inp = th.InferInput(f"{activation}.payload", [payload.size], "UINT8")
    inp.set_data_from_numpy(payload, binary_data=True)
    for binary in (True, False):
        result = client.infer(sid, [inp], parameters={"slicer_artifact_id": artifact.id},
                              outputs=[th.InferRequestedOutput("logits", binary_data=binary)])
        np.testing.assert_allclose(result.as_numpy("logits"), local_reference(artifact, sid, x, CONFIG),
                                   rtol=1e-4, atol=1e-5)
    assert result.get_response()["parameters"]["batch_size"] >= 1


def post(server, path, body, headers=None):
    request = urllib.request.Request(f"http://{server.url}{path}", data=body, method="POST",
                                     headers=headers or {"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def valid_request(artifact, sid, artifact_id=None, payload=None):
    info = artifact.split(sid)
    activation = info.activations[0]
    if payload is None:
        payload = encode(np.ones(activation.shape, np.float32), CONFIG)
    body, headers = encode_message(InferMessage({f"{activation.name}.payload": np.frombuffer(payload, np.uint8)},
                                                {"slicer_artifact_id": artifact_id or artifact.id}), request=True)
    return body, headers


def test_bad_requests_get_clear_errors_while_normal_clients_run(artifact, server):
    sid = deep_split(artifact)
    stop, enough = threading.Event(), threading.Event()
    answered, failures = [0], []

    def normal_client():
        x = np.load(EXAMPLES / "digits_calib.npz")["x"][:1]
        with EdgeClient(artifact.path, server.url) as c:
            while not stop.is_set():
                try:
                    c.infer({"x": x}, split=sid, config=CONFIG)
                    answered[0] += 1
                    if answered[0] >= 20:
                        enough.set()
                except Exception as exc:  # any failure of a well-formed request is a bug
                    failures.append(exc)

    workers = [threading.Thread(target=normal_client) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        good, headers = valid_request(artifact, sid)
        status, body = post(server, f"/v2/models/{sid}/infer", b"{this is not json", {"Content-Length": "17"})
        assert status == 400 and b"malformed" in body
        truncated_payload = encode(np.ones(artifact.split(sid).activations[0].shape, np.float32), CONFIG)[:-5]
        bad, h = valid_request(artifact, sid, payload=truncated_payload)
        status, body = post(server, f"/v2/models/{sid}/infer", bad, h)
        assert status == 400 and b"payload" in body.lower()
        other, h = valid_request(artifact, sid, artifact_id="0123456789abcdef")
        status, body = post(server, f"/v2/models/{sid}/infer", other, h)
        assert status == 400 and b"another" in body or b"artifact" in body
        status, body = post(server, "/v2/models/s9999/infer", good, headers)
        assert status == 404 and b"unknown model" in body
        status, body = post(server, f"/v2/models/{sid}/infer", b"\0" * (2 << 20), {"Content-Length": str(2 << 20)})
        assert status == 413 and b"exceeds the limit" in body
        # A client that stalls mid-body is dropped after the timeout; one that vanishes is forgotten.
        host, port = server.url.split(":")
        stalled = socket.create_connection((host, int(port)))
        stalled.sendall(f"POST /v2/models/{sid}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode()
                        + good[:100])
        vanished = socket.create_connection((host, int(port)))
        vanished.sendall(f"POST /v2/models/{sid}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode())
        vanished.close()
        stalled.settimeout(120)  # the server answers after request_timeout_s; this only bounds a hang
        answer = stalled.makefile("rb").read()  # 408, then the server closes the connection
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive" in answer
        stalled.close()
        status, _ = post(server, f"/v2/models/{sid}/infer", good, headers)
        assert status == 200
        # The good clients ran beside all of it: wait for their answers (an event, not a time).
        assert enough.wait(timeout=300) or failures
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert not failures and answered[0] >= 20
    metrics = urllib.request.urlopen(f"http://{server.url}/metrics").read().decode()
    for reason in ("bad_request", "bad_payload", "unknown_model", "too_large"):
        assert f'reason="{reason}"' in metrics
    assert f'slicer_requests_total{{split="{sid}"}}' in metrics and "slicer_batch_size_max" in metrics


def test_load_64_clients_200_requests_lose_nothing(artifact, server):
    sid = deep_split(artifact)
    x = np.load(EXAMPLES / "digits_calib.npz")["x"][:1]
    row, replies = drive(artifact.path, server.url, sid, clients=64, requests=200, inputs={"x": x}, config=CONFIG)
    assert row.answered == row.requests == 64 * 200 == len(replies)
    expected = local_reference(artifact, sid, x, CONFIG)
    for reply in replies:
        np.testing.assert_allclose(reply.outputs["logits"], expected, rtol=1e-4, atol=1e-5)
    assert row.mean_batch > 1.0  # requests from many clients were batched


def test_graceful_shutdown_finishes_in_flight_and_refuses_new(artifact):
    sid = deep_split(artifact)
    # The batch would wait a minute to fill: stop() must run it at once, not wait it out.
    srv = SplitServer(artifact.path, port=0, config=ServerConfig(max_queue_delay_s=60, max_batch=64,
                                                                 wait_only_when_busy=False)).start()
    x = np.load(EXAMPLES / "digits_calib.npz")["x"][:1]
    results = []

    def one():
        with EdgeClient(artifact.path, srv.url) as c:
            results.append(c.infer({"x": x}, split=sid, config=CONFIG))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    assert srv.wait_for_inflight(8, timeout_s=120)  # queued, waiting for the batch to fill
    srv.stop()
    for t in threads:
        t.join()
    assert len(results) == 8  # every in-flight request was answered
    with pytest.raises(ServerError):
        with EdgeClient(artifact.path, srv.url, timeout_s=2) as c:
            c.infer({"x": x}, split=sid, config=CONFIG)


def test_side_tensors_and_raw_cuts_travel_through_the_server(tmp_path):
    """The transformer: an integer mask crosses raw beside the hidden state, and the
    cloud-only cut sends token ids and mask with no activation at all."""
    artifact = compile_model(EXAMPLES / "transformer.onnx", device="jetson", out_dir=tmp_path / "out")
    data = np.load(EXAMPLES / "transformer_calib.npz")
    feeds = {"input_ids": data["input_ids"][1:2], "attention_mask": data["attention_mask"][1:2]}
    with OnnxrtRunner(onnx.load(str(artifact.path / "model.onnx"))) as full:
        expected = full.infer(feeds)["hidden"]
    kinds_seen = set()
    with SplitServer(artifact.path, port=0) as srv, EdgeClient(artifact.path, srv.url) as client:
        for split in (s for s in artifact.splits if s.files):
            kinds = tuple(sorted(t.kind for t in split.crossing))
            kinds_seen.add(kinds)
            hidden = client.infer(feeds, split=split.id, config=SlicerConfig(sparsity=0.5)).outputs["hidden"]
            if "activation" not in kinds:
                np.testing.assert_allclose(hidden, expected, rtol=1e-4, atol=1e-4)  # nothing lossy crossed
            else:
                cosine = float((hidden * expected).sum() / np.linalg.norm(hidden) / np.linalg.norm(expected))
                assert cosine > 0.9
    assert ("side", "side") in kinds_seen and ("activation", "side") in kinds_seen


def test_tensorrt_runtime_without_engines_says_so(artifact):
    """An artifact compiled for ONNX Runtime has no plans: the TensorRT server and
    client refuse it by name before touching TensorRT."""
    from slicer_compile.errors import ArtifactError

    with pytest.raises(ArtifactError, match="no server.plan for the tensorrt backend: compile with --backend tensorrt"):
        SplitServer(artifact.path, port=0, config=ServerConfig(backend="tensorrt"))
    client = EdgeClient(artifact, "127.0.0.1:1", backend="tensorrt")
    x = np.zeros((1, 1, 8, 8), np.float32)
    with pytest.raises(ArtifactError, match="no edge.plan"):
        client.infer({"x": x}, split=deep_split(artifact))
