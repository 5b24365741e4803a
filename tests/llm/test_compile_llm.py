"""`slicer-compile llm`: a transformers model directory in, an artifact of per-layer
parts and a per-token cut table out; bad input is one line and writes nothing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the LLM front end needs torch (pip install -e .[torch])")
transformers = pytest.importorskip("transformers", reason="the LLM front end needs transformers (the torch extra)")

from slicer_compile.cli.main import main  # noqa: E402
from slicer_compile.errors import ArtifactError  # noqa: E402
from slicer_compile.llm.artifact import load_llm_artifact  # noqa: E402
from slicer_compile.llm.stack import generate_greedy, split_stacks  # noqa: E402
from tests.llm.test_llama_parts import reference_greedy, tiny_llama  # noqa: E402


def run_cli(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    out = capsys.readouterr()
    return exited.value.code, out.out, out.err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_llama")
    model = tiny_llama()
    model.save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="module")
def compiled(model_dir, tmp_path_factory):
    folder, _ = model_dir
    out = tmp_path_factory.mktemp("lm") / "out"
    with pytest.raises(SystemExit) as exited:
        main(["llm", str(folder), "--device", "jetson", "--max-tokens", "128", "-o", str(out)])
    assert exited.value.code == 0
    return load_llm_artifact(out)


def test_the_cut_table_describes_every_layer_boundary(compiled):
    spec, cuts = compiled.spec, compiled.cuts
    assert [c["cut"] for c in cuts] == list(range(spec.num_layers + 1))
    kv = 2 * spec.num_kv_heads * spec.head_dim * 4
    for c in cuts:
        assert c["edge_kv_bytes_per_token"] == c["cut"] * kv
        assert c["server_kv_bytes_per_token"] == (spec.num_layers - c["cut"]) * kv
        assert c["hidden_bytes_per_token"] == spec.hidden_size * 4
        assert c["edge_memory_bytes_at_max_tokens"] == c["edge_weight_bytes"] + c["cut"] * kv * 128
    edge = [c["edge_ms_per_token"] for c in cuts]
    server = [c["server_ms_per_token"] for c in cuts]
    assert edge == sorted(edge) and server == sorted(server, reverse=True) and edge[-1] > edge[0]
    assert compiled.manifest["device"]["name"] == "orin-nano"
    report = (compiled.path / "report.md").read_text()
    assert "edge ms/token" in report and report.count("\n| ") == spec.num_layers + 2


def test_the_artifact_parts_generate_the_models_tokens_split(compiled, model_dir):
    _, model = model_dir
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    expected = reference_greedy(model, prompt, 24)
    edge, server = split_stacks(compiled.spec, compiled.parts(), compiled.spec.num_layers // 2)
    assert generate_greedy(edge, server, prompt, 24) == expected


def test_a_changed_part_is_refused(compiled, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(compiled.path, copy)
    part = copy / "parts" / "layer_001.onnx"
    data = bytearray(part.read_bytes())
    data[-1] ^= 1
    part.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its digest"):
        load_llm_artifact(copy).parts()


def test_inspect_reads_an_llm_artifact(compiled, capsys):
    code, out, _ = run_cli(["inspect", str(compiled.path), "--json", "--no-plots"], capsys)
    assert code == 0 and json.loads(out)["cuts"] == compiled.cuts
    code, out, _ = run_cli(["inspect", str(compiled.path), "--no-plots"], capsys)
    assert code == 0 and "ms/token" in out


def test_split_artifact_commands_say_what_an_llm_artifact_is(compiled, capsys):
    code, _, err = run_cli(["materialize", str(compiled.path), "--split", "s0001"], capsys)
    assert code == 1 and err.count("\n") == 1 and "is an LLM artifact" in err


def test_the_selector_answers_autoregressive_queries_on_an_llm_artifact(compiled, capsys):
    from slicer_compile.llm.selection import ar_table

    table = ar_table(compiled)
    assert len(table.step_s) == compiled.spec.num_layers
    assert list(table.kv_bytes_per_token) == [c["edge_kv_bytes_per_token"] for c in compiled.cuts[1:]]
    assert table.full_step_s > table.step_s[-1]  # the edge alone also runs the head
    query = ["select", str(compiled.path), "--bandwidth", "10MHz", "--snr-db", "10", "--memory", "1GB", "--json"]
    code, out, _ = run_cli(query + ["--deadline", "5s", "--max-tokens", "64"], capsys)
    relaxed = json.loads(out)
    assert code == 0 and relaxed["feasible"] and relaxed["tokens"] == 64 and relaxed["kv_cache"]
    # A tight deadline: early exit (fewer tokens, the KV cache dropped first), still an answer.
    code, out, _ = run_cli(query + ["--deadline", "2ms", "--max-tokens", "64"], capsys)
    tight = json.loads(out)
    assert code == 0 and tight["early_exit"] and tight["tokens"] < 64 and tight["latency_s"] <= 2e-3
    # No memory for even one layer's weights: infeasible is an answer, exit status 3.
    code, out, _ = run_cli(["select", str(compiled.path), "--bandwidth", "10MHz", "--snr-db", "10",
                            "--deadline", "5s", "--memory", "1KB"], capsys)
    assert code == 3 and "infeasible" in out


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "no such model"),
    (lambda d: d.mkdir() or d, "neither an ONNX file nor a transformers model directory"),
    (lambda d: ((d.parent / "m.onnx").write_bytes(b"x"), d.parent / "m.onnx")[1], "not a readable ONNX model"),
    (lambda d: transformers.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32).save_pretrained(d) or d,
     "model type 'bert' is not a supported decoder-only LLM"),
])
def test_bad_models_are_one_line_and_write_nothing(tmp_path, capsys, make, message):
    target = make(tmp_path / "model") or tmp_path / "model"
    code, _, err = run_cli(["llm", str(target), "-o", str(tmp_path / "out")], capsys)
    assert code == 1 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def teacher_forced_argmax(edge, server, tokens) -> np.ndarray:
    """Next-token argmax at every position of ``tokens``, through the split, one prefill."""
    edge.reset()
    server.reset()
    return server.logits(server.forward(edge.forward(edge.embed(np.asarray(tokens)))))[0].argmax(-1)


@pytest.mark.parametrize("weights, smaller_than, agreement", [("int8", 0.30, 0.8), ("int4", 0.20, 0.3)])
def test_opsc_quantises_the_edge_layers_only(model_dir, compiled, tmp_path, weights, smaller_than, agreement):
    import onnx

    from slicer_compile.llm.compile import compile_llm

    folder, _ = model_dir
    quantised = compile_llm(folder, device="jetson", out_dir=tmp_path / weights, max_tokens=128, weights=weights)
    spec = quantised.spec
    edge_parts, server_parts = quantised.parts("edge"), quantised.parts("server")
    assert all("MatMulNBits" in {n.op_type for n in onnx.load_from_string(b).graph.node} for b in edge_parts.layers)
    assert not any("MatMulNBits" in {n.op_type for n in onnx.load_from_string(b).graph.node}
                   for b in server_parts.layers)
    for full, small in zip(compiled.cuts[1:], quantised.cuts[1:]):  # the layers' weights, quantised
        layer_weights = full["edge_weight_bytes"] - compiled.cuts[0]["edge_weight_bytes"]
        assert small["edge_weight_bytes"] - quantised.cuts[0]["edge_weight_bytes"] < smaller_than * layer_weights
        assert small["edge_memory_bytes_at_max_tokens"] < full["edge_memory_bytes_at_max_tokens"]
    assert "OPSC" in (quantised.path / "report.md").read_text()
    tokens = np.random.default_rng(0).integers(0, spec.vocab_size, 64)
    exact = teacher_forced_argmax(*split_stacks(spec, server_parts, spec.num_layers), tokens)
    edge, server = split_stacks(spec, server_parts, spec.num_layers, edge_parts=edge_parts)
    assert (teacher_forced_argmax(edge, server, tokens) == exact).mean() >= agreement


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """The trained LM compiled with its held-out text: every cut under every codec setting."""
    from slicer_compile.llm.compile import compile_llm
    from tests.llm.test_llama_parts import TRAINED_LM

    out = tmp_path_factory.mktemp("lm_calib") / "out"
    return compile_llm(TRAINED_LM, device="jetson", out_dir=out, calib_text=TRAINED_LM / "heldout.txt",
                       calib_positions=256)


def test_calibration_measures_every_cut_and_codec_on_real_text(calibrated):
    from slicer_compile.llm.calibrate import SETTINGS

    section = calibrated.manifest["calibration"]
    assert section["status"] == "measured" and section["positions"] == 256
    assert 1 < section["perplexity"] < 10  # a trained byte-level LM, not a random one (256)
    assert set(section["cuts"]) == {str(c) for c in range(1, calibrated.spec.num_layers)}
    for rows in section["cuts"].values():
        assert set(rows) == set(SETTINGS)
        assert rows["float32"]["token_agreement"] == 1.0 and rows["float32"]["perplexity"] == section["perplexity"]
        assert rows["float32"]["bits_per_token"] == 32 * calibrated.spec.hidden_size
        # fewer bits cost fidelity: SLICER's sparsities in order
        assert rows["slicer-0.5"]["token_agreement"] >= rows["slicer-0.9"]["token_agreement"]
        assert rows["slicer-0.9"]["bits_per_token"] < rows["slicer-0.5"]["bits_per_token"]
    report = (calibrated.path / "report.md").read_text()
    assert "token agreement" in report and (calibrated.path / "plots" / "bits_vs_agreement.png").stat().st_size > 1000


def test_the_accuracy_budget_chooses_the_bits_of_an_ar_query(calibrated):
    from slicer_compile.llm.calibrate import cheapest_within
    from slicer_compile.llm.selection import ar_table

    section = calibrated.manifest["calibration"]
    strict, anything = ar_table(calibrated, accuracy_budget=0.0), ar_table(calibrated, accuracy_budget=1.0)
    for i, cut in enumerate(range(1, calibrated.spec.num_layers)):
        rows = section["cuts"][str(cut)]
        name, bits = cheapest_within(section, cut, 0.0)
        assert rows[name]["token_agreement"] == 1.0 and strict.hidden_bits[i] == math.ceil(bits)
        assert all(r["bits_per_token"] >= bits for r in rows.values() if r["token_agreement"] == 1.0)
        # no budget at all: the fewest bits measured, whatever they cost
        assert anything.hidden_bits[i] == math.ceil(min(r["bits_per_token"] for r in rows.values()))
    assert (anything.hidden_bits[:-1] < strict.hidden_bits[:-1]).all()
    # the last layer was not measured (cuts 1..L-1): the codec's bound there
    assert strict.hidden_bits[-1] == anything.hidden_bits[-1]


def test_auto_weights_put_the_most_layers_within_memory_and_accuracy(tmp_path, capsys):
    """Sung et al. Eq. 8 on the trained LM: the deepest cut that fits the edge memory,
    among the precisions that keep the token agreement within the budget."""
    from slicer_compile.llm.compile import compile_llm
    from tests.llm.test_llama_parts import TRAINED_LM

    text = TRAINED_LM / "heldout.txt"
    roomy = compile_llm(TRAINED_LM, device="jetson", out_dir=tmp_path / "roomy", weights="auto", memory_bytes=1e9)
    assert roomy.manifest["opsc"]["chosen"] == {"weights": "fp32", "cut": roomy.spec.num_layers}  # ties: precision
    fp32_layers = roomy.cuts[-1]["edge_memory_bytes_at_max_tokens"]
    # Room for every layer at int8 (0.28x), not at fp32: int8 goes deeper.
    tight = compile_llm(TRAINED_LM, device="jetson", out_dir=tmp_path / "tight", weights="auto",
                        memory_bytes=0.45 * fp32_layers, calib_text=text, calib_positions=256, accuracy_budget=0.01)
    plan = tight.manifest["opsc"]
    assert plan["chosen"]["weights"] in ("int8", "int4") and plan["chosen"]["cut"] == tight.spec.num_layers
    assert tight.edge_weights == plan["chosen"]["weights"]
    assert tight.cuts[-1]["edge_memory_bytes_at_max_tokens"] <= 0.45 * fp32_layers
    rows = {r["weights"]: r for r in plan["candidates"]}
    assert rows["fp32"]["deepest_cut"] < tight.spec.num_layers and rows["int8"]["token_agreement"] >= 0.99
    assert "Eq. 8" in (tight.path / "report.md").read_text()
    # A strict budget that int4 misses (95% agreement) and memory only int4 fits: refused, one line.
    code, _, err = run_cli(["llm", str(TRAINED_LM), "--device", "jetson", "--weights", "auto", "--memory",
                            f"{int(0.2 * fp32_layers)}B", "--calib-text", str(text), "--calib-positions", "256",
                            "--accuracy-budget", "0", "-o", str(tmp_path / "none")], capsys)
    # (one line: the blank one before it is the finished progress bar's, off a terminal)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "fits no edge configuration" in err, err
    assert not (tmp_path / "none").exists()
    code, _, err = run_cli(["llm", str(TRAINED_LM), "--weights", "auto", "--memory", "1KB", "-o",
                            str(tmp_path / "tiny")], capsys)
    assert code == 1 and "one layer on the edge needs" in err
    code, _, err = run_cli(["llm", str(TRAINED_LM), "--weights", "auto", "-o", str(tmp_path / "x")], capsys)
    assert code == 1 and "needs the edge's memory budget" in err


def test_a_crafted_llm_manifest_is_one_line(compiled, tmp_path, capsys):
    """Every field of the manifest (top level, architecture, a cut row) set to each wrong
    value: inspect and select answer (or refuse) in one line, never a traceback."""
    import shutil

    from tests.cli.test_crafted_artifacts import WRONG_VALUES, mutations_at

    manifest = json.loads((compiled.path / "manifest.json").read_text())
    places = [((), k) for k in manifest] + [(("architecture",), k) for k in manifest["architecture"]]
    places += [(("cuts", 1), k) for k in manifest["cuts"][1]]
    refused = 0
    for label, mutated in mutations_at(manifest, places):
        folder = tmp_path / "a"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(compiled.path, folder)
        (folder / "manifest.json").write_text(json.dumps(mutated))
        for args in (["inspect", str(folder), "--no-plots"],
                     ["select", str(folder), "--bandwidth", "10MHz", "--snr-db", "10", "--deadline", "1s",
                      "--memory", "1GB"]):
            code, _, err = run_cli(args, capsys)
            assert "Traceback" not in err, (label, err)
            if code not in (0, 3):
                refused += 1
                assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), (label, err)
    assert refused > len(places) * len(WRONG_VALUES)  # most are refused, by both commands


def test_a_handover_with_the_kv_cache_continues_the_unsplit_model(calibrated):
    """The edge's KV cache shipped raw, the server carrying on with the whole model: the
    unsplit model's tokens exactly; int8 keeps them at a quarter of the bits."""
    from slicer_compile.llm.selection import ar_table

    handover = calibrated.manifest["calibration"]["handover"]
    kv = 2 * calibrated.spec.num_kv_heads * calibrated.spec.head_dim * 4
    for cut, rows in handover.items():
        assert rows["float32"]["token_agreement"] == 1.0
        assert rows["float32"]["kv_bits_per_token"] == 8 * kv * int(cut)
        assert rows["int8"]["token_agreement"] >= 0.99
        assert rows["int8"]["kv_bits_per_token"] < 0.27 * rows["float32"]["kv_bits_per_token"]
    table = ar_table(calibrated, accuracy_budget=0.01)
    for i, cut in enumerate(range(1, calibrated.spec.num_layers)):
        assert table.kv_bits_per_token[i] <= handover[str(cut)]["int8"]["kv_bits_per_token"] + 1
    assert "Hand-over with the KV cache" in (calibrated.path / "report.md").read_text()


def test_an_output_directory_that_is_not_ours_is_refused_first_and_kept(model_dir, tmp_path, capsys, monkeypatch):
    import slicer_compile.llm.compile as llm_compile

    folder, _ = model_dir
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    monkeypatch.setattr(llm_compile, "load_llm", lambda model: pytest.fail("the model was loaded before the check"))
    for args in ([], ["--force"]):
        code, _, err = run_cli(["llm", str(folder), "-o", str(out), *args], capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1 and "error:" in err
    assert (out / "notes.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
