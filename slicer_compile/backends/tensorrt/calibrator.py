"""INT8 entropy calibration from numpy feeds (TensorRT 10; TensorRT 11 has none)."""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from slicer_compile.native.cuda import DeviceBuffer, cuda_runtime


def make_entropy_calibrator(trt, feeds: Iterable[Mapping[str, np.ndarray]]):
    """An ``IInt8EntropyCalibrator2`` that hands TensorRT one feed dict per batch."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self._rt = cuda_runtime()
            self._feeds = iter(feeds)
            self._buffers: dict[str, DeviceBuffer] = {}
            self._cache: bytes | None = None

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks: the feeds carry their own batch dimension

        def get_batch(self, names):
            feed = next(self._feeds, None)
            if feed is None:
                for buffer in self._buffers.values():
                    buffer.free()
                return None
            pointers = []
            for name in names:
                array = np.ascontiguousarray(feed[name])
                buffer = self._buffers.get(name)
                if buffer is None or buffer.nbytes < array.nbytes:
                    if buffer is not None:
                        buffer.free()
                    buffer = self._buffers[name] = DeviceBuffer(self._rt, array.nbytes)
                buffer.upload(array)
                pointers.append(buffer.ptr)
            return pointers

        def read_calibration_cache(self):
            return self._cache

        def write_calibration_cache(self, cache) -> None:
            self._cache = bytes(cache)

    return EntropyCalibrator()
