"""A real Triton Inference Server on the generated repository: the tritonserver the
nvidia-pytriton wheel bundles (tools/setup_triton.py puts it in a cache), with the
server parts in its Python backend through ONNX Runtime. EdgeClient, tritonclient.http
and tritonclient.grpc get what local edge -> codec -> server computation gives, for
every materialised split; the artifact id holds through the ensemble (request
parameters reach its steps); 64 clients x 200 requests lose nothing."""

from __future__ import annotations

import numpy as np
import pytest

from slicer_compile.codec import encode
from slicer_compile.compiler import compile_model
from slicer_compile.runtime.client import EdgeClient
from slicer_compile.runtime.loadtest import drive
from slicer_compile.runtime.triton import write_repository
from slicer_compile.runtime.triton_server import TritonServer, unavailable_reason
from tests.models import EXAMPLES
from tests.runtime.test_server import CONFIG, deep_split, local_reference

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return compile_model(EXAMPLES / "digits_cnn.onnx", device="jetson", out_dir=tmp_path_factory.mktemp("a") / "out",
                         max_pairs=4)


@pytest.fixture(scope="module")
def triton(artifact, tmp_path_factory):
    repository = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(artifact.path, repository, server_backend="python", server_threads=1)
    with TritonServer(repository) as server:
        yield server


def digits(n):
    return np.load(EXAMPLES / "digits_calib.npz")["x"][:n]


def test_edge_client_gets_local_computation_for_every_split(artifact, triton):
    x = digits(6)
    splits = [s.id for s in artifact.splits if s.files]
    assert len(splits) == 4
    with EdgeClient(artifact.path, triton.http_url) as client:
        for sid in splits:
            got = np.concatenate([client.infer({"x": v[None]}, split=sid, config=CONFIG).outputs["logits"] for v in x])
            np.testing.assert_allclose(got, local_reference(artifact, sid, x, CONFIG), rtol=1e-4, atol=1e-5)


def _payload(artifact, sid, x):
    import onnx

    from slicer_compile.backends.onnxrt import OnnxrtRunner
    from slicer_compile.graph.codec_nodes import strip_encoders

    info = artifact.split(sid)
    edge = strip_encoders(onnx.load(str(artifact.part_path(sid, "edge"))), list(info.crossing))
    with OnnxrtRunner(edge) as runner:
        return np.frombuffer(encode(runner.infer({"x": x})[info.activations[0].name], CONFIG), np.uint8)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_tritonclient_gets_local_computation_and_the_artifact_id_holds(artifact, triton, protocol):
    if protocol == "http":
        import tritonclient.http as tc

        url = triton.http_url
    else:
        import tritonclient.grpc as tc

        url = triton.grpc_url
    client = tc.InferenceServerClient(url)
    assert client.is_server_ready()
    x = digits(1)
    for split in (s for s in artifact.splits if s.files):  # every materialised split
        sid = split.id
        assert client.is_model_ready(sid)
        payload = _payload(artifact, sid, x)
        name = f"{split.activations[0].name}.payload"
        tensor = tc.InferInput(name, [payload.size], "UINT8")
        tensor.set_data_from_numpy(payload)
        result = client.infer(sid, [tensor], parameters={"slicer_artifact_id": artifact.id})
        np.testing.assert_allclose(result.as_numpy("logits"), local_reference(artifact, sid, x, CONFIG),
                                   rtol=1e-4, atol=1e-5)
    # Request parameters reach the ensemble's steps: the decoder refuses another artifact.
    with pytest.raises(Exception, match="this repository serves"):
        client.infer(sid, [tensor], parameters={"slicer_artifact_id": "another-artifact"})
    garbage = tc.InferInput(name, [7], "UINT8")
    garbage.set_data_from_numpy(np.frombuffer(b"garbage", np.uint8))
    with pytest.raises(Exception, match="shorter than any valid payload"):
        client.infer(sid, [garbage])
    assert client.infer(sid, [tensor]).as_numpy("logits").shape == (1, 10)  # and it goes on serving


