"""The contracts every backend implements (ONNX Runtime on CPU, TensorRT on GPU).

* :class:`Runner` runs one model part: public ``activate / infer / deactivate`` wrap
  ``*_impl`` hooks; a runner is a context manager, and nothing expensive happens
  before ``activate()``.
* :class:`Backend` is everything else the package asks of a backend: what it needs
  and what is missing, whether the codec runs inside its engines, its server batch
  bound, building a split's engines and opening a part as a runner.

This module imports no backend; ``backends.registry`` is the one list of them.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Mapping

import numpy as np


class Runner(ABC):
    """Runs one model part. Subclasses implement the ``*_impl`` hooks."""

    def __init__(self, name: str):
        self.name = name
        self.is_active = False
        self._last_inference_s: float | None = None

    def activate(self) -> "Runner":
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; returns outputs by name. Times the call (``last_inference_time``)."""
        if not self.is_active:
            raise RuntimeError(f"runner {self.name} is not active: call activate() or use it as a context manager")
        start = time.perf_counter()
        outputs = self.infer_impl(feeds)
        self._last_inference_s = time.perf_counter() - start
        return outputs

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def last_inference_time(self) -> float | None:
        """Seconds the last ``infer`` took, or None before the first."""
        return self._last_inference_s

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.deactivate()

    @property
    @abstractmethod
    def input_names(self) -> list[str]: ...

    @property
    @abstractmethod
    def output_names(self) -> list[str]: ...

    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def deactivate_impl(self) -> None: ...


@dataclass(frozen=True)
class RunSettings:
    """How a runner should run, in terms every backend understands (each uses what applies).

    Args:
        threads: intra-op threads (0: the backend's choice).
        optimize: graph optimisations (off where a run must match the per-node profile).
    """

    threads: int = 0
    optimize: bool = True


class Backend(ABC):
    """One engine backend, as the rest of the package sees it. Nothing above
    ``backends/`` compares backend names: it asks the backend object (from
    ``backends.registry.get_backend``)."""

    #: the name users give (``--backend``)
    name: ClassVar[str]
    #: the codec runs inside this backend's engines (encoder in the edge engine, decoder in the
    #: server engine); otherwise the runtime codes in Python and runs the parts without codec nodes
    codec_in_engine: ClassVar[bool] = False
    #: requests one server-part run takes at most (None: the runtime batches freely)
    server_batch_bound: ClassVar[int | None] = None
    #: build options the compiler accepts (``precision`` values)
    precisions: ClassVar[tuple[str, ...]] = ()

    def missing(self) -> str | None:
        """What this machine lacks for the backend, in one sentence; None where usable."""
        return None

    def require(self) -> None:
        """BackendUnavailableError saying what is missing, before any work."""
        from slicer_compile.errors import BackendUnavailableError

        reason = self.missing()
        if reason:
            raise BackendUnavailableError(reason)

    @abstractmethod
    def open(self, model, name: str, settings: RunSettings = RunSettings()) -> Runner:
        """A runner (not yet active) for ``model``: an ``onnx.ModelProto`` or bytes for
        ONNX Runtime, an engine file or its bytes for an engine backend."""

    def part_file_key(self, part: str) -> str:
        """The key of a split's ``files`` that this backend runs for ``part`` ("edge" or "server")."""
        return part

    def check_build(self, precision: str, has_calibration: bool, artifact_dir: Path | None = None) -> object | None:
        """Validate build settings and what the machine has, before any work; returns the
        build options for :meth:`build_split` (None: nothing to build beyond the ONNX parts)."""
        return None

    def build_split(self, split_dir: Path, server_core, options, calibration=None) -> dict[str, Path]:
        """Build this backend's files for one materialised split (beside its edge.onnx and
        server.onnx; ``server_core`` is the server part without decoder nodes); returns
        {files key: path}."""
        return {}

    def manifest_section(self, options) -> dict | None:
        """What the manifest records of the build (None: nothing)."""
        return None
