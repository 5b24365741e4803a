"""The TensorRT backend's pure parts, which need neither TensorRT nor a GPU: the
codec I/O rewrite for engines, layer-name mapping, and what is said when a piece
is missing."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from slicer_compile.backends.tensorrt.contract import (
    encoder_payload_bytes, message_to_words, payload_words, to_engine_contract, words_to_message)
from slicer_compile.profile.engine_layers import attribute_layer_times, nodes_of_layer
from slicer_compile.errors import BackendUnavailableError, ConfigError, ModelError, PayloadError

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from slicer_compile.compiler import compile_model

    return compile_model(EXAMPLES / "digits_cnn.onnx", device="jetson", out_dir=tmp_path_factory.mktemp("a") / "out")


def _io(graph_values):
    return {v.name: (v.type.tensor_type.elem_type, [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim])
            for v in graph_values}


def test_edge_part_outputs_int32_words_and_count(artifact):
    import onnx
    from onnx import TensorProto

    info = next(s for s in artifact.splits if s.files and any(t.kind == "activation" for t in s.crossing))
    edge = onnx.load(str(artifact.part_path(info.id, "edge")))
    sizes = encoder_payload_bytes(edge)
    assert sizes and all(p > 0 for p in sizes.values())
    engine_edge = to_engine_contract(edge)
    onnx.checker.check_model(engine_edge)
    outputs = _io(engine_edge.graph.output)
    for payload, size in sizes.items():
        assert outputs[payload] == (TensorProto.INT32, [payload_words(size)])
        assert outputs[payload.replace(".payload", ".nbytes")] == (TensorProto.INT32, [1])
    # The ONNX Runtime contract is left as it was in the original.
    assert _io(edge.graph.output)[next(iter(sizes))][0] == TensorProto.UINT8


def test_server_part_takes_words_and_count(artifact):
    import onnx
    from onnx import TensorProto

    info = next(s for s in artifact.splits if s.files and any(t.kind == "activation" for t in s.crossing))
    edge = onnx.load(str(artifact.part_path(info.id, "edge")))
    server = onnx.load(str(artifact.part_path(info.id, "server")))
    with pytest.raises(ModelError, match="payload size"):
        to_engine_contract(server)
    engine_server = to_engine_contract(server, payload_bytes=encoder_payload_bytes(edge))
    onnx.checker.check_model(engine_server)
    inputs = _io(engine_server.graph.input)
    for payload, size in encoder_payload_bytes(edge).items():
        assert inputs[payload] == (TensorProto.INT32, [payload_words(size)])
        nbytes = payload.replace(".payload", ".nbytes")
        assert inputs[nbytes] == (TensorProto.INT32, [1])
        decoder = next(n for n in engine_server.graph.node if n.op_type == "SlicerDecode" and n.input[0] == payload)
        assert list(decoder.input) == [payload, nbytes]


@pytest.mark.parametrize("length", [17, 20, 4096])
def test_a_message_survives_the_engine_words(length):
    from slicer_compile.codec import SlicerConfig, decode, encode

    x = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    message = encode(x, SlicerConfig(sparsity=0.5))
    words, nbytes = message_to_words(message, payload_words(len(message) + 5))
    assert words.dtype == np.int32 and nbytes.tolist() == [len(message)]
    buffer, count = words_to_message(words, nbytes)
    assert count.dtype == np.int64 and int(count[0]) == len(message)
    assert buffer[: int(count[0])].tobytes() == message
    assert not buffer[len(message):].any()  # zero padding, as the encoder plugin writes it
    np.testing.assert_array_equal(decode(buffer[: int(count[0])].tobytes()), decode(message))


def test_words_refuse_what_does_not_fit():
    with pytest.raises(PayloadError, match="exceeds"):
        message_to_words(b"x" * 9, words=2)
    with pytest.raises(PayloadError, match="reported"):
        words_to_message(np.zeros(2, np.int32), np.array([9], np.int32))
    with pytest.raises(PayloadError, match="reported"):
        words_to_message(np.zeros(2, np.int32), np.array([-1], np.int32))


NODES = ["conv1", "conv1_relu", "/layer1/conv/Conv", "/layer1/Relu", "add", "pool", "fc"]


@pytest.mark.parametrize("layer, expected", [
    ("conv1", ("conv1",)),
    ("conv1_relu", ("conv1_relu",)),  # not claimed by its prefix conv1
    ("conv1 + conv1_relu", ("conv1", "conv1_relu")),
    ("PWN(/layer1/conv/Conv, /layer1/Relu)", ("/layer1/conv/Conv", "/layer1/Relu")),
    ("{ForeignNode[/layer1/conv/Conv...pool]}", ("/layer1/conv/Conv", "/layer1/Relu", "add", "pool")),
    ("Reformatting CopyNode for Input Tensor 0 to fc", ("fc",)),
    ("(Unnamed Layer* 12) [Shuffle]", ()),
    ("fcx", ()),
])
def test_layer_names_map_to_onnx_nodes(layer, expected):
    assert nodes_of_layer(layer, NODES) == expected


def test_fused_layer_time_is_shared_by_roofline_weight():
    times = {"conv1 + conv1_relu": 3e-3, "fc": 1e-3, "(Unnamed Layer* 3) [Shuffle]": 5e-4}
    weight = {"conv1": 2.0, "conv1_relu": 1.0, "fc": 7.0}
    per_node, layers = attribute_layer_times(times, NODES, weight)
    assert per_node["conv1"] == pytest.approx(2e-3) and per_node["conv1_relu"] == pytest.approx(1e-3)
    assert per_node["fc"] == pytest.approx(1e-3) and per_node["pool"] == 0.0
    assert sum(per_node.values()) == pytest.approx(4e-3)  # the unmapped shuffle is reported, not spread
    unmapped = [layer for layer in layers if not layer.nodes]
    assert [layer.layer for layer in unmapped] == ["(Unnamed Layer* 3) [Shuffle]"]
    assert next(layer for layer in layers if layer.fused).nodes == ("conv1", "conv1_relu")


def test_missing_tensorrt_is_named(monkeypatch):
    from slicer_compile.backends.tensorrt.availability import require_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as if not installed
    with pytest.raises(BackendUnavailableError, match="needs TensorRT, which is not installed"):
        require_tensorrt()


def test_old_tensorrt_and_missing_cuda_python_are_named(monkeypatch):
    from slicer_compile.backends.tensorrt.availability import require_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.1"))
    with pytest.raises(BackendUnavailableError, match="IPluginV3.*TensorRT 10"):
        require_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.9.0"))
    monkeypatch.setitem(sys.modules, "cuda", None)
    with pytest.raises(BackendUnavailableError, match="cuda-python"):
        require_tensorrt()


def test_plugin_library_says_where_it_looked(monkeypatch, tmp_path):
    from slicer_compile.backends.tensorrt import availability

    monkeypatch.setenv(availability.PLUGIN_LIBRARY_ENV, str(tmp_path / "nope.so"))
    with pytest.raises(BackendUnavailableError, match="SLICER_TRT_PLUGINS"):
        availability.plugin_library()
    monkeypatch.delenv(availability.PLUGIN_LIBRARY_ENV)
    with pytest.raises(BackendUnavailableError, match="build-kernels --plugins"):
        availability.plugin_library(tmp_path, build=False)
    monkeypatch.setattr(availability, "tensorrt_root", lambda: None)
    monkeypatch.setattr(availability.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    with pytest.raises(BackendUnavailableError, match="NvInferRuntime.h"):
        availability.build_plugins(tmp_path)


def test_engine_options_and_backends_are_checked():
    from slicer_compile.backends.registry import open_runner
    from slicer_compile.backends.tensorrt.builder import EngineOptions

    with pytest.raises(ConfigError, match="precision"):
        EngineOptions(precision="int4")
    with pytest.raises(ConfigError, match="dynamic_dim"):
        EngineOptions(dynamic_dim=(4, 2, 8))
    with pytest.raises(ConfigError, match="unknown backend"):
        open_runner(b"", "openvino")


def test_compile_with_an_unknown_backend_is_refused(tmp_path):
    from slicer_compile.compiler import compile_model

    with pytest.raises(ConfigError, match="backend"):
        compile_model(EXAMPLES / "digits_cnn.onnx", out_dir=tmp_path / "out", backend="openvino")
    assert not (tmp_path / "out").exists()


def test_profile_keeps_its_layer_table(tmp_path):
    from slicer_compile.profile.engine_layers import LayerTime
    from slicer_compile.profile.measure import NodeProfile, Profile

    profile = Profile("sha", "gpu", "H100, TensorRT 10.9", 3, 10, 1e-3,
                      (NodeProfile("conv1", "Conv", 6e-4, 1e6, 1000, 400, 100),), "tensorrt",
                      (LayerTime("conv1 + conv1_relu", 6e-4, ("conv1", "conv1_relu")),))
    profile.save(tmp_path / "p.json")
    assert Profile.load(tmp_path / "p.json") == profile


def test_int8_without_calibration_is_refused_before_any_work(tmp_path):
    from slicer_compile.compiler import compile_model

    with pytest.raises(ConfigError, match="needs --calib"):
        compile_model(EXAMPLES / "digits_cnn.onnx", out_dir=tmp_path / "out", backend="tensorrt", precision="int8")
    with pytest.raises(ConfigError, match="precision"):
        compile_model(EXAMPLES / "digits_cnn.onnx", out_dir=tmp_path / "out", precision="int4")
    assert not (tmp_path / "out").exists()
