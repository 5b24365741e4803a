"""CUDA kernels against the numpy reference, bit for bit (needs a CUDA device)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from slicer_compile.codec.native import build_kernels
from slicer_compile.codec.quant import block_step, quantize_groups
from slicer_compile.codec.slicer import select_kept

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    library = ctypes.CDLL(str(build_kernels(tmp_path_factory.mktemp("build"))["cuda"]))
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    library.slicer_cuda_select_workspace_bytes.restype = sz
    library.slicer_cuda_select_workspace_bytes.argtypes = [sz]
    library.slicer_cuda_select_kept.argtypes = [vp, sz, ctypes.c_uint64, ctypes.c_float, vp, sz, vp, vp, vp]
    library.slicer_cuda_quantize.argtypes = [vp, vp, vp, vp, vp, sz, vp, vp]
    return library


class Device:
    """Device buffers through cuda-python, freed at exit."""

    def __init__(self):
        from cuda.bindings import runtime

        self.rt = runtime
        self.buffers = []

    def upload(self, array: np.ndarray) -> int:
        ptr = self.alloc(array.nbytes)
        self.rt.cudaMemcpy(ptr, array.ctypes.data, array.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice)
        return ptr

    def alloc(self, nbytes: int) -> int:
        err, ptr = self.rt.cudaMalloc(max(nbytes, 1))
        assert int(err) == 0
        self.buffers.append(ptr)
        return int(ptr)

    def download(self, ptr: int, dtype, count: int) -> np.ndarray:
        out = np.empty(count, dtype=dtype)
        self.rt.cudaDeviceSynchronize()
        self.rt.cudaMemcpy(out.ctypes.data, ptr, out.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost)
        return out

    def free(self):
        for ptr in self.buffers:
            self.rt.cudaFree(ptr)


@pytest.mark.parametrize("n, sparsity, lam", [(1 << 20, 0.9, 0.0), (1 << 20, 0.5, 0.3), (4099, 0.99, -0.2),
                                             (1 << 16, 0.75, 0.0)])
def test_select_kept_matches_numpy(lib, n, sparsity, lam):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(np.float32)
    x[rng.integers(0, n, n // 10)] = 0.0  # zeros are never kept
    x[rng.integers(0, n, n // 20)] = 1.0  # ties at one value
    k = int(np.floor((1 - np.float32(sparsity)) * n))
    dev = Device()
    try:
        ws_bytes = lib.slicer_cuda_select_workspace_bytes(n)
        d_kept, d_count = dev.alloc(8 * n), dev.alloc(8)
        status = lib.slicer_cuda_select_kept(dev.upload(x), n, k, lam, dev.alloc(ws_bytes), ws_bytes, d_kept,
                                             d_count, None)
        assert status == 0
        count = int(dev.download(d_count, np.int64, 1)[0])
        got = dev.download(d_kept, np.int64, count)
    finally:
        dev.free()
    np.testing.assert_array_equal(got, select_kept(x, k, float(np.float32(lam))))


def test_quantize_matches_numpy(lib):
    rng = np.random.default_rng(0)
    sizes = np.array([1000, 777, 1, 2048], dtype=np.int64)
    mags = np.abs(rng.standard_normal(sizes.sum())).astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    lo = np.minimum.reduceat(mags, starts)
    hi = np.maximum.reduceat(mags, starts)
    q = np.array([8, 3, 0, 16], dtype=np.int64)
    step = block_step(lo, hi, q)
    expected = quantize_groups(mags, starts, sizes, lo, step, q)
    group_of = np.repeat(np.arange(sizes.size, dtype=np.uint32), sizes)
    levels = ((1 << q) - 1).astype(np.uint32)
    dev = Device()
    try:
        d_codes = dev.alloc(4 * mags.size)
        status = lib.slicer_cuda_quantize(dev.upload(mags), dev.upload(group_of), dev.upload(lo), dev.upload(step),
                                          dev.upload(levels), mags.size, d_codes, None)
        assert status == 0
        got = dev.download(d_codes, np.uint32, mags.size)
    finally:
        dev.free()
    np.testing.assert_array_equal(got, expected.astype(np.uint32))


def test_whole_payload_from_the_device_matches_numpy(lib):
    from slicer_compile.codec import SlicerConfig, encode, predict_bits
    from slicer_compile.codec.native import _Knobs

    lib.slicer_cuda_encode_workspace_bytes.restype = ctypes.c_size_t
    lib.slicer_cuda_encode_workspace_bytes.argtypes = [ctypes.c_size_t]
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    lib.slicer_cuda_encode.argtypes = [vp, vp, ctypes.c_int, ctypes.c_int, vp, vp, sz, vp, vp, vp, sz,
                                       ctypes.POINTER(sz), vp]
    x = np.random.default_rng(1).standard_normal((64, 56, 56)).astype(np.float32)
    cfg = SlicerConfig(sparsity=0.9)
    shape = np.array(x.shape, dtype=np.uint32)
    knobs = _Knobs(cfg.sparsity, cfg.lam, cfg.delta, cfg.blocks[0], cfg.blocks[1], cfg.q_bits, cfg.q_min)
    host_kept, host_values = np.zeros(x.size, np.int64), np.zeros(x.size, np.float32)
    out = np.zeros(predict_bits(x.shape, cfg) // 8 + 1, np.uint8)
    written = ctypes.c_size_t()
    dev = Device()
    try:
        ws = lib.slicer_cuda_encode_workspace_bytes(x.size)
        status = lib.slicer_cuda_encode(dev.upload(x), shape.ctypes.data, 3, 1, ctypes.byref(knobs), dev.alloc(ws),
                                        ws, host_kept.ctypes.data, host_values.ctypes.data, out.ctypes.data,
                                        out.size, ctypes.byref(written), None)
    finally:
        dev.free()
    assert status == 0
    assert out[: written.value].tobytes() == encode(x, cfg)


@pytest.fixture(scope="module")
def gpu_coder(tmp_path_factory):
    from slicer_compile.codec.gpu import GpuCoder

    with GpuCoder(build_kernels(tmp_path_factory.mktemp("build"))["cuda"]) as coder:
        yield coder


@pytest.mark.parametrize("shape, knobs", [
    ((1 << 20,), dict(sparsity=0.9)),
    ((8, 64, 32, 32), dict(sparsity=0.75, lam=0.25, blocks=(6, 3), delta=0.5)),
    ((4099,), dict(sparsity=0.99, lam=-0.2, blocks=(1, 1), q_bits=4)),
    ((3, 5), dict(sparsity=0.0, q_bits=16, q_min=16)),
])
@pytest.mark.parametrize("stages", ["device", "host"])
def test_gpu_round_trip_is_numpy_byte_for_byte(gpu_coder, shape, knobs, stages):
    """Encode on the GPU (every stage there, or ATKF there and the coding on the host)
    gives numpy's bytes; decode on the GPU gives numpy's tensor."""
    from slicer_compile.codec import SlicerConfig, decode, encode

    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    x.ravel()[rng.integers(0, x.size, x.size // 7)] = 0.5  # ties
    cfg = SlicerConfig(**knobs)
    payload = gpu_coder.encode(x, cfg, stages)
    assert payload == encode(x, cfg)
    np.testing.assert_array_equal(gpu_coder.decode(payload, x.size, stages), decode(payload))


@pytest.mark.parametrize("stages", ["device", "host"])
def test_gpu_decoder_refuses_what_numpy_refuses(gpu_coder, stages):
    from slicer_compile.codec import SlicerConfig, decode, encode
    from slicer_compile.codec.fuzz import mutated_payloads
    from slicer_compile.errors import PayloadError, SlicerCompileError

    seed = encode(np.random.default_rng(5).standard_normal((16, 40)).astype(np.float32), SlicerConfig(sparsity=0.8))
    refused = 0
    for payload in mutated_payloads([seed], 2000, np.random.default_rng(11)):
        try:
            expected = decode(payload)
        except PayloadError:
            expected = None
        try:
            got = gpu_coder.decode(payload, 1 << 16, stages)
        except PayloadError:
            got = None
        except SlicerCompileError:  # the codec byte was mutated: another codec's payload, not this decoder's
            assert payload[5] != 1
            continue
        if expected is None:
            assert got is None, "numpy refuses, the CUDA decoder accepts"
            refused += 1
        elif expected.size <= 1 << 16:
            np.testing.assert_array_equal(got, expected.astype(np.float32))
    assert refused > 500
