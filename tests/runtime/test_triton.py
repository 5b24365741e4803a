"""The Triton model repository: every config parses with Triton's ModelConfig schema,
the ensembles wire existing models, and the generated Python model compiles."""

from __future__ import annotations

import ast

import numpy as np
import onnx
import pytest

from slicer_compile.codec.ops import DOMAIN
from slicer_compile.compiler import compile_model
from slicer_compile.runtime.triton import MODELS_DIR, validate_config, write_repository
from tests.models import EXAMPLES


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("triton")
    artifact = compile_model(EXAMPLES / "transformer.onnx", device="jetson", out_dir=root / "out", max_pairs=3)
    write_repository(artifact.path, root / "repo")
    return artifact, root / "repo"


def test_every_config_is_a_valid_model_config(repository):
    artifact, repo = repository
    configs = {p.parent.name: validate_config(p.read_text(), p.parent.name) for p in repo.glob("*/config.pbtxt")}
    materialised = [s for s in artifact.splits if s.files]
    assert len(materialised) == 3
    for split in materialised:
        ensemble = configs[split.id]
        assert ensemble.platform == "ensemble"
        steps = [step.model_name for step in ensemble.ensemble_scheduling.step]
        assert all(name in configs for name in steps)
        server = configs[f"{split.id}_server"]
        assert server.backend == "onnxruntime" and server.max_batch_size == 16
        assert server.dynamic_batching.max_queue_delay_microseconds == 500
        # the embedded server model: the split's server part without its decoders
        core = onnx.load(str(repo / f"{split.id}_server" / "1" / "model.onnx"))
        assert not [n for n in core.graph.node if n.domain == DOMAIN]
        assert {i.name for i in core.graph.input} == {t.name for t in split.crossing}
        assert len(core.graph.node) >= 1 and [o.name for o in core.graph.output] == [o["name"] for o in artifact.manifest["outputs"]]
        # the ensemble takes the same tensors as the embedded server's model
        names = {i.name for i in ensemble.input}
        expected = {f"{t.name}.payload" if t.kind == "activation" else t.name for t in split.crossing}
        assert names == expected
    decoders = list(repo.glob("*_decode_*/1/model.py"))
    assert decoders
    for model_py in decoders:  # the static module, configured by its config's parameters
        assert model_py.read_text() == (MODELS_DIR / "decoder.py").read_text()
        ast.parse(model_py.read_text())
        parameters = configs[model_py.parent.parent.name].parameters
        assert parameters["artifact_id"].string_value == artifact.id
        assert parameters["input"].string_value.endswith(".payload")


def test_a_repository_for_a_triton_without_the_onnxruntime_backend(repository, tmp_path):
    artifact, _ = repository
    write_repository(artifact.path, tmp_path / "repo", server_backend="python", server_threads=2)
    for split in (s for s in artifact.splits if s.files):
        folder = tmp_path / "repo" / f"{split.id}_server"
        config = validate_config((folder / "config.pbtxt").read_text(), split.id)
        assert config.backend == "python" and config.parameters["threads"].string_value == "2"
        assert (folder / "1" / "model.py").read_text() == (MODELS_DIR / "onnx_server.py").read_text()
        assert (folder / "1" / "model.onnx").is_file()
    from slicer_compile.errors import ConfigError

    with pytest.raises(ConfigError, match="server backend must be one of"):
        write_repository(artifact.path, tmp_path / "other", server_backend="tensorflow")


def test_invalid_config_is_caught():
    from slicer_compile.errors import SlicerCompileError

    with pytest.raises(SlicerCompileError, match="not a valid ModelConfig"):
        validate_config('name: "x" max_batch_size: "sixteen"', "x")


def test_repository_refuses_to_overwrite(repository, tmp_path):
    from slicer_compile.errors import ArtifactError

    artifact, repo = repository
    with pytest.raises(ArtifactError, match="exists and is not empty"):
        write_repository(artifact.path, repo)


class _PythonBackendStub:
    """The few names of Triton's triton_python_backend_utils the generated decoder uses."""

    class Tensor:
        def __init__(self, name, value):
            self.name, self.value = name, value

        def as_numpy(self):
            return self.value

    class InferenceResponse:
        def __init__(self, output_tensors=(), error=None):
            self.output_tensors, self.error = list(output_tensors), error

    class TritonError(Exception):
        INVALID_ARG = 3

        def __init__(self, message, code=None):
            super().__init__(message)
            self.code = code

    @staticmethod
    def get_input_tensor_by_name(request, name):
        return request.inputs[name]


class _Request:
    def __init__(self, **inputs):
        self.inputs = {name: _PythonBackendStub.Tensor(name, value) for name, value in inputs.items()}

    def parameters(self):
        return "{}"


def test_the_generated_decoder_restores_a_centred_tensor(tmp_path, monkeypatch):
    """The Python decoder Triton runs adds the channel offsets back (codec.centring)."""
    import sys
    import types

    from slicer_compile.codec import SlicerConfig, encode
    from slicer_compile.codec.centring import centred
    from tests.export_models import affine_offset_model

    rng = np.random.default_rng(1)
    np.savez(tmp_path / "c.npz", x=rng.standard_normal((32, 3, 16, 16)).astype(np.float32))
    artifact = compile_model(affine_offset_model(tmp_path / "m.onnx"), device="jetson", out_dir=tmp_path / "a",
                             calib=tmp_path / "c.npz", max_pairs=20)
    split = next(s for s in artifact.splits if s.files and [t.name for t in s.activations] == ["affine"])
    (tensor,) = split.activations
    assert tensor.centre is not None
    write_repository(artifact.path, tmp_path / "repo")
    model_dir = tmp_path / "repo" / f"{split.id}_decode_0"
    source = (model_dir / "1" / "model.py").read_text()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils",
                        types.SimpleNamespace(**{k: getattr(_PythonBackendStub, k) for k in (
                            "Tensor", "InferenceResponse", "TritonError", "get_input_tensor_by_name")}))
    namespace = {}
    exec(compile(source, "model.py", "exec"), namespace)
    value = rng.standard_normal(tensor.shape).astype(np.float32) + tensor.centre.offset.reshape(1, -1, 1, 1)
    payload = np.frombuffer(encode(centred(value, tensor.centre), SlicerConfig(sparsity=0.5)), np.uint8)
    from google.protobuf import json_format

    # What Triton hands initialize(): the model's config as JSON.
    config = json_format.MessageToJson(validate_config((model_dir / "config.pbtxt").read_text(), "decoder"),
                                       preserving_proto_field_name=True)
    model = namespace["TritonPythonModel"]()
    model.initialize({"model_config": config})
    (response,) = model.execute([_Request(**{"affine.payload": payload})])
    assert response.error is None
    decoded = response.output_tensors[0].value
    # Half the residual kept: the dropped half is restored to its channel offset, not to 0.
    dropped = np.abs(decoded - value) > 1e-2
    assert 0.3 < dropped.mean() < 0.7
    means = decoded.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(means, value.mean(axis=(0, 2, 3)), atol=0.15)
