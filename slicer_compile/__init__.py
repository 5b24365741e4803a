"""slicer-compile: split a DNN between an edge device and a shared GPU server.

The package imports on a bare CPU box: onnx, ONNX Runtime, TensorRT, CUDA,
torch and onnxruntime-extensions are imported lazily, where they are used.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "compile_model", "load_artifact"]


def compile_model(*args, **kwargs):
    """Compile a model into an artifact directory; see :func:`slicer_compile.compiler.compile_model`."""
    from slicer_compile.compiler import compile_model as _compile

    return _compile(*args, **kwargs)


def load_artifact(path):
    """Load an artifact directory; see :func:`slicer_compile.artifact.load_artifact`."""
    from slicer_compile.artifact import load_artifact as _load

    return _load(path)
