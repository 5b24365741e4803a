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


# --- an artifact is input too: confined paths, recorded digests ---------------------------


def _materialised(artifact):
    return next(s for s in artifact.splits if s.files)


def _broken_copy(compiled, tmp_path, mutate=None):
    broken = tmp_path / "out"
    shutil.copytree(compiled.path, broken, symlinks=True)
    if mutate is not None:
        manifest = json.loads((broken / "manifest.json").read_text())
        mutate(manifest, _materialised(compiled))
        write_manifest(broken, manifest)
    return broken


def _row(manifest, split):
    return next(r for r in manifest["splits"] if r["id"] == split.id)


@pytest.mark.parametrize("path", ["../../../elsewhere/model.onnx", "/etc/passwd", "splits/s0000/../../x.onnx",
                                  "splits/{id}/.hidden", "splits/{id}/sub/server.onnx", "splits/s9999/server.onnx"])
def test_manifest_paths_that_leave_the_split_folder_are_refused_at_load(compiled, tmp_path, path):
    def point_elsewhere(manifest, split):
        _row(manifest, split)["files"]["server"] = path.format(id=split.id)

    with pytest.raises(ArtifactError, match="is not a file of splits/"):
        load_artifact(_broken_copy(compiled, tmp_path, point_elsewhere))


def test_every_part_carries_a_sha256_and_a_changed_part_is_refused(compiled, tmp_path):
    from slicer_compile.runtime.host import ModelHost
    from slicer_compile.storage import sha256_of

    split = _materialised(compiled)
    assert set(split.digests) == set(split.files)
    assert all(split.digests[k] == sha256_of(compiled.path / f) for k, f in split.files.items())
    broken = _broken_copy(compiled, tmp_path)
    with open(broken / split.files["server"], "ab") as f:
        f.write(b"\0")
    artifact = load_artifact(broken)  # the manifest is fine; the part is not what it records
    with pytest.raises(ArtifactError, match="SHA-256 differs"):
        artifact.part_path(split.id, "server")
    with pytest.raises(ArtifactError, match="SHA-256 differs"):
        ModelHost(broken, splits=[split.id])


@pytest.mark.parametrize("link", ["part", "splits folder"])
def test_a_part_reached_through_a_symbolic_link_is_refused(compiled, tmp_path, link):
    split = _materialised(compiled)
    broken = _broken_copy(compiled, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    if link == "part":
        elsewhere.mkdir()
        target = broken / split.files["server"]
        shutil.move(target, elsewhere / "server.onnx")
        target.symlink_to(elsewhere / "server.onnx")
    else:
        shutil.move(broken / "splits", elsewhere)
        (broken / "splits").symlink_to(elsewhere)
    with pytest.raises(ArtifactError, match="symbolic link"):
        load_artifact(broken).part_path(split.id, "server")


def test_digests_must_name_the_splits_files(compiled, tmp_path):
    def bad_digest(manifest, split):
        _row(manifest, split)["digests"]["server"] = "not-a-digest"

    with pytest.raises(ArtifactError, match="SHA-256 hex"):
        load_artifact(_broken_copy(compiled, tmp_path, bad_digest))


def test_a_part_that_is_not_an_onnx_model_is_an_artifact_error(compiled, tmp_path):
    from slicer_compile.storage import sha256_of

    split = _materialised(compiled)

    def garbage_part(manifest, split):
        _row(manifest, split)["digests"].pop("server")  # an artifact from before digests

    broken = _broken_copy(compiled, tmp_path, garbage_part)
    (broken / split.files["server"]).write_bytes(b"\x08\x07garbage that is no protobuf" * 10)
    assert sha256_of(broken / split.files["server"])  # readable, just not a model
    with pytest.raises(ArtifactError, match="ONNX model"):
        load_artifact(broken).load_part_model(split.id, "server")
