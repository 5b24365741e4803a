"""What a few bytes cannot do to the server: Content-Length quirks, stalled headers,
connections and body bytes beyond the caps, malformed JSON, and payloads that
describe far more than the split expects. Then Triton conformance (tritonclient's
calls over HTTP and gRPC) and access control (TLS, bearer token)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import tracemalloc

import numpy as np
import pytest

from slicer_compile.codec import TabqConfig, encode
from slicer_compile.codec.crafted import HUGE, slicer_constant
from slicer_compile.errors import InputError
from slicer_compile.runtime.access import TOKEN_ENV, Access, read_token
from slicer_compile.runtime.client import ClientAccess, EdgeClient, ServerError
from slicer_compile.runtime.server import ServerConfig, SplitServer
from tests.models import EXAMPLES
from tests.runtime.test_server import CONFIG, artifact, deep_split, post, valid_request  # noqa: F401 (fixture)

LIMITS = ServerConfig(client_timeout_s=1.0, request_timeout_s=1.0, max_connections=6, max_buffered_bytes=64 << 10,
                      max_request_bytes=32 << 10)


@pytest.fixture(scope="module")
def server(artifact):
    with SplitServer(artifact.path, port=0, config=LIMITS, grpc_port=0) as s:
        yield s


def raw(server, request: bytes) -> bytes:
    """Send bytes on a fresh connection; everything the server answers until it closes."""
    host, port = server.url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(request)  # the write side stays open: a half-close races the answer
        return sock.makefile("rb").read()


def infer_head(sid: str, *headers: str) -> bytes:
    lines = [f"POST /v2/models/{sid}/infer HTTP/1.1", "Host: x", *headers, "", ""]
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize("lengths", [["-1"], ["1_0"], ["+10"], ["0x10"], ["10", "20"]],
                         ids=["negative", "underscore", "plus", "hex", "two-values"])
def test_content_length_quirks_are_refused_by_the_parser(artifact, server, lengths):
    answer = raw(server, infer_head(deep_split(artifact), *(f"Content-Length: {v}" for v in lengths)) + b"x" * 64)
    assert answer.split(b" ", 2)[1] == b"400", answer[:80]


def test_a_request_without_a_length_or_over_the_limit_is_refused_unread(artifact, server):
    sid = deep_split(artifact)
    assert raw(server, infer_head(sid, "Transfer-Encoding: chunked") + b"0\r\n\r\n").startswith(b"HTTP/1.1 411")
    big = LIMITS.max_request_bytes + 1
    status, body = post(server, f"/v2/models/{sid}/infer", b"\0" * big, {"Content-Length": str(big)})
    assert status == 413 and b"exceeds the limit" in body


def test_stalled_headers_and_bodies_are_dropped(artifact, server):
    sid = deep_split(artifact)
    # Headers that never finish: closed after client_timeout_s (no answer is owed).
    host, port = server.url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(b"POST /v2/models/" + sid.encode() + b"/infer HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert sock.makefile("rb").read() == b""
    # A body that never finishes: 408 after request_timeout_s, then closed.
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(infer_head(sid, "Content-Length: 1000") + b"x" * 10)
        answer = sock.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 408")


def test_connections_beyond_the_cap_are_answered_503(artifact, server):
    host, port = server.url.rsplit(":", 1)
    held = []
    try:
        # Fill the cap with kept-alive connections, each proven open by one answered request.
        for _ in range(LIMITS.max_connections):
            sock = socket.create_connection((host, int(port)), timeout=60)
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(200).startswith(b"HTTP/1.1 200")
            held.append(sock)
        answer = raw(server, b"GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After" in answer
    finally:
        for sock in held:  # the server closes each (Connection: close), so it forgets them first
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            sock.makefile("rb").read()
            sock.close()
    # Then requests are served again (the server drops its records of them in its own time).
    for _ in range(2000):
        if raw(server, b"GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200"):
            break
    else:
        pytest.fail("the server never recovered its connection slots")


def test_body_bytes_beyond_the_budget_are_answered_503(artifact):
    sid = deep_split(artifact)
    config = ServerConfig(max_buffered_bytes=8 << 10, request_timeout_s=30)
    with SplitServer(artifact.path, port=0, config=config) as small:
        host, port = small.url.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=60) as holder:
            holder.sendall(infer_head(sid, "Content-Length: 8100") + b"x" * 100)  # holds 8100 of 8192 bytes
            assert small.wait_for_inflight(1, timeout_s=60)
            body, headers = valid_request(artifact, sid)
            assert len(body) > (8 << 10) - 8100
            status, answer = post(small, f"/v2/models/{sid}/infer", body, headers)
            assert status == 503 and b"retry" in answer
        # The holder is gone: room again, once the server has seen it go (in its own time).
        statuses = []
        while len(statuses) < 2000 and 200 not in statuses:
            statuses.append(post(small, f"/v2/models/{sid}/infer", body, headers)[0])
        assert statuses[-1] == 200 and set(statuses) <= {200, 503}


@pytest.mark.parametrize("header", [
    b'{"inputs":[{"name":"a","datatype":"UINT8","shape":[1],"data":[1],"parameters":[1,2]}]}',
    b'{"inputs":[{"name":"a","datatype":"UINT8","shape":[1],"data":[1]}],"outputs":[{"name":"o","parameters":[1]}]}',
    b'{"inputs":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
], ids=["input-parameters-list", "output-parameters-list", "nested-100000"])
def test_malformed_json_headers_get_400_not_a_reset(artifact, server, header):
    sid = deep_split(artifact)
    status, body = post(server, f"/v2/models/{sid}/infer", header[: LIMITS.max_request_bytes],
                        {"Content-Type": "application/json"})
    assert status == 400 and b"error" in body


def test_a_valid_payload_describing_2_26_elements_is_refused_before_decoding(artifact, server):
    """~100 bytes that honestly decode to 2^26 floats (256 MB): the server compares the
    header with the split's crossing first and decodes with that tensor's size."""
    sid = deep_split(artifact)
    body, headers = valid_request(artifact, sid, payload=slicer_constant(HUGE))
    tracemalloc.start()
    try:
        status, answer = post(server, f"/v2/models/{sid}/infer", body, headers)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 400 and b"exceeds the limit" in answer
    assert peak < 16 << 20


def test_only_the_artifacts_codec_and_the_crossing_dtype_are_accepted(artifact, server):
    sid = deep_split(artifact)
    activation = artifact.split(sid).activations[0]
    x = np.ones(activation.shape, np.float32)
    for payload, expected in ((encode(x, TabqConfig()), b"accepts slicer"),
                              (encode(x.astype(np.float16), CONFIG), b"float16")):
        body, headers = valid_request(artifact, sid, payload=payload)
        status, answer = post(server, f"/v2/models/{sid}/infer", body, headers)
        assert status == 400 and expected in answer, answer


# --- Triton conformance ----------------------------------------------------------------


def test_tritonclient_http_calls_all_answer(artifact, server):
    import tritonclient.http as th

    sid = deep_split(artifact)
    with EdgeClient(artifact.path, server.url) as edge:
        edge.infer({"x": np.load(EXAMPLES / "digits_calib.npz")["x"][:1]}, split=sid, config=CONFIG)
    client = th.InferenceServerClient(server.url)
    meta = client.get_model_metadata(sid)
    assert meta["outputs"] and all({"name", "datatype", "shape"} <= set(o) for o in meta["outputs"])
    assert meta["outputs"][0]["datatype"] == "FP32" and meta["outputs"][0]["shape"][-1] == 10
    index = client.get_model_repository_index()
    assert {m["name"] for m in index} == {s.id for s in artifact.splits if s.files}
    assert all(m["state"] == "READY" for m in index)
    config = client.get_model_config(sid)
    assert config["name"] == sid and config["input"][0]["data_type"] == "TYPE_UINT8"
    assert config["output"][0]["dims"][-1] == 10
    stats = client.get_inference_statistics(sid)["model_stats"][0]
    assert stats["name"] == sid and stats["inference_count"] >= 1
    assert stats["inference_stats"]["success"]["ns"] > 0
    assert len(client.get_inference_statistics()["model_stats"]) == len(index)


def test_tritonclient_grpc_calls_all_answer(artifact, server):
    grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
    sid = deep_split(artifact)
    with EdgeClient(artifact.path, f"grpc://{server.grpc.url}") as edge:
        edge.infer({"x": np.load(EXAMPLES / "digits_calib.npz")["x"][:1]}, split=sid, config=CONFIG)
    client = grpcclient.InferenceServerClient(server.grpc.url)
    meta = client.get_model_metadata(sid)
    assert meta.outputs[0].datatype == "FP32" and list(meta.outputs[0].shape)[-1] == 10
    assert {m.name for m in client.get_model_repository_index().models} == {s.id for s in artifact.splits if s.files}
    config = client.get_model_config(sid).config
    assert config.name == sid and config.output[0].dims[-1] == 10
    stats = client.get_inference_statistics(sid).model_stats[0]
    assert stats.inference_count >= 1 and stats.inference_stats.success.ns > 0


# --- access ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("making a test certificate needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


def test_tls_and_a_bearer_token(artifact, certificate, tmp_path):
    cert, key = certificate
    sid = deep_split(artifact)
    x = np.load(EXAMPLES / "digits_calib.npz")["x"][:1]
    access = Access(cert, key, token="s3cret-token")
    with SplitServer(artifact.path, port=0, access=access, grpc_port=0) as secure:
        assert secure.scheme == "https"
        good = ClientAccess("s3cret-token", cert)
        for address in (f"https://{secure.url}", f"grpcs://localhost:{secure.grpc.port}"):
            with EdgeClient(artifact.path, address, access=good) as edge:
                assert edge.infer({"x": x}, split=sid, config=CONFIG).outputs["logits"].shape == (1, 10)
            for wrong in (ClientAccess(None, cert), ClientAccess("guess", cert)):
                with EdgeClient(artifact.path, address, access=wrong) as edge:
                    with pytest.raises(ServerError, match="401|token|UNAUTHENTICATED"):
                        edge.infer({"x": x}, split=sid, config=CONFIG)
        with EdgeClient(artifact.path, f"https://{secure.url}", access=ClientAccess("s3cret-token")) as edge:
            with pytest.raises(ServerError, match="TLS|certificate"):  # not signed by a CA the system trusts
                edge.infer({"x": x}, split=sid, config=CONFIG)
        with EdgeClient(artifact.path, f"http://{secure.url}", access=good) as edge:
            with pytest.raises(ServerError):  # plain HTTP to a TLS port
                edge.infer({"x": x}, split=sid, config=CONFIG)
        import ssl
        import urllib.request

        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(f"https://{secure.url}/v2/health/ready", context=context) as response:
            assert response.status == 200  # probes need no token


def test_tokens_come_from_a_file_or_the_environment_never_empty(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("abc123\n")
    assert read_token(token_file, {}) == "abc123"
    assert read_token(None, {TOKEN_ENV: " from-env "}) == "from-env"
    assert read_token(None, {}) is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InputError, match="empty"):
        read_token(tmp_path / "empty", {})
    with pytest.raises(InputError, match="cannot read"):
        read_token(tmp_path / "missing", {})
    with pytest.raises(InputError, match="both"):
        Access(tls_cert=token_file)
    assert Access(token="t").authorized("Bearer t") and not Access(token="t").authorized("Bearer u")
    assert not Access(token="t").authorized(None) and Access().authorized(None)


def test_grpc_calls_beyond_the_cap_are_refused_resource_exhausted(artifact):
    grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
    from tritonclient.utils import InferenceServerException

    sid = deep_split(artifact)
    activation = artifact.split(sid).activations[0]
    payload = np.frombuffer(encode(np.ones(activation.shape, np.float32), CONFIG), np.uint8)
    entry = grpcclient.InferInput(f"{activation.name}.payload", [payload.size], "UINT8")
    entry.set_data_from_numpy(payload)
    # One call at a time, and a batch that waits a minute to fill: the first call stays in flight.
    config = ServerConfig(max_connections=1, max_queue_delay_s=60, max_batch=64, wait_only_when_busy=False)
    server = SplitServer(artifact.path, port=0, config=config, grpc_port=0).start()
    try:
        client = grpcclient.InferenceServerClient(server.grpc.url)
        answers, answered = [], threading.Event()

        def keep(result, error):
            answers.append((result, error))
            answered.set()

        client.async_infer(sid, [entry], callback=keep, parameters={"slicer_artifact_id": artifact.id})
        assert server.wait_for_inflight(1, timeout_s=60)
        with pytest.raises(InferenceServerException, match="RESOURCE_EXHAUSTED|Concurrent RPC limit"):
            client.infer(sid, [entry], parameters={"slicer_artifact_id": artifact.id})
    finally:
        server.stop()  # the drain runs the waiting batch: the first call is answered
    assert answered.wait(60) and len(answers) == 1 and answers[0][1] is None
