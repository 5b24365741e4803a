"""The CUDA codec (``libslicer_cuda.so``) from Python: device buffers through
cuda-python, one workspace allocated per size, CUDA-event timings.

This is what the GPU tests hold to the numpy reference and what ``bench tensorrt``
and ``tools/bench_cuda_codec.py`` time. The TensorRT plugins call the same
launchers from C++.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slicer_compile.codec.config import SlicerConfig
from slicer_compile.codec.native import _ERR_CAPACITY, _ERR_PAYLOAD, _OK, _Knobs, _Limits
from slicer_compile.errors import BackendUnavailableError, PayloadError, SlicerCompileError
from slicer_compile.native.cuda import DeviceBuffer, check_cuda, cuda_runtime  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class KernelTiming:
    """Median device time of one encode and one decode of ``elements`` values."""

    elements: int
    encode_s: float
    decode_s: float
    payload_bytes: int

    @property
    def counted_bytes(self) -> int:
        """The memory traffic a bandwidth figure counts: 4N bytes read + 4N written."""
        return 8 * self.elements


class GpuCoder:
    """SLICER encode/decode on the GPU through ``libslicer_cuda.so``.

    Buffers are sized for the largest tensor seen so far and reused; ``close()``
    (or a ``with`` block) frees them.
    """

    def __init__(self, library: str | Path):
        self.rt = cuda_runtime()
        self._lib = ctypes.CDLL(str(library))
        vp, sz, u64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint64
        lib = self._lib
        lib.slicer_cuda_encode_workspace_bytes.restype = sz
        lib.slicer_cuda_encode_workspace_bytes.argtypes = [sz]
        lib.slicer_cuda_encode.restype = ctypes.c_int
        lib.slicer_cuda_encode.argtypes = [vp, vp, ctypes.c_int, ctypes.c_int, vp, vp, sz, vp, vp, vp, sz,
                                           ctypes.POINTER(sz), vp]
        lib.slicer_cuda_encode_device_workspace_bytes.restype = sz
        lib.slicer_cuda_encode_device_workspace_bytes.argtypes = [sz]
        lib.slicer_cuda_encode_device.restype = ctypes.c_int
        lib.slicer_cuda_encode_device.argtypes = [vp, vp, ctypes.c_int, ctypes.c_int, vp, vp, sz, vp, sz,
                                                  ctypes.POINTER(sz), vp]
        lib.slicer_cuda_decode_device_workspace_bytes.restype = sz
        lib.slicer_cuda_decode_device_workspace_bytes.argtypes = [u64, u64]
        lib.slicer_cuda_decode_device.restype = ctypes.c_int
        lib.slicer_cuda_decode_device.argtypes = [vp, sz, vp, vp, sz, vp, u64, vp, ctypes.POINTER(ctypes.c_int),
                                                  ctypes.POINTER(ctypes.c_int), ctypes.POINTER(u64), vp]
        lib.slicer_cuda_decode_workspace_bytes.restype = sz
        lib.slicer_cuda_decode_workspace_bytes.argtypes = [u64]
        lib.slicer_cuda_decode.restype = ctypes.c_int
        lib.slicer_cuda_decode.argtypes = [vp, sz, vp, vp, vp, u64, vp, sz, vp, u64, vp,
                                           ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int),
                                           ctypes.POINTER(u64), vp]
        self._capacity = 0
        self._buffers: dict[str, DeviceBuffer] = {}
        self._host: dict[str, np.ndarray] = {}
        self.stream = int(check_cuda(self.rt.cudaStreamCreate(), "cudaStreamCreate"))

    # --- buffers ---------------------------------------------------------------------

    def _reserve(self, elements: int) -> None:
        if elements <= self._capacity:
            return
        for buffer in self._buffers.values():
            buffer.free()
        n = int(elements)
        self._buffers = {
            "x": DeviceBuffer(self.rt, 4 * n),
            "out": DeviceBuffer(self.rt, 4 * n),
            "encode_ws": DeviceBuffer(self.rt, self._lib.slicer_cuda_encode_workspace_bytes(n)),
            "device_encode_ws": DeviceBuffer(self.rt, self._lib.slicer_cuda_encode_device_workspace_bytes(n)),
            "payload": DeviceBuffer(self.rt, self._payload_capacity(n)),
            "device_decode_ws": DeviceBuffer(self.rt, self._lib.slicer_cuda_decode_device_workspace_bytes(
                n, self._payload_capacity(n))),
            "decode_ws": DeviceBuffer(self.rt, self._lib.slicer_cuda_decode_workspace_bytes(n)),
        }
        # Host halves: kept indices/values (as many as elements) and the payload bound.
        self._host = {"kept": np.zeros(n, np.int64), "values": np.zeros(n, np.float32),
                      "payload": np.zeros(self._payload_capacity(n), np.uint8)}
        self._capacity = n

    @staticmethod
    def _payload_capacity(elements: int) -> int:
        # Above any SLICER payload of this many elements (predict_bits is at most ~34 bits each).
        return 16 * elements + (1 << 16)

    def close(self) -> None:
        for buffer in self._buffers.values():
            buffer.free()
        self._buffers, self._capacity = {}, 0
        if self.stream:
            self.rt.cudaStreamDestroy(self.stream)
            self.stream = 0

    def __enter__(self) -> "GpuCoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- codec -----------------------------------------------------------------------

    def _encode_device_stages(self, shape: tuple[int, ...], cfg: SlicerConfig) -> int:
        """Every stage on the GPU; the payload stays in device memory. Returns its size."""
        dims = np.array(shape, dtype=np.uint32)
        knobs = _Knobs(*cfg.knob_values())
        written = ctypes.c_size_t()
        ws, payload = self._buffers["device_encode_ws"], self._buffers["payload"]
        status = self._lib.slicer_cuda_encode_device(self._buffers["x"].ptr, dims.ctypes.data, len(shape), 1,
                                                     ctypes.byref(knobs), ws.ptr, ws.nbytes, payload.ptr,
                                                     payload.nbytes, ctypes.byref(written), self.stream)
        if status != _OK:
            raise SlicerCompileError(f"slicer_cuda_encode_device failed with status {status}")
        return written.value

    def _encode_host_stages(self, shape: tuple[int, ...], cfg: SlicerConfig) -> bytes:
        dims = np.array(shape, dtype=np.uint32)
        knobs = _Knobs(*cfg.knob_values())
        written = ctypes.c_size_t()
        payload = self._host["payload"]
        ws = self._buffers["encode_ws"]
        status = self._lib.slicer_cuda_encode(self._buffers["x"].ptr, dims.ctypes.data, len(shape), 1,
                                              ctypes.byref(knobs), ws.ptr, ws.nbytes, self._host["kept"].ctypes.data,
                                              self._host["values"].ctypes.data, payload.ctypes.data, payload.size,
                                              ctypes.byref(written), self.stream)
        if status != _OK:
            raise SlicerCompileError(f"slicer_cuda_encode failed with status {status}")
        return payload[: written.value].tobytes()

    def encode(self, x: np.ndarray, cfg: SlicerConfig, stages: str = "device") -> bytes:
        """Upload x (float32), encode on the GPU; the payload bytes (numpy's, byte for byte).

        Args:
            stages: "device": every stage on the GPU (slicer_cuda_encode_device);
                "host": ATKF on the GPU, the O(k) coding on the host (slicer_cuda_encode).
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._reserve(x.size)
        self._buffers["x"].upload(x)
        if stages == "host":
            return self._encode_host_stages(x.shape, cfg)
        size = self._encode_device_stages(x.shape, cfg)
        check_cuda(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return self._buffers["payload"].download(np.uint8, size).tobytes()

    def _decode_host_stages(self, payload: bytes, max_elements: int) -> tuple[tuple[int, ...], int]:
        data = np.frombuffer(payload, dtype=np.uint8) if payload else np.zeros(1, np.uint8)
        limits = _Limits(max_elements, 1 << 31)
        shape = np.zeros(8, dtype=np.uint32)
        ndim, dtype_code, elements = ctypes.c_int(), ctypes.c_int(), ctypes.c_uint64()
        ws = self._buffers["decode_ws"]
        status = self._lib.slicer_cuda_decode(data.ctypes.data, len(payload), ctypes.byref(limits),
                                              self._host["kept"].ctypes.data, self._host["values"].ctypes.data,
                                              self._capacity, ws.ptr, ws.nbytes, self._buffers["out"].ptr,
                                              self._capacity, shape.ctypes.data, ctypes.byref(ndim),
                                              ctypes.byref(dtype_code), ctypes.byref(elements), self.stream)
        return self._decoded(status, "slicer_cuda_decode", shape, ndim, elements)

    def _decoded(self, status: int, what: str, shape, ndim, elements) -> tuple[tuple[int, ...], int]:
        """A decoder's status as (shape, element count), or the error it stands for."""
        if status == _ERR_PAYLOAD:
            raise PayloadError("malformed SLICER payload (the CUDA decoder refused it)")
        if status == _ERR_CAPACITY:
            raise PayloadError(f"payload describes {elements.value} elements, more than the {self._capacity} "
                               "this decoder holds")
        if status != _OK:
            raise SlicerCompileError(f"{what} failed with status {status}")
        return tuple(int(d) for d in shape[: ndim.value]), int(elements.value)

    def _decode_device_stages(self, size: int, max_elements: int) -> tuple[tuple[int, ...], int]:
        """Every stage on the GPU, from the payload already in the device buffer."""
        limits = _Limits(max_elements, size)
        shape = np.zeros(8, dtype=np.uint32)
        ndim, dtype_code, elements = ctypes.c_int(), ctypes.c_int(), ctypes.c_uint64()
        ws = self._buffers["device_decode_ws"]
        status = self._lib.slicer_cuda_decode_device(self._buffers["payload"].ptr, size, ctypes.byref(limits), ws.ptr,
                                                     ws.nbytes, self._buffers["out"].ptr, self._capacity,
                                                     shape.ctypes.data, ctypes.byref(ndim), ctypes.byref(dtype_code),
                                                     ctypes.byref(elements), self.stream)
        return self._decoded(status, "slicer_cuda_decode_device", shape, ndim, elements)

    def decode(self, payload: bytes, max_elements: int, stages: str = "device") -> np.ndarray:
        """Decode on the GPU into a device tensor and download it (float32).

        Args:
            stages: "device": the payload goes to the GPU and every stage runs there
                (slicer_cuda_decode_device); "host": parsed on the host, scattered on
                the GPU (slicer_cuda_decode).
        """
        self._reserve(max_elements)
        if stages == "host":
            shape, elements = self._decode_host_stages(payload, max_elements)
        else:
            if len(payload) > self._buffers["payload"].nbytes:
                raise PayloadError(f"payload of {len(payload)} bytes is larger than any of {max_elements} elements")
            self._buffers["payload"].upload(np.frombuffer(payload, dtype=np.uint8))
            shape, elements = self._decode_device_stages(len(payload), max_elements)
        check_cuda(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return self._buffers["out"].download(np.float32, elements).reshape(shape)

    def time_round_trip(self, x: np.ndarray, cfg: SlicerConfig, repeat: int = 20,
                        stages: str = "device") -> KernelTiming:
        """Median time of encode (device tensor → payload) and decode (payload →
        device tensor), after one warm-up of each; with stages="device" the payload
        stays in device memory, with "host" it is on the host. CUDA events
        bracket each call, so the host half and the copies count: this is the time a
        caller waits, not the kernels' alone."""
        payload = self.encode(x, cfg, stages)
        self.decode(payload, x.size, stages)
        if stages == "host":
            encode_call = lambda: self._encode_host_stages(x.shape, cfg)  # noqa: E731
            decode_call = lambda: self._decode_host_stages(payload, x.size)  # noqa: E731
        else:  # the payload stays in device memory between the two
            encode_call = lambda: self._encode_device_stages(x.shape, cfg)  # noqa: E731
            decode_call = lambda: self._decode_device_stages(len(payload), x.size)  # noqa: E731
        start = check_cuda(self.rt.cudaEventCreate(), "cudaEventCreate")
        stop = check_cuda(self.rt.cudaEventCreate(), "cudaEventCreate")
        try:
            encode_s, decode_s = [], []
            for _ in range(repeat):
                for sink, call in ((encode_s, encode_call),
                                   (decode_s, decode_call)):
                    self.rt.cudaEventRecord(start, self.stream)
                    call()
                    self.rt.cudaEventRecord(stop, self.stream)
                    check_cuda(self.rt.cudaEventSynchronize(stop), "cudaEventSynchronize")
                    sink.append(check_cuda(self.rt.cudaEventElapsedTime(start, stop), "cudaEventElapsedTime") / 1e3)
        finally:
            self.rt.cudaEventDestroy(start)
            self.rt.cudaEventDestroy(stop)
        return KernelTiming(int(x.size), float(np.median(encode_s)), float(np.median(decode_s)), len(payload))
