"""Compiling the CUDA library is a tested step: CI has nvcc (and no GPU)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest


@pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("cmake") is None,
                    reason="compiling the CUDA kernels needs nvcc and cmake")
def test_build_kernels_compiles_for_orin_and_hopper(tmp_path):
    result = subprocess.run([sys.executable, "-m", "slicer_compile.cli", "build-kernels", "--build-dir",
                             str(tmp_path / "build")], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    library = tmp_path / "build" / "libslicer_cuda.so"
    assert f"cuda: {library}" in result.stdout
    # The fat binary is built for Jetson Orin (87) and H100 (90) among the server architectures.
    flags = (tmp_path / "build" / "CMakeFiles" / "slicer_cuda.dir" / "flags.make").read_text()
    for arch in ("sm_87", "sm_90", "sm_80"):
        assert f"code=[compute_{arch[3:]},{arch}]" in flags
    assert "--fmad=false" in flags  # the codec's no-FMA float contract
    symbols = subprocess.run(["nm", "-D", str(library)], capture_output=True, text=True).stdout
    for name in ("slicer_cuda_select_kept", "slicer_cuda_quantize", "slicer_cuda_dequantize_scatter",
                 "slicer_encode_subset", "slicer_crc32", "slicer_cuda_encode", "slicer_cuda_decode",
                 "slicer_cuda_decode_workspace_bytes", "slicer_decode_sparse_host", "slicer_cuda_bench_select",
                 "slicer_cuda_encode_device", "slicer_encode_from_kept_parallel", "slicer_cuda_decode_device",
                 "slicer_decode_parallel_host"):
        assert name in symbols
