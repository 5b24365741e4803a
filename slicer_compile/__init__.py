"""slicer-compile: split a DNN between an edge device and a shared GPU server.

The package imports on a bare CPU box: TensorRT, CUDA, torch and
onnxruntime-extensions are imported lazily, where they are used.
"""

__version__ = "0.1.0"
