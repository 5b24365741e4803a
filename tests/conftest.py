"""Markers that need hardware or optional software skip with the reason when it is
missing (never pass by printing "skipped"); slow tests run on request."""

from __future__ import annotations

import functools
import os

import pytest


@functools.cache
def _cuda_device_reason() -> str | None:
    """None if a CUDA device is usable, else why not."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python
    except ImportError:
        return "cuda-python is not installed (pip install -e .[gpu])"
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        return f"no CUDA device (cudaGetDeviceCount: {err})"
    return None


@functools.cache
def _tensorrt_reason() -> str | None:
    """None if TensorRT (10+), cuda-python and a device are usable, else what is missing."""
    from slicer_compile.backends.tensorrt.availability import require_tensorrt
    from slicer_compile.errors import BackendUnavailableError

    try:
        require_tensorrt()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--runslow") or os.environ.get("SLICER_RUN_SLOW") == "1"
    for item in items:
        if item.get_closest_marker("slow") and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --runslow or SLICER_RUN_SLOW=1"))
        if item.get_closest_marker("gpu") and (reason := _cuda_device_reason()):
            item.add_marker(pytest.mark.skip(reason=reason))
        # markers, not keywords: a folder named tests/backends/tensorrt is not a marker
        if item.get_closest_marker("tensorrt") and (reason := _tensorrt_reason()):
            item.add_marker(pytest.mark.skip(reason=reason))
