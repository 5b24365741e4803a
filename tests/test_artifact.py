"""The artifact as typed records: checked once, at load, in one place."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from slicer_compile.artifact import CrossingTensor, load_artifact, sparsity_key, write_manifest
from slicer_compile.compiler import compile_model
from slicer_compile.errors import ArtifactError
from tests.models import EXAMPLES


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return compile_model(EXAMPLES / "digits_cnn.onnx", device="jetson", out_dir=tmp_path_factory.mktemp("a") / "out",
                         max_pairs=2)


def test_records_are_typed_and_round_trip(compiled):
    split = compiled.splits[3]
    assert all(isinstance(t, CrossingTensor) for t in split.crossing)
    assert split.payload_bound_at(0.9) == split.payload_bound_bytes[sparsity_key(0.9)] > 0
    again = load_artifact(compiled.path)
    assert again.splits == compiled.splits
    assert compiled.codec.defaults.sparsity == pytest.approx(0.9) and not compiled.calibration.measured


@pytest.mark.parametrize("mutate, fragment", [
    (lambda m: m["splits"][0].update(id="../../etc"), "is not of the form s0000"),
    (lambda m: m["splits"][0]["crossing"][0].update(shape="1x2"), "shape must be a list of positive integers"),
    (lambda m: m["splits"][0]["crossing"][0].update(kind="weights"), "kind must be one of"),
    (lambda m: m["splits"][0].update(payload_bound_bytes={"abc": 1}), "sparsity key 'abc' is not a number"),
    (lambda m: m["splits"][0].update(edge_latency_s="fast"), "expected a finite number"),
    (lambda m: m["splits"][0].pop("files"), "lacks files"),
    (lambda m: m.update(splits={"s0000": {}}), "the split table must be a list"),
    (lambda m: m["codec"]["defaults"].update(sparsity=2.0), "codec defaults: sparsity must be in [0, 1)"),
    (lambda m: m.update(calibration={"status": "maybe"}), "malformed calibration section"),
    (lambda m: m.pop("codec"), "the manifest lacks 'codec'"),
])
def test_a_malformed_manifest_is_one_artifact_error(compiled, tmp_path, mutate, fragment):
    broken = tmp_path / "out"
    shutil.copytree(compiled.path, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    mutate(manifest)
    write_manifest(broken, manifest)
    with pytest.raises(ArtifactError, match=re.escape(fragment)):
        load_artifact(broken)