def test_a_refused_payload_is_the_clients_error_not_the_servers(artifact, triton):
    import tritonclient.http as th

    sid = deep_split(artifact)
    client = th.InferenceServerClient(triton.http_url)
    name = f"{artifact.split(sid).activations[0].name}.payload"
    garbage = th.InferInput(name, [7], "UINT8")
    garbage.set_data_from_numpy(np.frombuffer(b"garbage", np.uint8))
    with pytest.raises(Exception) as error:
        client.infer(sid, [garbage])
    # INVALID_ARG: a 4xx, so an EdgeClient does not take it for a lost server and fail over
    assert str(error.value.status()).startswith("4"), error.value


def test_64_clients_200_requests_lose_nothing(artifact, triton):
    sid = deep_split(artifact)
    x = digits(1)
    row, replies = drive(artifact.path, triton.http_url, sid, clients=64, requests=200, inputs={"x": x}, config=CONFIG)
    assert row.answered == row.requests == 64 * 200 == len(replies)
    expected = local_reference(artifact, sid, x, CONFIG)
    for reply in replies:
        np.testing.assert_allclose(reply.outputs["logits"], expected, rtol=1e-4, atol=1e-5)


def test_serve_engine_triton_starts_and_stops_a_real_triton(artifact):
    import re
    import signal
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "slicer_compile.cli", "serve", str(artifact.path), "--engine",
                                "triton", "--port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        found = re.search(r"http://(\S+) and gRPC", line)
        assert found, line
        x = digits(2)
        sid = deep_split(artifact)
        with EdgeClient(artifact.path, found.group(1)) as client:
            got = np.concatenate([client.infer({"x": v[None]}, split=sid, config=CONFIG).outputs["logits"] for v in x])
        np.testing.assert_allclose(got, local_reference(artifact, sid, x, CONFIG), rtol=1e-4, atol=1e-5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_an_llm_runs_with_its_sessions_in_triton(tmp_path):
    """The LLM's server side under Triton's sequence batcher (correlation id, START/END):
    EdgeLLM generates the unsplit model's tokens through it, at every cut, by hand-over,
    and for several sequences at once."""
    pytest.importorskip("torch", reason="building the test LLM needs torch (pip install -e .[torch])")
    pytest.importorskip("transformers", reason="building the test LLM needs transformers (the torch extra)")
    import threading

    from slicer_compile.llm.artifact import load_llm_artifact
    from slicer_compile.llm.compile import compile_llm
    from slicer_compile.runtime.llm.client import EdgeLLM, Plan
    from slicer_compile.runtime.triton import write_llm_repository
    from tests.llm.test_llama_parts import tiny_llama
    from tests.runtime.llm.test_serving import reference

    compile_llm(tiny_llama().config, device="jetson", out_dir=tmp_path / "lm", max_tokens=128)
    loaded = load_llm_artifact(tmp_path / "lm")
    model = (loaded.spec, loaded.parts())
    prompts = [[5, 17, 3, 42, 8], [9, 2, 33], [1, 60, 7, 7]]
    expected = [reference(model, p, 16) for p in prompts]
    write_llm_repository(tmp_path / "lm", tmp_path / "repo")
    with TritonServer(tmp_path / "repo") as server, EdgeLLM(tmp_path / "lm", server.http_url) as llm:
        for cut in range(loaded.spec.num_layers + 1):
            assert [s.token for s in llm.generate(prompts[0], 16, cut=cut, codec="float32")] == expected[0], cut
        handover = Plan(4, 2, True, "float32", "float32", "test")
        assert [s.token for s in llm.generate(prompts[0], 16, plan=handover)] == expected[0]
        got = [None] * len(prompts)

        def client(i):
            with EdgeLLM(tmp_path / "lm", server.http_url) as own:
                got[i] = [s.token for s in own.generate(prompts[i], 16, cut=1 + i, codec="float32")]

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert got == expected
