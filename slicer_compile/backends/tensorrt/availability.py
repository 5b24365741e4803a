"""What the TensorRT backend needs, and a clear message for each missing piece:
the ``tensorrt`` Python package (10 or newer: the plugins are IPluginV3), a CUDA
device, cuda-python for buffers, and the plugin library built from ``plugins/``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from slicer_compile.errors import BackendUnavailableError
from slicer_compile.native.locations import build_root, source_root

MIN_TENSORRT_MAJOR = 10
PLUGIN_LIBRARY_NAME = "libslicer_trt_plugins.so"
#: Where a prebuilt plugin library can be named explicitly.
PLUGIN_LIBRARY_ENV = "SLICER_TRT_PLUGINS"


def require_tensorrt():
    """The ``tensorrt`` module, or BackendUnavailableError saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailableError(
            "--backend tensorrt needs TensorRT, which is not installed here (JetPack ships it on a Jetson; on a "
            "GPU server install NVIDIA's TensorRT wheel or tar), and a CUDA GPU; --backend onnxruntime runs "
            "anywhere") from None
    major = int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)
    if major < MIN_TENSORRT_MAJOR:
        raise BackendUnavailableError(f"TensorRT {trt.__version__} is too old: the codec plugins are IPluginV3, "
                                      f"which needs TensorRT {MIN_TENSORRT_MAJOR} or newer")
    require_cuda_device()
    return trt


def require_cuda_device() -> None:
    """BackendUnavailableError unless cuda-python is installed and sees a device."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        raise BackendUnavailableError("the TensorRT backend needs cuda-python for device buffers: "
                                      "pip install '.[gpu]' in the slicer-compile source tree") from None
    err, count = runtime.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        raise BackendUnavailableError(f"the TensorRT backend needs a CUDA GPU; none is usable here "
                                      f"(cudaGetDeviceCount: {err})")


def tensorrt_root() -> Path | None:
    """A TensorRT installation holding NvInferRuntime.h: $TENSORRT_ROOT, JetPack's /usr, or the wheel's
    headers package if one is installed."""
    candidates = [os.environ.get("TENSORRT_ROOT"), "/usr", "/usr/local/tensorrt", "/opt/tensorrt"]
    for root in filter(None, candidates):
        for include in ("include", "include/x86_64-linux-gnu", "include/aarch64-linux-gnu"):
            if (Path(root) / include / "NvInferRuntime.h").is_file():
                return Path(root)
    return None


def plugin_source_dir(source: str | Path | None = None) -> Path | None:
    """``plugins/`` of the source tree, or None where no source tree is known."""
    root = source_root(source)
    return None if root is None else root / "plugins"


def default_plugin_build_dir(source: str | Path | None = None) -> Path:
    """Where ``build-kernels --plugins`` writes the plugin library (see ``slicer_compile.locations``)."""
    return build_root(source) / "plugins"


def plugin_library(build_dir: str | Path | None = None, build: bool = True) -> Path:
    """The codec plugin library: $SLICER_TRT_PLUGINS, else ``build_dir`` (default: where
    ``build-kernels --plugins`` writes), built there with CMake on first use (needs
    TensorRT headers, nvcc, cmake and the source tree)."""
    build_dir = build_dir if build_dir is not None else default_plugin_build_dir()
    explicit = os.environ.get(PLUGIN_LIBRARY_ENV)
    if explicit:
        if not Path(explicit).is_file():
            raise BackendUnavailableError(f"${PLUGIN_LIBRARY_ENV} names {explicit}, which does not exist")
        return Path(explicit)
    library = Path(build_dir) / PLUGIN_LIBRARY_NAME
    if library.is_file() or not build:
        if not library.is_file():
            raise BackendUnavailableError(f"no plugin library at {library}: run slicer-compile build-kernels "
                                          "--plugins, or set $SLICER_TRT_PLUGINS")
        return library
    return build_plugins(build_dir)


def build_plugins(build_dir: str | Path | None = None, jobs: int = 2, source: str | Path | None = None) -> Path:
    """Configure and build ``plugins/`` (and the ``cuda/`` library it links) with CMake."""
    sources = plugin_source_dir(source)
    if sources is None or not (sources / "CMakeLists.txt").is_file():
        raise BackendUnavailableError("building the plugins needs the slicer-compile source tree (plugins/): use an "
                                      "editable install, pass --source DIR or set $SLICER_SOURCE (or set "
                                      "$SLICER_TRT_PLUGINS to a prebuilt library)")
    build_dir = build_dir if build_dir is not None else default_plugin_build_dir(source)
    missing = [tool for tool in ("cmake", "nvcc") if shutil.which(tool) is None]
    if missing:
        raise BackendUnavailableError(f"building the TensorRT plugins needs {' and '.join(missing)}")
    root = tensorrt_root()
    if root is None:
        raise BackendUnavailableError("building the TensorRT plugins needs TensorRT's C++ headers "
                                      "(NvInferRuntime.h): set $TENSORRT_ROOT to the TensorRT installation")
    from slicer_compile.native.cmake import cmake_build

    build_dir = Path(build_dir)
    cmake_build(sources, build_dir, {"TENSORRT_ROOT": str(root)}, jobs, "plugin")
    return build_dir / PLUGIN_LIBRARY_NAME



def report() -> list[tuple[str, bool, str]]:
    """(component, usable, detail) for everything the GPU path needs, for
    ``slicer-compile backends``: each line says what is there or what is missing."""
    from slicer_compile.native.cuda import cuda_runtime

    rows = []
    try:
        import tensorrt

        version = str(tensorrt.__version__)
        new_enough = int(version.split(".")[0] or 0) >= MIN_TENSORRT_MAJOR
        rows.append(("TensorRT", new_enough, version if new_enough else
                     f"{version}: the codec plugins need TensorRT {MIN_TENSORRT_MAJOR} or newer"))
    except ImportError:
        rows.append(("TensorRT", False, "not installed (JetPack on a Jetson; NVIDIA's wheel or tar on a server)"))
    try:
        _, props = cuda_runtime().cudaGetDeviceProperties(0)
        rows.append(("CUDA device", True, props.name.decode(errors="replace").rstrip("\x00")))
    except BackendUnavailableError as exc:
        rows.append(("CUDA device", False, str(exc)))
    nvcc = shutil.which("nvcc")
    rows.append(("nvcc", nvcc is not None, nvcc or "not found: the CUDA kernels cannot be built here"))
    root = tensorrt_root()
    rows.append(("TensorRT headers", root is not None,
                 str(root) if root else "NvInferRuntime.h not found: set $TENSORRT_ROOT to build the plugins"))
    try:
        rows.append(("plugin library", True, str(plugin_library(build=False))))
    except BackendUnavailableError as exc:
        rows.append(("plugin library", False, str(exc)))
    return rows
