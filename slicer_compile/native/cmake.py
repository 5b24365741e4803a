"""One CMake runner for the kernels (``cuda/``) and the TensorRT plugins (``plugins/``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from slicer_compile.errors import SlicerCompileError


def cmake_build(source: Path, build_dir: Path, defines: dict[str, str], jobs: int, what: str) -> None:
    """Configure and build a CMake project; SlicerCompileError with the log's tail if either step fails."""
    configure = ["cmake", "-S", str(source), "-B", str(build_dir), *(f"-D{k}={v}" for k, v in defines.items())]
    for command in (configure, ["cmake", "--build", str(build_dir), "-j", str(jobs)]):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-12:]
            raise SlicerCompileError(f"{what} build failed:\n" + "\n".join(tail))
