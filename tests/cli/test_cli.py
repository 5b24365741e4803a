"""The CLI as a user meets it: help, version, the codec round trip, and one-line
errors with a non-zero exit for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

import numpy as np
import pytest


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slicer_compile.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_console_script_is_declared():
    names = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert names.get("slicer-compile") == "slicer_compile.cli:main"


def test_help_lists_commands_and_version_works():
    result = run("--help")
    assert result.returncode == 0
    for command in ("bench", "codec"):
        assert command in result.stdout
    version = run("--version")
    assert version.returncode == 0 and "slicer-compile" in version.stdout


def test_codec_round_trip(tmp_path):
    x = np.random.default_rng(0).standard_normal((8, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    enc = run("codec", "encode", str(tmp_path / "x.npy"), "-o", str(tmp_path / "x.slcr"), "--sparsity", "0.75",
              "--blocks", "2,2")
    assert enc.returncode == 0, enc.stderr
    info = run("codec", "info", str(tmp_path / "x.slcr"))
    assert info.returncode == 0 and "codec slicer" in info.stdout and "sparsity=0.75" in info.stdout
    dec = run("codec", "decode", str(tmp_path / "x.slcr"), "-o", str(tmp_path / "y.npy"))
    assert dec.returncode == 0, dec.stderr
    y = np.load(tmp_path / "y.npy")
    assert y.shape == x.shape and np.count_nonzero(y) == 64


def test_bench_codec_prints_json():
    result = run("bench", "codec", "--sizes", "4096", "--sparsities", "0.9", "--repeat", "1", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)  # --json: JSON on stdout instead of the table, on every command
    codecs = [r["codec"] for r in rows]
    assert codecs == ["slicer", "tabq", "dense", "float16", "int8", "zstd"]
    slicer, tabq, dense = rows[:3]
    assert slicer["sparsity"] == pytest.approx(0.9)
    assert slicer["position_bits"] > 0 and slicer["encode_melem_s"] > 0
    assert slicer["bits_per_element"] < rows[3]["bits_per_element"]  # beats float16
    # At TS+TAB-Q's rate, the dense codec's error is a fraction of it (dense Gaussian data).
    assert dense["bits_per_element"] < 1.05 * tabq["bits_per_element"] and dense["rmse"] < 0.5 * tabq["rmse"]
    table = run("bench", "codec", "--sizes", "4096", "--sparsities", "0.9", "--repeat", "1")
    assert "slicer" in table.stdout and "framing overhead" in table.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["codec", "encode", "missing.npy", "-o", "out.slcr"], "no such file: missing.npy"),
        (["codec", "encode", "x.npy", "-o", "out.slcr", "--codec", "gzip"], "unknown codec 'gzip'"),
        (["codec", "encode", "x.npy", "-o", "out.slcr", "--sparsity", "1.5"], "sparsity must be in [0, 1)"),
        (["codec", "encode", "x.npy", "-o", "out.slcr", "--sparsity", "-0.1"], "sparsity must be in [0, 1)"),
        (["codec", "encode", "x.npy", "-o", "out.slcr", "--codec", "float16", "--sparsity", "0.5"], "no knob(s) sparsity"),
        (["codec", "encode", "notnpy.npy", "-o", "out.slcr"], "notnpy.npy is not a .npy file"),
        (["codec", "encode", "x.npy", "-o", "nodir/out.slcr"], "output directory does not exist"),
        (["codec", "decode", "garbage.slcr", "-o", "y.npy"], "not a slicer payload"),
        (["codec", "info", "missing.slcr"], "no such file"),
        (["bench", "codec", "--sparsities", "1.2"], "Invalid value for '--sparsities': 1.2 must be below 1"),
        (["bench", "codec", "--sizes", "abc"], "comma-separated"),
        (["bench", "codec", "--sizes", "0"], "Invalid value for '--sizes'"),
        (["bench", "codec", "--repeat", "0"], "Invalid value for '--repeat'"),
        (["inpsect", "out/"], "no such command 'inpsect' (did you mean inspect?)"),
        (["nosuchcommand"], "no such model file: nosuchcommand"),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, args, fragment):
    np.save(tmp_path / "x.npy", np.ones(10, dtype=np.float32))
    (tmp_path / "notnpy.npy").write_text("hello")
    (tmp_path / "garbage.slcr").write_bytes(b"\x00" * 40)
    result = run(*args, cwd=tmp_path)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "out.slcr").exists() and not (tmp_path / "y.npy").exists()
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind


def test_backends_says_what_is_there_and_what_is_missing():
    import importlib.util

    result = run("backends")
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") >= 3}
    assert "yes" in rows["onnxruntime (CPU)"]
    assert set(rows) >= {"TensorRT", "CUDA device", "nvcc", "TensorRT headers", "plugin library"}
    if importlib.util.find_spec("tensorrt") is None:
        assert "no" in rows["TensorRT"] and "not installed" in rows["TensorRT"]
    if importlib.util.find_spec("cuda") is None:
        assert ".[gpu]" in rows["CUDA device"]  # the extra's name survives the table markup
