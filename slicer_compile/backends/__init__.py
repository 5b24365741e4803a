"""Backends: a runner contract (``base``) and its ONNX Runtime and TensorRT
implementations, which import only ``base``."""
