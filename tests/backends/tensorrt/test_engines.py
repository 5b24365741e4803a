"""TensorRT engine pairs against the ONNX Runtime pipeline (needs TensorRT, a GPU,
and TensorRT's headers to build the plugin library)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.tensorrt

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from slicer_compile.compiler import compile_model

    return compile_model(EXAMPLES / "digits_cnn.onnx", device="jetson", calib=EXAMPLES / "digits_calib.npz",
                         out_dir=tmp_path_factory.mktemp("trt") / "out", backend="tensorrt", precision="fp32")


def _deepest_with_activation(artifact):
    return max((s for s in artifact.splits if s.files and any(t.kind == "activation" for t in s.crossing)),
               key=lambda s: s.position)


def test_compile_writes_plan_pairs(artifact):
    assert artifact.manifest["backend"] == "tensorrt" and artifact.manifest["engine"]["precision"] == "fp32"
    for split_id in artifact.pareto:
        files = artifact.split(split_id).files
        for part in ("edge_plan", "server_plan", "server_core_plan"):
            assert (artifact.path / files[part]).stat().st_size > 0
    assert (artifact.path / "timing.cache").is_file()


def test_engine_pair_matches_the_onnx_pipeline(artifact):
    """Edge engine payload decodes with numpy to the ONNX Runtime activation's top-k;
    the server engine's answer from that payload matches ONNX Runtime's on 100 digits."""
    import onnx

    from slicer_compile.backends.registry import open_runner
    from slicer_compile.codec import SlicerConfig, decode, encode
    from slicer_compile.codec.ops import KNOBS_INPUT, knobs_tensor
    from slicer_compile.graph.codec_nodes import nbytes_name, payload_name, strip_decoders, strip_encoders

    info = _deepest_with_activation(artifact)
    activation = next(t for t in info.crossing if t.kind == "activation")["name"]
    cfg = SlicerConfig(sparsity=0.75)
    samples = np.load(EXAMPLES / "digits_calib.npz")
    name = artifact.manifest["inputs"][0]["name"]
    images = samples[name][:100]
    edge_core = strip_encoders(onnx.load(str(artifact.part_path(info.id, "edge"))), list(info.crossing))
    server_core = strip_decoders(onnx.load(str(artifact.part_path(info.id, "server"))), list(info.crossing))
    agree = 0
    with open_runner(artifact.path / info.files["edge_plan"], "tensorrt") as edge, \
            open_runner(artifact.path / info.files["server_plan"], "tensorrt") as server, \
            open_runner(edge_core, "onnxruntime") as ort_edge, open_runner(server_core, "onnxruntime") as ort_server:
        for image in images:
            feeds = {name: image[None]}
            out = edge.infer({**feeds, KNOBS_INPUT: knobs_tensor(cfg)})
            count = int(out[nbytes_name(activation)][0])
            message = out[payload_name(activation)][:count].tobytes()
            got, expected_hat = decode(message), decode(encode(ort_edge.infer(feeds)[activation], cfg))
            # The engine's convolutions round differently from ONNX Runtime's: the kept sets
            # may differ at the k-th score's boundary, by an element or two at most.
            both = (got != 0) & (expected_hat != 0)
            assert np.count_nonzero((got != 0) ^ (expected_hat != 0)) <= 2
            # ... and block ranges shift a little with them: values agree to a quantisation step or two.
            np.testing.assert_allclose(got[both], expected_hat[both], atol=0.02 * np.abs(expected_hat).max())
            answer = server.infer({payload_name(activation): np.frombuffer(message, np.uint8)})
            expected = ort_server.infer({activation: decode(message)})
            key = next(iter(expected))
            np.testing.assert_allclose(answer[key], expected[key], rtol=1e-3, atol=1e-3)
            agree += int(np.argmax(answer[key]) == np.argmax(expected[key]))
    assert agree >= 98


def test_decoder_plugin_refuses_a_corrupt_payload(artifact):
    from slicer_compile.backends.registry import open_runner
    from slicer_compile.errors import ModelError
    from slicer_compile.graph.codec_nodes import payload_name

    info = _deepest_with_activation(artifact)
    activation = next(t for t in info.crossing if t.kind == "activation")["name"]
    with open_runner(artifact.path / info.files["server_plan"], "tensorrt") as server:
        with pytest.raises(ModelError):
            server.infer({payload_name(activation): np.frombuffer(b"SLCR" + b"\x01" * 40, np.uint8)})


def test_profile_and_bench_tensorrt(artifact, tmp_path):
    profile = tmp_path / "p.json"
    for args in (["profile", str(EXAMPLES / "digits_cnn.onnx"), "-o", str(profile), "--backend", "tensorrt"],
                 ["bench", "tensorrt", str(artifact.path), "--repeat", "5", "--json"]):
        result = subprocess.run([sys.executable, "-m", "slicer_compile.cli", *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    data = json.loads(profile.read_text())
    assert data["backend"] == "tensorrt" and data["layers"]
    assert any(n["latency_s"] > 0 for n in data["nodes"] if n["op_type"] == "Conv")
    rows = json.loads(result.stdout)  # the bench's --json rows
    assert rows and all(r["edge_ms"] > 0 and r["server_ms"] > 0 for r in rows)
    assert all(r["payload_bytes"] < r["raw_bytes"] for r in rows if r["activation_elements"])


def test_served_engine_pair_answers_like_onnx_runtime(artifact):
    """The runtime on engines: edge.plan on the client, server.plan behind the server.
    A client encoding with numpy talks to the same engine server: the plugin decodes
    the reference's payloads, and the two agree on the digit."""
    from slicer_compile.codec import SlicerConfig
    from slicer_compile.runtime.client import EdgeClient
    from slicer_compile.runtime.server import ServerConfig, SplitServer

    info = _deepest_with_activation(artifact)
    name = artifact.manifest["inputs"][0]["name"]
    images = np.load(EXAMPLES / "digits_calib.npz")[name][:20]
    cfg = SlicerConfig(sparsity=0.75)
    agree = 0
    with SplitServer(artifact.path, port=0, config=ServerConfig(backend="tensorrt"), splits=[info.id]) as server:
        with EdgeClient(artifact, server.url, backend="tensorrt") as on_engines, \
                EdgeClient(artifact, server.url) as with_numpy_codec:
            for image in images:
                a = on_engines.infer({name: image[None]}, split=info.id, config=cfg)
                b = with_numpy_codec.infer({name: image[None]}, split=info.id, config=cfg)
                assert a.timings["batch_size"] == 1
                key = next(iter(b.outputs))
                agree += int(np.argmax(a.outputs[key]) == np.argmax(b.outputs[key]))
    assert agree >= 19


def test_triton_repository_serves_the_batched_core_plan(artifact, tmp_path):
    from slicer_compile.errors import ConfigError
    from slicer_compile.runtime.triton import write_repository

    write_repository(artifact.path, tmp_path / "repo")
    split_id = artifact.pareto[-1]
    assert (tmp_path / "repo" / f"{split_id}_server" / "1" / "model.plan").is_file()
    assert 'platform: "tensorrt_plan"' in (tmp_path / "repo" / f"{split_id}_server" / "config.pbtxt").read_text()
    with pytest.raises(ConfigError, match="exceeds"):
        write_repository(artifact.path, tmp_path / "repo2", max_batch=64)
    assert not (tmp_path / "repo2").exists()
