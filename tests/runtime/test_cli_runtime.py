"""serve / run / triton / bench serve from the command line."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from slicer_compile.compiler import compile_model
from tests.models import EXAMPLES


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "slicer_compile.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=600, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return compile_model(EXAMPLES / "digits_cnn.onnx", device="jetson", out_dir=tmp_path_factory.mktemp("c") / "out",
                         max_pairs=3)


def test_serve_run_and_sigterm(artifact, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "slicer_compile.cli", "serve", str(artifact.path), "--port",
                             str(port)], stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stderr.readline()  # printed once the models are loaded and the port is bound
        assert banner.startswith("serving "), banner
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=30).read()
        np.save(tmp_path / "x.npy", np.load(EXAMPLES / "digits_calib.npz")["x"][:1])
        result = cli("run", artifact.path, "--server", f"127.0.0.1:{port}", "--input", tmp_path / "x.npy",
                     "-o", tmp_path / "y.npy", "--snr-db", "10", "--deadline", "50ms")
        assert result.returncode == 0, result.stderr
        assert "round trip" in result.stdout and np.load(tmp_path / "y.npy").shape == (1, 10)
        bad = cli("run", artifact.path, "--server", f"127.0.0.1:{port}", "--input", tmp_path / "missing.npy")
        assert bad.returncode != 0 and bad.stderr.startswith("error: no such file")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    down = cli("run", artifact.path, "--server", f"127.0.0.1:{port}", "--input", tmp_path / "x.npy")
    assert down.returncode != 0 and "cannot reach the server" in down.stderr


def test_serve_on_a_busy_port_is_a_one_line_error(artifact):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        result = cli("serve", artifact.path, "--port", s.getsockname()[1])
    assert result.returncode != 0 and result.stderr.startswith("error: cannot listen")


def test_triton_and_bench_serve_commands(artifact, tmp_path):
    result = cli("triton", artifact.path, "-o", tmp_path / "repo")
    assert result.returncode == 0 and "validated" in result.stdout
    sid = [s.id for s in artifact.splits if s.files][-1]
    result = cli("bench", "serve", artifact.path, "--clients", "1,4", "--requests", "5", "--splits", sid,
                 "--json", "--plot", tmp_path / "load.png")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["clients"] for r in rows] == [1, 4] and all(r["answered"] == r["requests"] for r in rows)
    assert (tmp_path / "load.png").stat().st_size > 10_000
