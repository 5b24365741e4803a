"""The compiler end to end on the committed examples, through Python and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from slicer_compile.artifact import ARTIFACT_ID_KEY, load_artifact, sparsity_key
from slicer_compile.backends.onnxrt import OnnxrtRunner
from slicer_compile.codec import SlicerConfig
from slicer_compile.codec.ops import knobs_tensor
from slicer_compile.compiler import compile_model, materialize
from slicer_compile.errors import ModelError
from tests.models import EXAMPLES


@pytest.fixture(scope="module")
def digits_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("compile") / "digits"
    return compile_model(EXAMPLES / "digits_cnn.onnx", device="jetson", out_dir=out,
                         calib=EXAMPLES / "digits_calib.npz", calib_samples=128)


def run_split(artifact, split_id, x, cfg):
    """Edge part -> payload bytes -> server part, one sample at a time."""
    info = artifact.split(split_id)
    edge = onnx.load(str(artifact.part_path(split_id, "edge")))
    server = onnx.load(str(artifact.part_path(split_id, "server")))
    outputs = []
    with OnnxrtRunner(edge) as e, OnnxrtRunner(server) as s:
        for sample in x:
            sent = e.infer({"x": sample[None], "slicer_knobs": knobs_tensor(cfg)})
            feeds = {}
            for t in info.crossing:
                if t.kind == "activation":
                    n = int(sent[f"{t.name}.nbytes"][0])
                    feeds[f"{t.name}.payload"] = sent[f"{t.name}.payload"][:n]
                else:
                    feeds[t.name] = sent[t.name]
            outputs.append(s.infer(feeds)["logits"])
    return np.concatenate(outputs)


def test_manifest_files_and_report(digits_artifact):
    a = digits_artifact
    m = a.manifest
    assert m["schema_version"] == 1 and m["device"]["name"] == "orin-nano"
    assert m["calibration"]["status"] == "measured" and m["calibration"]["metric"] == "top1_agreement"
    assert len(a.splits) >= 8 and 2 <= len(a.pareto) <= 8
    for s in a.splits:
        assert s.edge_latency_s >= 0 and s.server_latency_s >= 0 and s.edge_memory_bytes > 0
        # Coarse, then fine: every split at the default sparsity, the Pareto ones at the whole grid.
        grid = (0.5, 0.75, 0.9, 0.95, 0.99) if s.id in a.pareto else (0.9,)
        assert sorted(s.fidelity) == [sparsity_key(v) for v in grid]
        assert s.payload_bound_at(0.99) <= s.payload_bound_at(0.5) <= s.payload_bytes_limit
        if s.id in a.pareto:
            for part in ("edge", "server"):
                model = onnx.load(str(a.part_path(s.id, part)))
                assert {p.key: p.value for p in model.metadata_props}[ARTIFACT_ID_KEY] == a.id
        else:
            assert s.files is None
    # deeper splits do more edge work and leave less for the server
    positions = [s.position for s in a.splits]
    assert positions == sorted(positions)
    assert [s.server_latency_s for s in a.splits] == sorted((s.server_latency_s for s in a.splits), reverse=True)
    report = (a.path / "report.md").read_text()
    assert "| split |" in report and (a.path / "plots" / "latency.png").stat().st_size > 10_000
    assert (a.path / "plots" / "fidelity.png").is_file()


def test_digits_accuracy_within_one_point_at_sparsity_0_9(digits_artifact):
    data = np.load(EXAMPLES / "digits_calib.npz")
    x, labels = data["x"], data["labels"]
    with OnnxrtRunner(onnx.load(str(digits_artifact.path / "model.onnx"))) as full:
        baseline = np.mean([full.infer({"x": s[None]})["logits"].argmax() for s in x] == labels)
    # The split a deployment would take at s = 0.9, accuracy first: the materialised
    # conv feature map with the best calibrated fidelity (on other samples' agreement).
    conv_splits = [s for s in digits_artifact.splits if s.id in digits_artifact.pareto and len(s.if_shape) == 4]
    chosen = max(conv_splits, key=lambda s: (s.fidelity_at(0.9), s.position))
    logits = run_split(digits_artifact, chosen.id, x, SlicerConfig(sparsity=0.9))
    accuracy = np.mean(logits.argmax(axis=1) == labels)
    assert baseline > 0.95
    assert accuracy >= baseline - 0.01, (chosen.id, accuracy, baseline)


def test_codec_bypassed_pair_is_exact_and_payload_fits(digits_artifact):
    # s = 0 keeps every non-zero value; q_bits 16 is the finest, so the output is close, not exact —
    # exactness without the codec is covered by tests/graph; here: the payload fits the node's size.
    a = digits_artifact
    sid = a.pareto[1]
    x = np.load(EXAMPLES / "digits_calib.npz")["x"][:4]
    for s in (0.5, 0.9, 0.99):
        logits = run_split(a, sid, x, SlicerConfig(sparsity=s))
        assert logits.shape == (4, 10)


def test_materialize_on_demand_and_cli_inspect(digits_artifact, tmp_path):
    a = digits_artifact
    other = next(s for s in a.splits if s.files is None)
    info = materialize(a.path, other.id)
    assert (a.path / info.files["edge"]).is_file()
    assert load_artifact(a.path).split(other.id).files == info.files
    result = subprocess.run([sys.executable, "-m", "slicer_compile.cli", "inspect", str(a.path)],
                            capture_output=True, text=True)
    assert result.returncode == 0 and other.id in result.stdout


def test_compile_a_torch_module(tmp_path):
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                 torch.nn.Linear(64, 8))
    artifact = compile_model(module, device="cpu", out_dir=tmp_path / "out", example_inputs=[torch.randn(1, 32)],
                             runs=3)
    assert artifact.manifest["device"]["latency_source"].startswith("measured")
    assert len(artifact.splits) >= 4


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "slicer_compile.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_profile_then_compile_from_it(tmp_path):
    prof = tmp_path / "prof.json"
    result = cli("profile", EXAMPLES / "resnet_dag.onnx", "-o", prof, "--runs", "3")
    assert result.returncode == 0, result.stderr
    data = json.loads(prof.read_text())
    assert data["schema_version"] == 1 and len(data["nodes"]) > 30
    assert sum(n["latency_s"] for n in data["nodes"]) > 0
    result = cli(EXAMPLES / "resnet_dag.onnx", "--device", "orin-nx", "--profile", prof, "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "measured profile prof.json" in manifest["device"]["latency_source"]
    # A profile of another model is refused.
    result = cli(EXAMPLES / "digits_cnn.onnx", "--profile", prof, "-o", tmp_path / "out2")
    assert result.returncode != 0 and "another model" in result.stderr


def test_devices_lists_the_catalogue():
    result = cli("devices")
    assert result.returncode == 0
    for name in ("orin-nano", "orin-nx", "agx-orin", "xavier-nx", "a100", "h100", "l4", "cpu"):
        assert name in result.stdout


def one_node_model(path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("case, fragment", [
    ("not_onnx", "is not a readable ONNX model"),
    ("truncated", "is not a readable ONNX model"),
    ("no_cut", "no valid cut"),
    ("unknown_device", "unknown device 'tpu'"),
    ("unwritable", "cannot write to /proc"),
    ("missing", "no such model file"),
    ("bad_calib", "not an .npz"),
    ("exists", "exists and is not empty"),
])
def test_bad_input_one_line_error_and_nothing_half_written(tmp_path, case, fragment):
    model = tmp_path / "model.onnx"
    out = tmp_path / "out"
    args = [model, "-o", out, "--runs", "2"]
    if case == "not_onnx":
        model.write_text("this is not a model")
    elif case == "truncated":
        data = (EXAMPLES / "digits_cnn.onnx").read_bytes()
        model.write_bytes(data[: len(data) // 2])
    elif case == "no_cut":
        one_node_model(model)
    else:
        model.write_bytes((EXAMPLES / "digits_cnn.onnx").read_bytes())
    if case == "unknown_device":
        args += ["--device", "tpu"]
    if case == "unwritable":
        args[2] = "/proc/slicer-out"
    if case == "missing":
        args[0] = tmp_path / "missing.onnx"
    if case == "bad_calib":
        (tmp_path / "calib.npz").write_text("nope")
        args += ["--calib", tmp_path / "calib.npz"]
    if case == "exists":
        out.mkdir()
        (out / "keep.txt").write_text("user data")
    result = cli(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    if case == "exists":
        assert (out / "keep.txt").read_text() == "user data"  # nothing lost
    else:
        assert not out.exists()
    assert not list(tmp_path.glob(".out.staging-*"))


def test_python_api_errors_are_typed(tmp_path):
    with pytest.raises(ModelError):
        compile_model(tmp_path / "missing.onnx", out_dir=tmp_path / "o")


def test_onnx_with_external_data_loads(tmp_path):
    from slicer_compile.frontend import load_onnx

    model = onnx.load(str(EXAMPLES / "resnet_dag.onnx"))
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.weights", size_threshold=0)
    assert (tmp_path / "m.weights").stat().st_size > 1_000_000
    loaded = load_onnx(tmp_path / "m.onnx")
    assert all(not init.external_data for init in loaded.graph.initializer)  # weights now in memory
    assert sum(len(i.raw_data) for i in loaded.graph.initializer) > 1_000_000


@pytest.mark.parametrize("command", [["{model}", "-o", "{out}"], ["profile", "{model}", "-o", "{out}.json"]])
def test_backend_tensorrt_without_tensorrt_says_what_is_missing(tmp_path, command):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the missing-TensorRT message does not apply")
    args = [a.format(model=EXAMPLES / "digits_cnn.onnx", out=tmp_path / "out") for a in command]
    result = cli(*args, "--backend", "tensorrt")
    assert result.returncode != 0
    assert result.stderr.startswith("error: --backend tensorrt needs TensorRT") and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_bench_tensorrt_without_tensorrt_says_what_is_missing(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the missing-TensorRT message does not apply")
    result = cli("bench", "tensorrt", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("error: --backend tensorrt needs TensorRT") and len(result.stderr.splitlines()) == 1


def test_plots_of_many_splits_label_the_pareto_ones_and_a_spread(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from slicer_compile.report import ALL_LABELS_UP_TO, _labelled_splits

    layers = 60
    inits = [numpy_helper.from_array(np.full((4, 4, 1, 1), 0.1, np.float32), f"w{i}") for i in range(layers)]
    nodes, prev = [], "x"
    for i in range(layers):
        nodes += [helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"]), helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev = f"r{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10),
              str(tmp_path / "chain.onnx"))
    artifact = compile_model(tmp_path / "chain.onnx", device="jetson", out_dir=tmp_path / "a")
    assert len(artifact.splits) > ALL_LABELS_UP_TO
    labelled = _labelled_splits(artifact)
    assert len(labelled) <= ALL_LABELS_UP_TO
    ids = {artifact.splits[i].id for i in labelled}
    assert set(artifact.pareto) <= ids and {artifact.splits[0].id, artifact.splits[-1].id} <= ids
    assert (artifact.path / "plots" / "latency.png").stat().st_size > 10_000


def test_a_refused_output_directory_costs_nothing(tmp_path, monkeypatch):
    """A non-empty folder that is not an artifact is refused before the model is read."""
    import slicer_compile.compiler as compiler
    from slicer_compile.errors import ArtifactError

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    monkeypatch.setattr(compiler, "_front_end", lambda *a: pytest.fail("the model was read before the check"))
    for overwrite in (False, True):
        with pytest.raises(ArtifactError):
            compiler.compile_model(EXAMPLES / "digits_cnn.onnx", out_dir=out, overwrite=overwrite)
    assert (out / "notes.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
