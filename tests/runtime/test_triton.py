"""The Triton model repository: every config parses with Triton's ModelConfig schema,
the ensembles wire existing models, and the generated Python model compiles."""

from __future__ import annotations

import ast

import onnx
import pytest

from slicer_compile.codec.ops import DOMAIN
from slicer_compile.compiler import compile_model
from slicer_compile.runtime.triton import validate_config, write_repository
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
    for model_py in repo.glob("*_decode_*/1/model.py"):
        ast.parse(model_py.read_text())
        assert artifact.id in model_py.read_text()


def test_invalid_config_is_caught():
    from slicer_compile.errors import SlicerCompileError

    with pytest.raises(SlicerCompileError, match="not a valid ModelConfig"):
        validate_config('name: "x" max_batch_size: "sixteen"', "x")


def test_repository_refuses_to_overwrite(repository, tmp_path):
    from slicer_compile.errors import ArtifactError

    artifact, repo = repository
    with pytest.raises(ArtifactError, match="exists and is not empty"):
        write_repository(artifact.path, repo)
