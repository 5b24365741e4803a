"""Per-node costs: static FLOPs/bytes, measured ONNX Runtime latency, and device models."""
