"""The C/CUDA codec library in ``cuda/``: build it, and call its host coders.

``build_kernels`` runs CMake (``slicer-compile build-kernels``): it always builds
``libslicer_host.so`` (the wire format's bit-level coders in C++) and, where
nvcc is found, ``libslicer_cuda.so`` with the kernels for Jetson Orin (sm_87),
H100 (sm_90) and the common server architectures. :class:`HostCoder` calls the
host coders through ctypes; the tests hold them byte for byte to the numpy
reference, which is the spec.
"""

from __future__ import annotations

import ctypes
import functools
import shutil
import threading
from pathlib import Path

import numpy as np

from slicer_compile.errors import BackendUnavailableError, ConfigError, PayloadError, SlicerCompileError
from slicer_compile.native.cmake import cmake_build
from slicer_compile.native.locations import build_root, source_root


_OK, _ERR_ARGUMENT, _ERR_CAPACITY, _ERR_PAYLOAD = 0, 1, 2, 3


class _Limits(ctypes.Structure):
    """slicer_limits of slicer_codec.h."""

    _fields_ = [("maxElements", ctypes.c_uint64), ("maxPayloadBytes", ctypes.c_uint64)]


class _Knobs(ctypes.Structure):
    """slicer_knobs of slicer_codec.h."""

    _fields_ = [("sparsity", ctypes.c_float), ("lam", ctypes.c_float), ("delta", ctypes.c_float),
                ("blocksPos", ctypes.c_int), ("blocksNeg", ctypes.c_int), ("qBits", ctypes.c_int),
                ("qMin", ctypes.c_int)]


def default_build_dir(source: str | Path | None = None) -> Path:
    """Where ``build-kernels`` writes the kernel libraries (see ``slicer_compile.locations``)."""
    return build_root(source) / "cuda"


def build_kernels(build_dir: str | Path | None = None, cuda: bool = True, jobs: int = 2,
                  source: str | Path | None = None) -> dict[str, Path]:
    """Configure and build the library; returns {"host": path, "cuda": path or absent}."""
    root = source_root(source)
    if root is None:
        raise BackendUnavailableError("build-kernels needs the slicer-compile source tree (cuda/): use an editable "
                                      "install (pip install -e .), or pass --source DIR / set $SLICER_SOURCE")
    if shutil.which("cmake") is None:
        raise BackendUnavailableError("build-kernels needs cmake (apt-get install cmake)")
    build_dir = Path(build_dir) if build_dir is not None else default_build_dir(root)
    cmake_build(root / "cuda", build_dir, {"SLICER_BUILD_CUDA": "ON" if cuda else "OFF"}, jobs, "kernel")
    libraries = {"host": build_dir / "libslicer_host.so"}
    if (build_dir / "libslicer_cuda.so").is_file():
        libraries["cuda"] = build_dir / "libslicer_cuda.so"
    return libraries


#: Which SLICER coder the runtime uses: "auto" (the C++ host coder where `build-kernels`
#: built it, else numpy), "numpy", or "native" (an error where it is not built). Both
#: make and read the same bytes (tests/cuda/test_host_coder.py).
CODER_CHOICES = ("auto", "numpy", "native")
#: "auto" takes the C++ coder up to these tensor sizes, where it beats numpy on this
#: machine (tools/bench_native.py --elements N, s = 0.9: encode 14x numpy at 4 Ki, 4.0x
#: at 16 Ki, 1.4x at 64 Ki, 0.86x at 256 Ki; decode 11x, 4.5x, 2.0x, 0.58x; slower
#: at 1 Mi until the large-tensor rework of the codec issue), and numpy beyond.
AUTO_NATIVE_ENCODE_ELEMENTS = 65536
AUTO_NATIVE_DECODE_ELEMENTS = 65536


def built_host_coder(build_dir: str | Path | None = None) -> "HostCoder | None":
    """The host coders where ``build-kernels`` has built them (its default place), else None."""
    library = Path(build_dir) / "libslicer_host.so" if build_dir else default_build_dir() / "libslicer_host.so"
    return HostCoder(library) if library.is_file() else None


