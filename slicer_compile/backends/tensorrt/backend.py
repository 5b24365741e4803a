"""TensorRT as a :class:`Backend`: engines with the codec plugins inside, and the
build policy of an artifact (precision, one timing cache, INT8 calibration of the
edge engines, the batched server core)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from slicer_compile.backends.base import Backend, Runner, RunSettings
from slicer_compile.errors import BackendUnavailableError, ConfigError

#: The timing cache shared by every engine of an artifact (beside manifest.json).
TIMING_CACHE = "timing.cache"


class TensorrtBackend(Backend):
    name = "tensorrt"
    codec_in_engine = True
    #: server.plan decodes inside the engine, whose output shape (batch included) is fixed
    server_batch_bound = 1
    precisions = ("fp32", "fp16", "int8")

    def missing(self) -> str | None:
        from slicer_compile.backends.tensorrt.availability import require_tensorrt

        try:
            require_tensorrt()
        except BackendUnavailableError as exc:
            return str(exc)
        return None

    def open(self, model, name: str, settings: RunSettings = RunSettings()) -> Runner:
        from slicer_compile.backends.tensorrt.runner import TensorrtRunner

        return TensorrtRunner(model, name=name)

    def part_file_key(self, part: str) -> str:
        return f"{part}_plan"

    def check_build(self, precision: str, has_calibration: bool, artifact_dir: Path | None = None):
        """Engine options; fails at once without TensorRT, a GPU or the plugin library."""
        from slicer_compile.backends.tensorrt.availability import plugin_library
        from slicer_compile.backends.tensorrt.builder import EngineOptions

        if precision not in self.precisions:
            raise ConfigError(f"precision must be one of {self.precisions}, got {precision!r}")
        if precision == "int8" and not has_calibration:
            raise ConfigError("--precision int8 needs --calib (calibration inputs for the INT8 edge engines)")
        self.require()
        plugin_library()
        return EngineOptions(precision=precision,
                             timing_cache=None if artifact_dir is None else Path(artifact_dir) / TIMING_CACHE)

    def build_split(self, split_dir: Path, server_core, options, calibration=None) -> dict[str, Path]:
        """edge.plan, server.plan and server_core.plan beside a materialised pair."""
        from slicer_compile.backends.tensorrt.builder import build_pair

        if options.timing_cache is None:  # one cache per artifact, beside its splits/
            options = dataclasses.replace(options, timing_cache=Path(split_dir).parent.parent / TIMING_CACHE)
        return build_pair(split_dir, server_core, options, calibration=calibration)

    def manifest_section(self, options) -> dict | None:
        import tensorrt

        return {"tensorrt_version": tensorrt.__version__, "precision": options.precision, "timing_cache": TIMING_CACHE,
                "server_core_max_batch": options.server_core_max_batch}
