"""Run a TensorRT engine with the ONNX Runtime runner's interface.

Feeds and outputs are numpy arrays named as in the ONNX part: a payload goes in as
the uint8 wire message and comes out as a uint8 buffer plus an int64 byte count,
exactly as with ``OnnxrtRunner``; the int32-word engine contract stays inside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from slicer_compile.backends.base import Runner
from slicer_compile.backends.tensorrt.contract import NBYTES_SUFFIX, PAYLOAD_SUFFIX, message_to_words, words_to_message
from slicer_compile.errors import BackendUnavailableError, ModelError, TensorError


class TensorrtRunner(Runner):
    """Runs one ``.plan`` (device buffers through cuda-python, one CUDA stream).

    Args:
        plan: the serialized engine, or its path.
        plugins: the codec plugin library (default: ``availability.plugin_library()``).
        profiler: a ``tensorrt.IProfiler`` to attach (per-layer times).
    """

    def __init__(self, plan: str | Path | bytes, name: str = "tensorrt", plugins: Path | None = None, profiler=None):
        super().__init__(name)
        self._plan = plan
        self._plugins = plugins
        self._profiler = profiler
        self._engine = self._context = None
        self._stream = 0
        self._buffers: dict = {}
        self._inputs: dict[str, np.dtype] = {}
        self._outputs: dict[str, np.dtype] = {}

    def activate_impl(self) -> None:
        from slicer_compile.backends.tensorrt.availability import require_tensorrt
        from slicer_compile.backends.tensorrt.builder import load_plugins
        from slicer_compile.native.cuda import cuda_runtime

        trt = require_tensorrt()
        # Engines with codec nodes need the plugins registered before they load; an
        # engine without them (server_core.plan, a profiling engine) does not.
        plugins_missing = None
        try:
            load_plugins(trt, self._plugins)
        except BackendUnavailableError as exc:
            plugins_missing = exc
        self._rt = cuda_runtime()
        data = self._plan if isinstance(self._plan, bytes) else Path(self._plan).read_bytes()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            if plugins_missing is not None:
                raise BackendUnavailableError(f"{self.name}: the engine could not load, and the codec plugins "
                                              f"it may need are missing: {plugins_missing}")
            raise ModelError(f"{self.name}: TensorRT could not load the engine (built by another TensorRT "
                             "version or for another GPU?)")
        self._context = self._engine.create_execution_context()
        if self._profiler is not None:
            self._context.profiler = self._profiler
        err, stream = self._rt.cudaStreamCreate()
        self._stream = int(stream)
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outputs)[name] = dtype

    def _buffer(self, name: str, nbytes: int):
        from slicer_compile.native.cuda import DeviceBuffer

        buffer = self._buffers.get(name)
        if buffer is None or buffer.nbytes < nbytes:
            if buffer is not None:
                buffer.free()
            buffer = self._buffers[name] = DeviceBuffer(self._rt, nbytes)
        return buffer

    def _to_engine(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """ONNX-contract feeds → engine feeds (payload bytes → int32 words + nbytes)."""
        engine_feeds = {}
        for name, dtype in self._inputs.items():
            if name.endswith(NBYTES_SUFFIX) and name not in feeds:
                continue  # filled in from its payload below
            if name not in feeds:
                raise TensorError(f"{self.name}: missing input {name!r}")
            value = np.asarray(feeds[name])
            if name.endswith(PAYLOAD_SUFFIX) and dtype == np.int32 and value.dtype == np.uint8:
                words = int(self._engine.get_tensor_shape(name)[0])
                engine_feeds[name], nbytes = message_to_words(value, words)
                nbytes_name = name[: -len(PAYLOAD_SUFFIX)] + NBYTES_SUFFIX
                if nbytes_name in self._inputs:
                    engine_feeds[nbytes_name] = nbytes
                continue
            engine_feeds[name] = np.ascontiguousarray(value, dtype=dtype)
        return engine_feeds

    def _from_engine(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = dict(outputs)
        for name in outputs:
            nbytes_name = name[: -len(PAYLOAD_SUFFIX)] + NBYTES_SUFFIX
            if name.endswith(PAYLOAD_SUFFIX) and nbytes_name in outputs:
                result[name], result[nbytes_name] = words_to_message(outputs[name], outputs[nbytes_name])
        return result

    def _bind(self, feeds: Mapping[str, np.ndarray]) -> None:
        for name, array in self._to_engine(feeds).items():
            if not self._context.set_input_shape(name, array.shape):
                raise TensorError(f"{self.name}: input {name!r} of shape {array.shape} is outside the engine's "
                                  "optimisation profile")
            buffer = self._buffer(name, array.nbytes).upload(array)
            self._context.set_tensor_address(name, buffer.ptr)
        for name, dtype in self._outputs.items():
            shape = tuple(self._context.get_tensor_shape(name))
            buffer = self._buffer(name, int(np.prod(shape)) * dtype.itemsize)
            self._context.set_tensor_address(name, buffer.ptr)

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._stream):
            raise ModelError(f"{self.name}: TensorRT execution failed (see the TensorRT log)")
        err, = self._rt.cudaStreamSynchronize(self._stream)
        if int(err) != 0:
            raise ModelError(f"{self.name}: CUDA error after execution: {err}")

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._bind(feeds)
        self._execute()
        outputs = {}
        for name, dtype in self._outputs.items():
            shape = tuple(self._context.get_tensor_shape(name))
            outputs[name] = self._buffers[name].download(dtype, int(np.prod(shape))).reshape(shape)
        return self._from_engine(outputs)

    def time_execution(self, feeds: Mapping[str, np.ndarray], repeat: int = 50, warmup: int = 5) -> list[float]:
        """Seconds per engine execution (CUDA events around each enqueue), inputs
        already on the device: the engine's latency without the host copies."""
        self._bind(feeds)
        rt = self._rt
        start, stop = rt.cudaEventCreate()[1], rt.cudaEventCreate()[1]
        try:
            for _ in range(warmup):
                self._execute()
            times = []
            for _ in range(repeat):
                rt.cudaEventRecord(start, self._stream)
                self._execute()
                rt.cudaEventRecord(stop, self._stream)
                rt.cudaEventSynchronize(stop)
                times.append(rt.cudaEventElapsedTime(start, stop)[1] / 1e3)
            return times
        finally:
            rt.cudaEventDestroy(start)
            rt.cudaEventDestroy(stop)

    def deactivate_impl(self) -> None:
        for buffer in self._buffers.values():
            buffer.free()
        self._buffers = {}
        if self._stream:
            self._rt.cudaStreamDestroy(self._stream)
            self._stream = 0
        self._context = self._engine = None

    @property
    def input_names(self) -> list[str]:
        # As the ONNX part names them: an engine-only nbytes input is derived, not fed.
        return [n for n in self._inputs
                if not (n.endswith(NBYTES_SUFFIX) and n[: -len(NBYTES_SUFFIX)] + PAYLOAD_SUFFIX in self._inputs)]

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)