class RuntimeCoder:
    """The SLICER coder a client or server uses per tensor, per ``choice``
    (:data:`CODER_CHOICES`): the C++ host coder where it is built and (under "auto")
    faster for the tensor's size, numpy otherwise. Both make and read the same bytes."""

    def __init__(self, choice: str = "auto", build_dir: str | Path | None = None):
        self.native = host_coder_for(choice, build_dir)
        self._always = choice == "native"

    def _native_for(self, elements: int, limit: int) -> "HostCoder | None":
        return self.native if self.native is not None and (self._always or elements <= limit) else None

    def encode(self, x: np.ndarray, cfg) -> bytes:
        from slicer_compile.codec import SlicerConfig, encode

        native = self._native_for(x.size, AUTO_NATIVE_ENCODE_ELEMENTS) if isinstance(cfg, SlicerConfig) else None
        return native.encode_slicer(x, cfg) if native is not None else encode(x, cfg)

    def decode(self, payload: bytes, limits, codec_id: int, elements: int) -> np.ndarray:
        """``payload`` (of ``codec_id``, checked to hold ``elements`` values) within ``limits``."""
        from slicer_compile.codec import SlicerConfig, decode

        native = self._native_for(elements, AUTO_NATIVE_DECODE_ELEMENTS) if codec_id == SlicerConfig.codec_id else None
        if native is not None:
            return native.decode_slicer(payload, max_elements=limits.max_elements, expected_elements=elements)
        return decode(payload, limits)


def host_coder_for(choice: str, build_dir: str | Path | None = None) -> "HostCoder | None":
    """The C++ host coder per ``choice`` (:data:`CODER_CHOICES`); None: use numpy."""
    if choice not in CODER_CHOICES:
        raise ConfigError(f"coder must be one of {CODER_CHOICES}, got {choice!r}")
    coder = built_host_coder(build_dir) if choice != "numpy" else None
    if choice == "native" and coder is None:
        raise ConfigError("the native coder is not built: run slicer-compile build-kernels --host-only")
    return coder


@functools.lru_cache(maxsize=256)
def _payload_bound(shape: tuple[int, ...], cfg) -> int:
    """Bytes every payload of ``shape`` at ``cfg`` fits in (predict_bits; cached: a
    per-token caller asks the same question for every token)."""
    from slicer_compile.codec import predict_bits

    return predict_bits(shape, cfg) // 8 + 1


@functools.lru_cache(maxsize=256)
def _knobs_of(cfg) -> "_Knobs":
    return _Knobs(*cfg.knob_values())


@functools.lru_cache(maxsize=256)
def _knobs_ref(cfg):
    """A pointer to ``cfg``'s knobs (the cached struct outlives it)."""
    return ctypes.byref(_knobs_of(cfg))


