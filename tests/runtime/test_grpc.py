"""The same host behind KServe v2 gRPC: EdgeClient over grpc:// and tritonclient.grpc
itself get what HTTP gets, and its refusals carry gRPC status codes."""

from __future__ import annotations

import numpy as np
import pytest

from slicer_compile.codec import SlicerConfig
from slicer_compile.compiler import compile_model
from slicer_compile.runtime.client import EdgeClient, ServerError
from slicer_compile.runtime.server import SplitServer
from tests.models import EXAMPLES

grpcclient = pytest.importorskip("tritonclient.grpc", reason="the triton extra (tritonclient[grpc]) is not installed")

CONFIG = SlicerConfig(sparsity=0.75)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    artifact = compile_model(EXAMPLES / "digits_cnn.onnx", device="jetson",
                             out_dir=tmp_path_factory.mktemp("g") / "out", max_pairs=3)
    with SplitServer(artifact.path, port=0, grpc_port=0) as server:
        yield artifact, server


def test_edge_client_over_grpc_answers_like_http(served):
    artifact, server = served
    x = np.load(EXAMPLES / "digits_calib.npz")["x"][:1]
    for split in (s for s in artifact.splits if s.files):
        with EdgeClient(artifact, server.url) as http, EdgeClient(artifact, f"grpc://{server.grpc.url}") as grpc:
            over_http = http.infer({"x": x}, split=split.id, config=CONFIG)
            over_grpc = grpc.infer({"x": x}, split=split.id, config=CONFIG)
        np.testing.assert_array_equal(over_grpc.outputs["logits"], over_http.outputs["logits"])
        assert over_grpc.timings["server_compute_s"] > 0 and over_grpc.timings["batch_size"] >= 1


def test_tritonclient_grpc_calls_and_refusals(served):
    from tritonclient.utils import InferenceServerException

    artifact, server = served
    client = grpcclient.InferenceServerClient(server.grpc.url)
    assert client.is_server_live() and client.is_server_ready()
    split = next(s for s in artifact.splits if s.files and s.activations)
    assert client.is_model_ready(split.id)
    meta = client.get_model_metadata(split.id)
    assert [i.name for i in meta.inputs][:1] == [f"{split.activations[0].name}.payload"]
    payload = np.zeros(10, np.uint8)
    entry = grpcclient.InferInput(f"{split.activations[0].name}.payload", [10], "UINT8")
    entry.set_data_from_numpy(payload)
    with pytest.raises(InferenceServerException, match="artifact"):
        client.infer(split.id, [entry], parameters={"slicer_artifact_id": "0123456789abcdef"})
    with pytest.raises(InferenceServerException, match="payload|magic|slicer"):
        client.infer(split.id, [entry], parameters={"slicer_artifact_id": artifact.id})
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("s9999", [entry], parameters={"slicer_artifact_id": artifact.id})
    with pytest.raises(ServerError, match="unknown model"):
        with EdgeClient(artifact, f"grpc://{server.grpc.url}") as edge:
            edge.transport.infer("s9999", edge_message(artifact))


def edge_message(artifact):
    from slicer_compile.runtime.protocol import InferMessage

    return InferMessage({"x": np.zeros((1, 1, 8, 8), np.float32)}, {"slicer_artifact_id": artifact.id})
