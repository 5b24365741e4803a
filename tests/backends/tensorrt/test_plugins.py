"""The TensorRT plugins compile against TensorRT's headers, export exactly the
entry points loadLibrary looks up, and their host-side logic (creation from the
parser's fields, serialization, types, the shape attribute) holds: no GPU and no
TensorRT runtime needed, only its C++ headers (TENSORRT_ROOT)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from slicer_compile.backends.tensorrt.availability import plugin_source_dir, tensorrt_root

pytestmark = [
    pytest.mark.skipif(tensorrt_root() is None,
                       reason="needs TensorRT's C++ headers (NvInferRuntime.h): set TENSORRT_ROOT"),
    pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("cmake") is None,
                       reason="building the plugins needs nvcc and cmake"),
]


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    build = tmp_path_factory.mktemp("plugins")
    for command in (["cmake", "-S", str(plugin_source_dir()), "-B", str(build), f"-DTENSORRT_ROOT={tensorrt_root()}",
                     "-DCMAKE_CUDA_ARCHITECTURES=87", "-DSLICER_PLUGIN_TESTS=ON"],
                    ["cmake", "--build", str(build), "-j", "2"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return build


def test_plugin_library_exports_only_the_loader_entry_points(build_dir):
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(build_dir / "libslicer_trt_plugins.so")],
                             capture_output=True, text=True, check=True).stdout.split("\n")
    exported = {line.split()[-1] for line in symbols if line.strip() and line.split()[1] == "T"}
    assert exported == {"getCreators", "setLoggerFinder"}


def test_plugin_host_logic(build_dir):
    result = subprocess.run([str(build_dir / "plugin_host_test")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK (0 failures)" in result.stdout