@functools.lru_cache(maxsize=256)
def _dims_of(shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """A uint32 copy of ``shape`` and its address (the array is kept by the cache)."""
    dims = np.array(shape, dtype=np.uint32)
    return dims, dims.ctypes.data


@functools.lru_cache(maxsize=64)
def _limits_ref(max_elements: int, max_payload_bytes: int):
    return ctypes.byref(_Limits(max_elements, max_payload_bytes))


class _CallScratch(threading.local):
    """Per thread, what every encode or decode call would otherwise make anew: the
    out-parameters, the decoded shape, a growing output buffer. A per-token caller
    makes the same call once per token, where a microsecond of ctypes set-up is a
    tenth of the work; a server decodes on many threads at once, hence per thread."""

    def __init__(self):
        self.shape = np.zeros(8, dtype=np.uint32)
        self.shape_ptr = self.shape.ctypes.data
        self.ndim, self.dtype_code, self.elements = ctypes.c_int(), ctypes.c_int(), ctypes.c_uint64()
        self.written = ctypes.c_size_t()
        self.refs = tuple(ctypes.byref(v) for v in (self.ndim, self.dtype_code, self.elements))
        self.written_ref = ctypes.byref(self.written)
        self._out = ctypes.create_string_buffer(0)

    def out_buffer(self, nbytes: int) -> int:
        """The address of at least ``nbytes`` of this thread's output buffer."""
        if len(self._out) < nbytes:
            self._out = ctypes.create_string_buffer(max(nbytes, 2 * len(self._out)))
        return ctypes.addressof(self._out)


class HostCoder:
    """ctypes access to the host coders of libslicer_host.so (or libslicer_cuda.so)."""

    def __init__(self, library: str | Path):
        self._lib = ctypes.CDLL(str(library))
        self._scratch = _CallScratch()
        u64, size_t, p = ctypes.c_uint64, ctypes.c_size_t, ctypes.c_void_p
        self._lib.slicer_packed_nbytes.restype = size_t
        self._lib.slicer_packed_nbytes.argtypes = [u64, ctypes.c_int]
        self._lib.slicer_subset_max_nbytes.restype = size_t
        self._lib.slicer_subset_max_nbytes.argtypes = [u64, u64]
        self._lib.slicer_crc32.restype = ctypes.c_uint32
        self._lib.slicer_crc32.argtypes = [p, size_t, ctypes.c_uint32]
        for name in ("slicer_pack_uint", "slicer_encode_subset", "slicer_encode_labels", "slicer_unpack_uint",
                     "slicer_decode_subset"):
            getattr(self._lib, name).restype = ctypes.c_int
        self._lib.slicer_pack_uint.argtypes = [p, u64, ctypes.c_int, p, size_t, ctypes.POINTER(size_t)]
        self._lib.slicer_unpack_uint.argtypes = [p, size_t, u64, ctypes.c_int, p]
        self._lib.slicer_encode_subset.argtypes = [p, u64, u64, p, size_t, ctypes.POINTER(size_t)]
        self._lib.slicer_decode_subset.argtypes = [p, size_t, u64, u64, p]
        self._lib.slicer_encode_labels.argtypes = [p, u64, ctypes.c_int, p, size_t, ctypes.POINTER(size_t)]
        self._lib.slicer_label_chunk.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
        self._lib.slicer_decode_host.restype = ctypes.c_int
        self._lib.slicer_decode_host.argtypes = [p, size_t, p, p, u64, p, ctypes.POINTER(ctypes.c_int),
                                                 ctypes.POINTER(ctypes.c_int), ctypes.POINTER(u64)]
        self._lib.slicer_decode_sparse_host.restype = ctypes.c_int
        self._lib.slicer_decode_sparse_host.argtypes = [p, size_t, p, p, p, u64, p, ctypes.POINTER(ctypes.c_int),
                                                        ctypes.POINTER(ctypes.c_int), ctypes.POINTER(u64),
                                                        ctypes.POINTER(u64)]
        self._lib.slicer_encode_from_kept.restype = ctypes.c_int
        self._lib.slicer_encode_from_kept.argtypes = [p, p, u64, p, ctypes.c_int, ctypes.c_int, p, p, size_t,
                                                      ctypes.POINTER(size_t)]
        self._lib.slicer_encode_parallel_workspace_bytes.restype = size_t
        self._lib.slicer_encode_parallel_workspace_bytes.argtypes = [u64]
        self._lib.slicer_encode_from_kept_parallel.restype = ctypes.c_int
        self._lib.slicer_encode_from_kept_parallel.argtypes = [p, p, u64, p, ctypes.c_int, ctypes.c_int, p, p, size_t,
                                                               p, size_t, ctypes.POINTER(size_t)]
        self._lib.slicer_decode_parallel_workspace_bytes.restype = size_t
        self._lib.slicer_decode_parallel_workspace_bytes.argtypes = [u64, u64]
        self._lib.slicer_decode_parallel_host.restype = ctypes.c_int
        self._lib.slicer_decode_parallel_host.argtypes = [p, size_t, p, p, size_t, p, u64, p,
                                                          ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int),
                                                          ctypes.POINTER(u64)]
        self._lib.slicer_encode_host.restype = ctypes.c_int
        self._lib.slicer_encode_host.argtypes = [p, p, ctypes.c_int, ctypes.c_int, p, p, size_t,
                                                 ctypes.POINTER(size_t)]

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status == _ERR_PAYLOAD:
            raise PayloadError(f"{what}: malformed stream")
        if status != _OK:
            raise SlicerCompileError(f"{what} failed with status {status}")

    def pack_uint(self, values: np.ndarray, width: int) -> bytes:
        values = np.ascontiguousarray(values, dtype=np.uint64)
        out = np.zeros(max(1, self._lib.slicer_packed_nbytes(values.size, width)), dtype=np.uint8)
        written = ctypes.c_size_t()
        self._check(self._lib.slicer_pack_uint(values.ctypes.data, values.size, width, out.ctypes.data, out.size,
                                                ctypes.byref(written)), "pack_uint")
        return out[: written.value].tobytes()

    def unpack_uint(self, buf: bytes, count: int, width: int) -> np.ndarray:
        data = np.frombuffer(buf, dtype=np.uint8)
        out = np.zeros(count, dtype=np.uint64)
        self._check(self._lib.slicer_unpack_uint(data.ctypes.data, data.size, count, width, out.ctypes.data),
                    "unpack_uint")
        return out

    def encode_subset(self, indices: np.ndarray, space: int) -> bytes:
        indices = np.ascontiguousarray(indices, dtype=np.int64)
        capacity = max(self._lib.slicer_subset_max_nbytes(indices.size, space), 1 + (space + 7) // 8) + 64
        out = np.zeros(capacity, dtype=np.uint8)
        written = ctypes.c_size_t()
        self._check(self._lib.slicer_encode_subset(indices.ctypes.data, indices.size, space, out.ctypes.data,
                                                    out.size, ctypes.byref(written)), "encode_subset")
        return out[: written.value].tobytes()

    def decode_subset(self, buf: bytes, count: int, space: int) -> np.ndarray:
        data = np.frombuffer(buf, dtype=np.uint8)
        out = np.zeros(max(count, 1), dtype=np.int64)
        self._check(self._lib.slicer_decode_subset(data.ctypes.data, data.size, count, space, out.ctypes.data),
                    "decode_subset")
        return out[:count]

    def label_chunk(self, base: int) -> tuple[int, int]:
        per_word, bits = ctypes.c_int(), ctypes.c_int()
        self._lib.slicer_label_chunk(base, ctypes.byref(per_word), ctypes.byref(bits))
        return per_word.value, bits.value

    def encode_labels(self, labels: np.ndarray, base: int) -> bytes:
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        out = np.zeros(labels.size * 8 + 16, dtype=np.uint8)
        written = ctypes.c_size_t()
        self._check(self._lib.slicer_encode_labels(labels.ctypes.data, labels.size, base, out.ctypes.data, out.size,
                                                    ctypes.byref(written)), "encode_labels")
        return out[: written.value].tobytes()

    def encode_slicer(self, x: np.ndarray, cfg) -> bytes:
        """The C++ SLICER encoder: a complete payload for ``x`` (float32 or float16)."""
        scratch = self._scratch
        flat = x if x.dtype == np.float32 and x.flags.c_contiguous else np.ascontiguousarray(x, dtype=np.float32)
        shape = tuple(x.shape)
        # predict_bits bounds every payload, so one call with that capacity suffices.
        capacity = _payload_bound(shape, cfg)
        out = scratch.out_buffer(capacity)
        self._check(self._lib.slicer_encode_host(flat.ctypes.data, _dims_of(shape)[1], len(shape),
                                                 2 if x.dtype == np.float16 else 1, _knobs_ref(cfg), out, capacity,
                                                 scratch.written_ref), "encode_slicer")
        return ctypes.string_at(out, scratch.written.value)

    def encode_from_kept(self, kept: np.ndarray, values: np.ndarray, shape: tuple[int, ...], dtype, cfg) -> bytes:
        """The encoder after ATKF (what the GPU path runs on the host)."""
        from slicer_compile.codec import predict_bits

        kept = np.ascontiguousarray(kept, dtype=np.int64)
        values = np.ascontiguousarray(values, dtype=np.float32)
        dims = np.array(shape, dtype=np.uint32)
        knobs = _Knobs(*cfg.knob_values())
        out = np.zeros(predict_bits(shape, cfg) // 8 + 1, dtype=np.uint8)
        written = ctypes.c_size_t()
        self._check(self._lib.slicer_encode_from_kept(kept.ctypes.data, values.ctypes.data, kept.size,
                                                      dims.ctypes.data, len(shape),
                                                      2 if np.dtype(dtype) == np.float16 else 1, ctypes.byref(knobs),
                                                      out.ctypes.data, out.size, ctypes.byref(written)),
                    "encode_from_kept")
        return out[: written.value].tobytes()

    def encode_from_kept_parallel(self, kept: np.ndarray, values: np.ndarray, shape: tuple[int, ...], dtype, cfg,
                                  workspace_bytes: int | None = None) -> bytes:
        """The device encoder's data-parallel stages, run on the host executor inside
        ``workspace_bytes`` (default: the library's bound for this tensor size)."""
        from slicer_compile.codec import predict_bits

        kept = np.ascontiguousarray(kept, dtype=np.int64)
        values = np.ascontiguousarray(values, dtype=np.float32)
        dims = np.array(shape, dtype=np.uint32)
        size = int(np.prod(shape)) if len(shape) else 1
        if workspace_bytes is None:
            workspace_bytes = self._lib.slicer_encode_parallel_workspace_bytes(size)
        workspace = np.zeros(max(workspace_bytes, 1), dtype=np.uint8)
        knobs = _Knobs(*cfg.knob_values())
        out = np.zeros(predict_bits(shape, cfg) // 8 + 1, dtype=np.uint8)
        written = ctypes.c_size_t()
        self._check(self._lib.slicer_encode_from_kept_parallel(
            kept.ctypes.data, values.ctypes.data, kept.size, dims.ctypes.data, len(shape),
            2 if np.dtype(dtype) == np.float16 else 1, ctypes.byref(knobs), workspace.ctypes.data, workspace.size,
            out.ctypes.data, out.size, ctypes.byref(written)), "encode_from_kept_parallel")
        return out[: written.value].tobytes()

    def decode_slicer(self, payload: bytes, max_elements: int = 1 << 28, max_payload_bytes: int = 1 << 31,
                      expected_elements: int | None = None) -> np.ndarray:
        """The C++ SLICER decoder; raises PayloadError wherever the numpy decoder does.

        ``expected_elements`` (a server knows its tensor's size): decode in one pass into
        a buffer that size; without it, or where the payload holds more, a sizing pass
        first (the payload is validated either way before anything is written)."""
        scratch = self._scratch
        # bytes go to C as they are (ctypes passes their buffer); anything else is copied once.
        data = payload if type(payload) is bytes and payload else (bytes(payload) or b"\0")
        args = (data, len(payload), _limits_ref(max_elements, max_payload_bytes))
        tail = (scratch.shape_ptr, *scratch.refs)
        status = _ERR_CAPACITY
        if expected_elements is not None and 0 < expected_elements <= max_elements:
            out = np.empty(expected_elements, dtype=np.float32)
            status = self._lib.slicer_decode_host(*args, out.ctypes.data, expected_elements, *tail)
        if status == _ERR_CAPACITY:  # no size given, or the payload holds more: size it first
            status = self._lib.slicer_decode_host(*args, None, 0, *tail)  # validates and sizes
            if status not in (_OK, _ERR_CAPACITY, _ERR_ARGUMENT):
                self._check(status, "decode_slicer")
            if status != _ERR_ARGUMENT:
                out = np.empty(max(scratch.elements.value, 1), dtype=np.float32)
                status = self._lib.slicer_decode_host(*args, out.ctypes.data, out.size, *tail)
        if status == _ERR_ARGUMENT:
            raise SlicerCompileError("the host decoder reads SLICER payloads (codec id 1) only")
        self._check(status, "decode_slicer")
        elements, ndim = scratch.elements.value, scratch.ndim.value
        value = out[:elements] if elements != out.size else out
        value = value.reshape(scratch.shape[:ndim].tolist())
        return value.astype(np.float16) if scratch.dtype_code.value == 2 else value

    def decode_parallel(self, payload: bytes, max_elements: int = 1 << 20,
                        max_payload_bytes: int = 1 << 31) -> np.ndarray:
        """The GPU decoder's data-parallel stages on the host executor, inside the
        library's workspace bound; raises PayloadError wherever numpy's decoder does."""
        data = np.frombuffer(payload, dtype=np.uint8) if payload else np.zeros(1, np.uint8)
        limits = _Limits(max_elements, max_payload_bytes)
        workspace = np.zeros(self._lib.slicer_decode_parallel_workspace_bytes(max_elements, len(payload)), np.uint8)
        out = np.zeros(max(max_elements, 1), dtype=np.float32)
        shape = np.zeros(8, dtype=np.uint32)
        ndim, dtype_code, elements = ctypes.c_int(), ctypes.c_int(), ctypes.c_uint64()
        status = self._lib.slicer_decode_parallel_host(data.ctypes.data, len(payload), ctypes.byref(limits),
                                                       workspace.ctypes.data, workspace.size, out.ctypes.data,
                                                       out.size, shape.ctypes.data, ctypes.byref(ndim),
                                                       ctypes.byref(dtype_code), ctypes.byref(elements))
        if status == _ERR_ARGUMENT:
            raise SlicerCompileError("the parallel decoder reads SLICER payloads (codec id 1) only")
        self._check(status, "decode_parallel")
        dtype = np.float16 if dtype_code.value == 2 else np.float32
        return out[: elements.value].reshape(tuple(int(d) for d in shape[: ndim.value])).astype(dtype)

    def decode_sparse(self, payload: bytes, max_elements: int = 1 << 28,
                      max_payload_bytes: int = 1 << 31) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
        """The GPU decoder's host half: (shape, kept flat positions, their float32 values)."""
        data = np.frombuffer(payload, dtype=np.uint8) if payload else np.zeros(1, np.uint8)
        limits = _Limits(max_elements, max_payload_bytes)
        shape = np.zeros(8, dtype=np.uint32)
        ndim, dtype_code = ctypes.c_int(), ctypes.c_int()
        elements, kept_count = ctypes.c_uint64(), ctypes.c_uint64()
        args = (data.ctypes.data, len(payload), ctypes.byref(limits))
        tail = (shape.ctypes.data, ctypes.byref(ndim), ctypes.byref(dtype_code), ctypes.byref(elements),
                ctypes.byref(kept_count))
        status = self._lib.slicer_decode_sparse_host(*args, None, None, 0, *tail)  # validates and sizes
        if status == _ERR_ARGUMENT:
            raise SlicerCompileError("the host decoder reads SLICER payloads (codec id 1) only")
        if status not in (_OK, _ERR_CAPACITY):
            self._check(status, "decode_sparse")
        positions = np.zeros(max(kept_count.value, 1), dtype=np.int64)
        values = np.zeros(max(kept_count.value, 1), dtype=np.float32)
        self._check(self._lib.slicer_decode_sparse_host(*args, positions.ctypes.data, values.ctypes.data,
                                                        positions.size, *tail), "decode_sparse")
        n = kept_count.value
        return tuple(int(d) for d in shape[: ndim.value]), positions[:n], values[:n]

    def crc32(self, data: bytes, crc: int = 0) -> int:
        buf = np.frombuffer(data, dtype=np.uint8) if data else np.zeros(1, np.uint8)
        return self._lib.slicer_crc32(buf.ctypes.data, len(data), crc)
