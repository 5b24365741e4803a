"""cuda-python's runtime and device buffers: what the CUDA codec and the TensorRT
backend both need. cuda-python is imported when first used."""

from __future__ import annotations

import numpy as np

from slicer_compile.errors import BackendUnavailableError, SlicerCompileError


def cuda_runtime():
    """cuda-python's runtime module and a usable device, or BackendUnavailableError saying what is missing."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        raise BackendUnavailableError("the CUDA path needs cuda-python: pip install '.[gpu]' in the slicer-compile source tree") from None
    err, count = runtime.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        raise BackendUnavailableError(f"no CUDA device is usable here (cudaGetDeviceCount: {err})")
    return runtime


def check_cuda(result, what: str):
    err = result[0] if isinstance(result, tuple) else result
    if int(err) != 0:
        raise SlicerCompileError(f"{what} failed: {err}")
    return result[1] if isinstance(result, tuple) and len(result) == 2 else result


class DeviceBuffer:
    """One device allocation; freed by ``free()`` or when its owner closes."""

    def __init__(self, runtime, nbytes: int):
        self._rt = runtime
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(check_cuda(runtime.cudaMalloc(self.nbytes), "cudaMalloc"))

    def upload(self, array: np.ndarray) -> "DeviceBuffer":
        array = np.ascontiguousarray(array)
        if array.nbytes > self.nbytes:
            raise SlicerCompileError(f"{array.nbytes} bytes do not fit a {self.nbytes}-byte device buffer")
        check_cuda(self._rt.cudaMemcpy(self.ptr, array.ctypes.data, array.nbytes,
                                        self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice), "cudaMemcpy H2D")
        return self

    def download(self, dtype, count: int) -> np.ndarray:
        out = np.empty(count, dtype=dtype)
        check_cuda(self._rt.cudaMemcpy(out.ctypes.data, self.ptr, out.nbytes,
                                        self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost), "cudaMemcpy D2H")
        return out

    def free(self) -> None:
        if self.ptr:
            self._rt.cudaFree(self.ptr)
            self.ptr = 0
