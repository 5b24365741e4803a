"""The one list of backends. Each is imported when first asked for, so that every
module imports on a bare CPU box and no module imports a backend it does not use."""

from __future__ import annotations

import functools
import importlib

from slicer_compile.backends.base import Backend, Runner, RunSettings
from slicer_compile.errors import ConfigError

#: name -> "module:class" of its Backend
_BACKENDS = {
    "onnxruntime": "slicer_compile.backends.onnxrt.backend:OnnxrtBackend",
    "tensorrt": "slicer_compile.backends.tensorrt.backend:TensorrtBackend",
}
#: the names, for CLI choices and option checks
BACKENDS = tuple(_BACKENDS)
DEFAULT_BACKEND = "onnxruntime"


@functools.cache
def get_backend(name: str) -> Backend:
    """The backend called ``name``.

    Raises:
        ConfigError: no backend of that name.
    """
    target = _BACKENDS.get(name)
    if target is None:
        raise ConfigError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)()


def open_runner(model, backend: str = DEFAULT_BACKEND, name: str | None = None,
                settings: RunSettings = RunSettings()) -> Runner:
    """A runner for ``model`` on the named backend (see :meth:`Backend.open`)."""
    return get_backend(backend).open(model, name or backend, settings)


def onnxruntime_session_options(optimize: bool = True, threads: int = 0):
    """The onnxrt backend's ONNX Runtime session options (its one place that sets them:
    threads, no spinning), for code that holds an ``InferenceSession`` of its own (the
    Triton Python-backend model, runtime/triton_models/onnx_server.py)."""
    # By name, as the backends themselves are loaded: the registry imports no backend.
    return importlib.import_module("slicer_compile.backends.onnxrt.runner").session_options(optimize, threads)
