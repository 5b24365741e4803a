"""TensorRT backend: engine pairs with the codec plugins, a runner with the ONNX
Runtime runner's interface, per-layer profiling. TensorRT and cuda-python are
imported lazily: every module here imports on a machine without them, and says
what is missing when it is used (``availability``).

    contract      the codec I/O as an engine carries it (int32 words; pure ONNX/numpy)
    availability  what is needed, and the plugin library's build
    builder       .plan files from ONNX parts (fp32/fp16/int8, timing cache)
    calibrator    INT8 entropy calibration from numpy feeds
    runner        TensorrtRunner
    backend       the Backend object: build policy, opening engine parts

Engine layer names are mapped back to ONNX nodes in ``profile.engine_layers``.
"""
