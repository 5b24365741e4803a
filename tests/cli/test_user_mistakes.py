"""The mistakes a new user makes in one afternoon, each made here: the exit status,
the one-line message, and that nothing outside the output was touched."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slicer_compile.compiler import compile_model
from slicer_compile.runtime.server import ServerConfig, SplitServer
from tests.models import EXAMPLES

DIGITS = EXAMPLES / "digits_cnn.onnx"
CALIB = EXAMPLES / "digits_calib.npz"


def run(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slicer_compile.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300, env=env)


def one_line_error(result: subprocess.CompletedProcess, fragment: str, code: int | None = None) -> str:
    assert result.returncode != 0, result.stdout
    if code is not None:
        assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return compile_model(DIGITS, device="jetson", out_dir=tmp_path_factory.mktemp("a") / "out", calib=CALIB,
                         calib_samples=32, max_pairs=3)


@pytest.fixture
def workdir(tmp_path):
    """A user's folder: the model, the calibration file and notes of their own."""
    shutil.copy(DIGITS, tmp_path / "model.onnx")
    shutil.copy(CALIB, tmp_path / "calib.npz")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("years of work")
    return tmp_path


# --- data loss -------------------------------------------------------------------------


@pytest.mark.parametrize("out, fragment", [
    ("precious", "is not a slicer-compile artifact"),
    (".", "refusing to write the artifact to ."),
    ("..", "refusing to write the artifact to .."),
])
def test_force_never_replaces_what_the_tool_did_not_write(workdir, out, fragment):
    before = snapshot(workdir)
    result = run("model.onnx", "--device", "jetson", "-o", out, "--force", cwd=workdir)
    one_line_error(result, fragment, code=1)
    assert snapshot(workdir) == before
    assert not [p for p in workdir.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_force_refuses_the_folder_holding_the_inputs(workdir):
    models = workdir / "m"
    models.mkdir()
    shutil.move(workdir / "model.onnx", models / "model.onnx")
    shutil.move(workdir / "calib.npz", models / "calib.npz")
    before = snapshot(workdir)
    result = run("m/model.onnx", "--device", "jetson", "--calib", "m/calib.npz", "-o", "m", "--force", cwd=workdir)
    one_line_error(result, "folder holding an input")
    assert snapshot(workdir) == before


def test_force_replaces_an_artifact_with_the_umask_mode(workdir):
    first = run("model.onnx", "--device", "jetson", "-o", "out", "--max-pairs", "2", cwd=workdir)
    assert first.returncode == 0, first.stderr
    old_id = json.loads((workdir / "out" / "manifest.json").read_text())["artifact_id"]
    again = run("model.onnx", "--device", "jetson", "-o", "out", "--max-pairs", "3", "--force", cwd=workdir)
    assert again.returncode == 0, again.stderr
    manifest = json.loads((workdir / "out" / "manifest.json").read_text())
    assert manifest["artifact_id"] != old_id and len(manifest["pareto"]) == 3
    umask = os.umask(0)
    os.umask(umask)
    assert (workdir / "out").stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    assert (workdir / "precious" / "thesis.txt").read_text() == "years of work"
    assert not [p for p in workdir.iterdir() if p.name.startswith(".out.")]


def test_triton_force_replaces_only_its_own_repository(artifact, workdir):
    pytest.importorskip("tritonclient.grpc")
    refused = run("triton", artifact.path, "-o", workdir / "precious", "--force")
    one_line_error(refused, "is not a slicer-compile Triton repository")
    assert (workdir / "precious" / "thesis.txt").read_text() == "years of work"
    into_artifact = run("triton", artifact.path, "-o", artifact.path, "--force")
    one_line_error(into_artifact, "refusing to write the Triton repository")
    assert (artifact.path / "manifest.json").is_file()
    for _ in range(2):  # written, then replaced
        result = run("triton", artifact.path, "-o", workdir / "repo", "--force")
        assert result.returncode == 0, result.stderr


def test_a_swap_that_failed_halfway_leaves_the_old_directory(tmp_path, monkeypatch):
    from slicer_compile import storage

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text("old")
    new = tmp_path / "new"
    new.mkdir()
    real_replace = os.replace
    calls = []

    def failing_second_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old aside worked; moving the new one in fails
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", failing_second_replace)
    with pytest.raises(OSError):
        storage.swap_in(new, tmp_path / "out")
    assert (tmp_path / "out" / "manifest.json").read_text() == "old"


def test_leftovers_of_a_killed_run_are_cleaned_or_restored(tmp_path):
    from slicer_compile.storage import recover_interrupted

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    staging = tmp_path / f".out.staging-{dead}-abcd"
    staging.mkdir()
    aside = tmp_path / f".out.old-{dead}-abcd"
    aside.mkdir()
    (aside / "manifest.json").write_text("the only copy")
    mine = tmp_path / f".out.staging-{os.getpid()}-ef01"  # a live process's: left alone
    mine.mkdir()
    recover_interrupted(tmp_path / "out")
    assert not staging.exists() and mine.exists()
    assert (tmp_path / "out" / "manifest.json").read_text() == "the only copy"  # moved back


# --- tracebacks where a line is due ---------------------------------------------------


@pytest.mark.parametrize("args, fragment", [
    (["--input-shape", "y=1x1x8x8"], "not an input of the model (inputs: x)"),
    (["--input-shape", "x=0x1x8x8"], "has a dimension below 1"),
    (["--input-shape", "x=1x1x8"], "has 4 dimensions"),
    (["--runs", "0"], "Invalid value for '--runs'"),
    (["--calib-samples", "-5"], "Invalid value for '--calib-samples'"),
    (["--max-pairs", "-1"], "Invalid value for '--max-pairs'"),
    (["--max-pairs", "0"], "Invalid value for '--max-pairs'"),
    (["--calib", "x.npy"], "is a .npy file; --calib takes an .npz"),
    (["--calib", "zero_d.npz"], "is 0-d"),
    (["--calib", "empty.npz"], "has 0 samples"),
    (["--calib", "named.npz"], "has no array for input(s) x"),
    (["--calib", "rank.npz"], "has shape 10x8x8; input x is float32 ?x1x8x8"),
    (["--calib", "strings.npz"], "is <U1; input x is float32"),
])
def test_compile_options_refused_in_one_line(workdir, args, fragment):
    np.save(workdir / "x.npy", np.zeros((4, 1, 8, 8), np.float32))
    np.savez(workdir / "zero_d.npz", x=np.float32(1.0))
    np.savez(workdir / "empty.npz", x=np.zeros((0, 1, 8, 8), np.float32))
    np.savez(workdir / "named.npz", images=np.zeros((4, 1, 8, 8), np.float32))
    np.savez(workdir / "rank.npz", x=np.zeros((10, 8, 8), np.float32))
    np.savez(workdir / "strings.npz", x=np.array([list("abcdefgh")] * 8).reshape(1, 1, 8, 8))
    result = run("model.onnx", "--device", "jetson", "-o", "out", *args, cwd=workdir)
    one_line_error(result, fragment)
    assert not (workdir / "out").exists()


def test_float64_calibration_is_cast_with_a_note(workdir):
    x = np.load(CALIB)["x"][:16].astype(np.float64)  # what np.random.rand and friends make
    np.savez(workdir / "f64.npz", x=x)
    result = run("model.onnx", "--device", "jetson", "-o", "out", "--calib", "f64.npz", "--max-pairs", "2",
                 cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "note: calibration input x: float64 cast to float32" in result.stderr
    assert json.loads((workdir / "out" / "manifest.json").read_text())["calibration"]["samples"] == 16


@pytest.mark.parametrize("args, fragment", [
    (["--port", "70000"], "Invalid value for '--port'"),
    (["--port", "-1"], "Invalid value for '--port'"),
    (["--max-request-bytes", "1B"], "Invalid value for '--max-request-bytes'"),
    (["--max-request-bytes", "4096"], "needs a unit"),
    (["--max-batch", "0"], "Invalid value for '--max-batch'"),
])
def test_serve_options_refused_in_one_line(artifact, args, fragment):
    one_line_error(run("serve", artifact.path, *args), fragment, code=2)


def test_serve_names_a_missing_server_part(artifact, tmp_path):
    broken = tmp_path / "out"
    shutil.copytree(artifact.path, broken)
    split = next(s for s in artifact.splits if s.files)
    (broken / split.files["server"]).unlink()
    one_line_error(run("serve", broken, "--port", "0"), f"split {split.id}'s server part is missing")


def test_run_checks_the_input_before_any_work(artifact, tmp_path):
    np.save(tmp_path / "nobatch.npy", np.zeros((1, 8, 8), np.float32))
    np.save(tmp_path / "wrong.npy", np.zeros((1, 1, 4, 4), np.float32))
    np.save(tmp_path / "ints.npy", np.zeros((1, 1, 8, 8), np.int64))
    # No server listens on port 9: the check must come first.
    one_line_error(run("run", artifact.path, "--server", "127.0.0.1:9", "--input", tmp_path / "nobatch.npy"),
                   "it lacks the batch axis")
    one_line_error(run("run", artifact.path, "--server", "127.0.0.1:9", "--input", tmp_path / "wrong.npy"),
                   "input 'x' must be float32 1x1x8x8, got float32 1x1x4x4")
    one_line_error(run("run", artifact.path, "--server", "127.0.0.1:9", "--input", tmp_path / "ints.npy"),
                   "got int64")
    one_line_error(run("run", artifact.path, "--server", "127.0.0.1:99999", "--input", tmp_path / "ints.npy"),
                   "must be an integer in 1..65535")


def test_run_casts_float64_and_picks_the_split_within_the_accuracy_budget(artifact, tmp_path):
    x = np.load(CALIB)["x"][:1].astype(np.float64)
    np.save(tmp_path / "x.npy", x)
    with SplitServer(artifact.path, port=0, config=ServerConfig()) as server:
        result = run("run", artifact.path, "--server", server.url, "--input", tmp_path / "x.npy")
    assert result.returncode == 0, result.stderr
    assert "note: input x: float64 cast to float32" in result.stderr
    decision = artifact_decision(artifact)
    assert f"split {decision.split_id}" in result.stdout
    assert "calibrated fidelity" in result.stderr or "no split stays within" in result.stderr


def artifact_decision(artifact):
    from slicer_compile.runtime.client import EdgeClient

    return EdgeClient(artifact, "127.0.0.1:9").default_choice(0.01)


def test_the_default_choice_stays_within_the_budget_at_the_fewest_bytes(artifact):
    """Deepest materialised split first; within it the highest sparsity whose fidelity,
    and that of every lower sparsity, stays within the budget (tier 2's rule)."""
    expected = None
    for split in sorted((s for s in artifact.splits if s.files), key=lambda s: -s.position):
        allowed = []
        for sparsity in sorted(split.fidelity, key=float):
            if split.fidelity[sparsity] < 0.99:
                break
            allowed.append(sparsity)
        if allowed:
            expected = (split.id, float(allowed[-1]), split.fidelity[allowed[-1]])
            break
    decision = artifact_decision(artifact)
    if expected is None:
        assert "no split stays within the accuracy budget" in decision.reason
    else:
        assert (decision.split_id, decision.config.sparsity, decision.fidelity) == pytest.approx(expected)


def test_server_address_defaults_to_the_serve_port():
    from slicer_compile.runtime.client import parse_server_address

    assert parse_server_address("example") == ("example", 8700)
    assert parse_server_address("http://10.0.0.1:8000/") == ("10.0.0.1", 8000)
    assert parse_server_address("[::1]:9000") == ("::1", 9000)


# --- messages that point at the cause ---------------------------------------------------


def test_select_names_the_constraint_that_excluded_the_most(artifact):
    """1 KB of edge memory: every split that runs layers on the edge is out by memory,
    and the answer says so (not the accuracy of the last split standing)."""
    query = ["select", artifact.path, "--bandwidth", "10MHz", "--snr-db", "10", "--deadline", "50ms", "--memory", "1KB"]
    result = run(*query, "--json")
    decision = json.loads(result.stdout)
    assert result.returncode == (0 if decision["feasible"] else 3), result.stderr
    assert decision["binding"] == "memory"
    memory_out = decision["excluded"]["memory"]
    assert memory_out >= len(artifact.splits) - 2
    assert f"memory excluded {memory_out}" in run(*query).stdout
    nothing = run("select", artifact.path, "--bandwidth", "10MHz", "--snr-db", "10", "--deadline", "1us",
                  "--memory", "1KB", "--json")
    assert nothing.returncode == 3  # infeasible: its own exit status, for scripts
    answer = json.loads(nothing.stdout)
    assert not answer["feasible"] and sum(answer["excluded"].values()) == len(artifact.splits)


def test_select_prints_the_transmission_count(artifact):
    result = run("select", artifact.path, "--bandwidth", "10MHz", "--snr-db", "10", "--deadline", "50ms",
                 "--memory", "2GB")
    assert result.returncode == 0, result.stderr
    assert "transmissions of" in result.stdout or "1 transmission of" in result.stdout


@pytest.mark.parametrize("args, fragment", [
    (["--deadline", "50"], "'50' needs a unit"),
    (["--memory", "2"], "'2' needs a unit"),
    (["--memory", "2B"], "the least that can be meant"),
    (["--bandwidth", "10Hz"], "the least that can be meant"),
    (["--deadline", "-5ms"], "must be positive"),
])
def test_quantities_need_a_unit_and_a_value_that_can_be_meant(artifact, args, fragment):
    base = {"--bandwidth": "10MHz", "--snr-db": "10", "--deadline": "50ms", "--memory": "2GB"}
    base.update(dict(zip(args[::2], args[1::2])))
    flag = args[0]
    line = one_line_error(run("select", artifact.path, *[v for kv in base.items() for v in kv]), fragment, code=2)
    assert f"'{flag}'" in line  # the message names the flag, not the field


# --- output a person can read ------------------------------------------------------------


def test_split_table_fits_80_columns_without_cutting_numbers(artifact, monkeypatch, capsys):
    from slicer_compile.cli import output
    from slicer_compile.cli.compile_commands import print_split_table
    from slicer_compile.report import split_table

    monkeypatch.setattr(output.sys.stdout, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(output.shutil, "get_terminal_size", lambda: os.terminal_size((80, 24)))
    print_split_table(artifact)
    printed = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # the terminal's colours
    assert max(len(line) for line in printed.splitlines()) <= 80
    assert "left out to fit 80 columns" in printed and "…" not in printed
    header, rows = split_table(artifact)
    for row in rows:
        assert row[0].split()[0] in printed  # every split id, whole
        assert row[6] in printed  # edge ms, every digit


def test_table_headers_say_what_the_numbers_are(artifact):
    from slicer_compile.report import split_table

    names = [name for name, _ in split_table(artifact)[0]]
    assert "edge ms (roofline)" in names and "server ms (roofline)" in names
    assert "fidelity (top1_agreement, s=0.9)" in names and "payload bound KiB (s=0.9)" in names
    assert "fidelity (top1_agreement, s=0.9)" in (artifact.path / "report.md").read_text()


def test_inspect_json(artifact):
    result = run("inspect", artifact.path, "--json", "--no-plots")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["artifact_id"] == artifact.id and len(data["splits"]) == len(artifact.splits)


def test_debug_shows_the_traceback_and_quiet_the_error_only(tmp_path):
    plain = run("inspect", tmp_path / "nothing")
    one_line_error(plain, "is not an artifact directory")
    debug = run("inspect", tmp_path / "nothing", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ArtifactError" in debug.stderr
    x = np.load(CALIB)["x"][:8].astype(np.float64)
    np.savez(tmp_path / "f64.npz", x=x)
    quiet = run(DIGITS, "--device", "jetson", "-o", tmp_path / "out", "--calib", tmp_path / "f64.npz",
                "--max-pairs", "1", "-q")
    assert quiet.returncode == 0 and "note:" not in quiet.stderr


def test_serve_log_level_info_writes_an_access_log(artifact, tmp_path):
    import signal
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "slicer_compile.cli", "serve", str(artifact.path), "--port", "0",
                             "--log-level", "info"], stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stderr.readline()  # "serving ... on http://127.0.0.1:PORT (...)"
        url = banner.split("on http://", 1)[1].split()[0]
        urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=30).read()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    assert "GET /v2/health/ready" in rest


# --- packaging --------------------------------------------------------------------------


def test_without_a_source_tree_builds_go_to_the_users_cache(tmp_path, monkeypatch):
    from slicer_compile.native import locations

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(locations.SOURCE_ENV, raising=False)
    monkeypatch.setattr(locations, "__file__", str(tmp_path / "site-packages" / "slicer_compile" / "native" / "locations.py"))
    assert locations.source_root() is None
    assert locations.build_root() == tmp_path / "cache" / "slicer-compile" / "build"
    checkout = Path(__file__).resolve().parents[2]
    assert locations.source_root(checkout) == checkout and locations.build_root(checkout) == checkout / "build"


def test_compile_takes_the_codec_knobs(workdir):
    result = run("model.onnx", "--device", "jetson", "-o", "out", "--sparsity", "0.8", "--blocks", "4,2",
                 "--q-bits", "6", "--max-pairs", "2", "--calib", "calib.npz", "--calib-samples", "16", cwd=workdir)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((workdir / "out" / "manifest.json").read_text())
    defaults = manifest["codec"]["defaults"]
    assert defaults["blocks"] == [4, 2] and defaults["q_bits"] == 6
    assert defaults["sparsity"] == pytest.approx(0.8) and defaults["delta"] == pytest.approx(0.01)
    assert any(abs(s - 0.8) < 1e-6 for s in manifest["codec"]["sparsity_grid"])
    assert all("0.8" in s["fidelity"] for s in manifest["splits"])
    bad = run("model.onnx", "--device", "jetson", "-o", "out2", "--sparsity", "1.5", cwd=workdir)
    one_line_error(bad, "sparsity must be in [0, 1)")
    assert not (workdir / "out2").exists()


def test_serve_with_triton_not_set_up_says_how(artifact, tmp_path):
    env = {**os.environ, "SLICER_TRITON_HOME": str(tmp_path / "nowhere")}
    one_line_error(run("serve", str(artifact.path), "--engine", "triton", env=env), "tools/setup_triton.py", 1)
