"""Build TensorRT engines (``.plan``) from an artifact's ONNX parts.

The codec nodes become the SlicerEncode/SlicerDecode plugins (``plugins/``), found
by the ONNX parser's plugin fallback once the plugin library is loaded; their I/O
is rewritten to the engine contract first (``contract.py``). A timing cache makes
the second build of a model fast; the cache file is shared by every part.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from slicer_compile.backends.tensorrt.availability import plugin_library, require_tensorrt
from slicer_compile.backends.tensorrt.contract import encoder_payload_bytes, to_engine_contract
from slicer_compile.codec.ops import DOMAIN
from slicer_compile.errors import BackendUnavailableError, ConfigError, ModelError

PRECISIONS = ("fp32", "fp16", "int8")
_loaded_plugin_libraries: set[str] = set()


@dataclass(frozen=True)
class EngineOptions:
    """How to build: precision, the builder's workspace pool, the timing cache file,
    and the (min, opt, max) of every dynamic dimension (a batch dimension, usually)."""

    precision: str = "fp16"
    workspace_bytes: int = 1 << 30
    timing_cache: Path | None = None
    dynamic_dim: tuple[int, int, int] = (1, 1, 1)
    #: the largest batch server_core.plan takes (Triton's max_batch_size may not exceed it)
    server_core_max_batch: int = 16

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        lo, opt, hi = self.dynamic_dim
        if not 1 <= lo <= opt <= hi:
            raise ConfigError(f"dynamic_dim must be 1 <= min <= opt <= max, got {self.dynamic_dim}")


def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def load_plugins(trt, library: Path | None = None) -> Path:
    """Register the codec plugins with TensorRT's registry (once per process)."""
    library = Path(library) if library else plugin_library()
    key = str(library.resolve())
    if key not in _loaded_plugin_libraries:
        handle = trt.get_plugin_registry().load_library(key)
        if handle is None:
            raise BackendUnavailableError(f"TensorRT could not load the plugin library {library}")
        _loaded_plugin_libraries.add(key)
    return library


def build_engine(model, plan_path: str | Path, options: EngineOptions = EngineOptions(),
                 plugins: Path | None = None, calibration=None) -> Path:
    """Build one engine from an ONNX part already in the engine contract.

    Args:
        model: ``onnx.ModelProto`` (see :func:`to_engine_contract` for codec parts).
        calibration: for ``int8``, an iterable of feed dicts (numpy) for TensorRT's
            entropy calibrator, where this TensorRT still has one.
    """
    trt = require_tensorrt()
    logger = _logger(trt)
    if any(node.domain == DOMAIN for node in model.graph.node):
        load_plugins(trt, plugins)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT's ONNX parser refused {Path(plan_path).name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    # Layer names and metadata in the engine: the per-layer profile maps them back to ONNX nodes.
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if options.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif options.precision == "int8":
        _configure_int8(trt, config, network, calibration)
    profile = _dynamic_profile(builder, network, options.dynamic_dim)
    if profile is not None:
        config.add_optimization_profile(profile)
    cache = None
    if options.timing_cache is not None:
        cached = Path(options.timing_cache).read_bytes() if Path(options.timing_cache).is_file() else b""
        cache = config.create_timing_cache(cached)
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"TensorRT could not build {Path(plan_path).name} (see the TensorRT log above)")
    _write_atomically(Path(plan_path), bytes(serialized))
    if cache is not None:
        _write_atomically(Path(options.timing_cache), bytes(cache.serialize()))
    return Path(plan_path)


def _dynamic_profile(builder, network, dynamic_dim: tuple[int, int, int]):
    """One optimisation profile giving every unknown input dimension ``dynamic_dim``."""
    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if all(d >= 0 for d in shape):
            continue
        profile = profile or builder.create_optimization_profile()
        lo, opt, hi = ([d if d >= 0 else v for d in shape] for v in dynamic_dim)
        profile.set_shape(tensor.name, lo, opt, hi)
    return profile


def _configure_int8(trt, config, network, calibration) -> None:
    # TensorRT 10 still has implicit INT8 with a calibrator (deprecated); TensorRT 11
    # removed it: INT8 there means a model with Q/DQ nodes (explicit quantisation).
    config.set_flag(trt.BuilderFlag.INT8)
    config.set_flag(trt.BuilderFlag.FP16)  # layers INT8 cannot run fall back to FP16, not FP32
    has_qdq = any(network.get_layer(i).type in (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
                  for i in range(network.num_layers))
    if has_qdq:
        return
    calibrator_base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if calibrator_base is None:
        raise BackendUnavailableError(
            f"--precision int8: TensorRT {trt.__version__} has no calibrator (implicit INT8 was removed); give a "
            "model with Q/DQ nodes (explicit quantisation), or use --precision fp16")
    if calibration is None:
        raise ConfigError("--precision int8 needs calibration inputs (--calib) for a model without Q/DQ nodes")
    from slicer_compile.backends.tensorrt.calibrator import make_entropy_calibrator

    config.int8_calibrator = make_entropy_calibrator(trt, calibration)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_pair(split_dir: str | Path, server_core, options: EngineOptions = EngineOptions(),
               plugins: Path | None = None, calibration=None) -> dict[str, Path]:
    """The engines of one split, beside its ONNX parts:

    * ``edge.plan``: the edge part with the encoder plugin (knobs an input);
    * ``server.plan``: the server part with the decoder plugin (one request per run:
      the decoder's output shape is fixed);
    * ``server_core.plan``: the server part without decoders, batched (1 to
      ``options.server_core_max_batch``), for servers that decode outside the engine (Triton's
      ensemble with its Python decoder).

    INT8 applies to the edge engine (where compute and memory are tight; its
    calibration feeds are the model's inputs plus the knobs); the server engines,
    whose inputs are payloads or decoded activations, are built FP16 then.

    Args:
        server_core: the server part without its decoder nodes (the caller's graph surgery).
    """
    import onnx

    split_dir = Path(split_dir)
    edge = onnx.load(str(split_dir / "edge.onnx"))
    server = onnx.load(str(split_dir / "server.onnx"))
    sizes = encoder_payload_bytes(edge)
    server_options = replace(options, precision="fp16") if options.precision == "int8" else options
    return {
        "edge_plan": build_engine(to_engine_contract(edge), split_dir / "edge.plan", options, plugins, calibration),
        "server_plan": build_engine(to_engine_contract(server, payload_bytes=sizes), split_dir / "server.plan",
                                    server_options, plugins),
        "server_core_plan": build_engine(server_core, split_dir / "server_core.plan",
                                         replace(server_options, dynamic_dim=(1, options.server_core_max_batch,
                                                                       options.server_core_max_batch))),
    }

