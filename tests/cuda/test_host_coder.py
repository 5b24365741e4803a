"""The C++ host coders of cuda/ (libslicer_host.so) against the numpy reference,
byte for byte: the CUDA path's payloads must decode with the numpy decoder."""

from __future__ import annotations

import shutil
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slicer_compile.codec.bits import pack_uint
from slicer_compile.codec.native import HostCoder, build_kernels
from slicer_compile.codec.positions import decode_subset, encode_labels, encode_subset, label_chunk
from slicer_compile.errors import PayloadError, SlicerCompileError

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("g++") is None,
                                reason="building the host coders needs cmake and g++")


@pytest.fixture(scope="module")
def host_build(tmp_path_factory):
    """The folder build-kernels --host-only wrote libslicer_host.so into."""
    return build_kernels(tmp_path_factory.mktemp("build"), cuda=False)["host"].parent


@pytest.fixture(scope="module")
def coder(host_build):
    return HostCoder(host_build / "libslicer_host.so")


@given(st.integers(0, 64), st.integers(0, 200), st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_pack_uint_matches_numpy(coder, width, count, seed):
    top = (1 << width) - 1 if width else 0
    values = np.random.default_rng(seed).integers(0, top, count, dtype=np.uint64, endpoint=True) if width else \
        np.zeros(count, np.uint64)
    packed = coder.pack_uint(values, width)
    assert packed == pack_uint(values, width)
    np.testing.assert_array_equal(coder.unpack_uint(packed, count, width), values)


@given(st.integers(1, 5000), st.sampled_from([0.0, 0.001, 0.01, 0.05, 0.2, 0.39, 0.41, 0.5, 0.7, 0.97, 1.0]),
       st.integers(0, 2**32 - 1))
@settings(max_examples=300, deadline=None)
def test_subset_coding_matches_numpy_byte_for_byte(coder, space, density, seed):
    indices = np.flatnonzero(np.random.default_rng(seed).random(space) < density)
    reference = encode_subset(indices, space)
    assert coder.encode_subset(indices, space) == reference
    np.testing.assert_array_equal(coder.decode_subset(reference, indices.size, space), indices)


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.9, 0.95, 0.99])
def test_large_masks_match(coder, sparsity):
    T = 1 << 18
    indices = np.sort(np.random.default_rng(3).choice(T, int((1 - sparsity) * T), replace=False))
    assert coder.encode_subset(indices, T) == encode_subset(indices, T)


@pytest.mark.parametrize("base", list(range(2, 65)))
def test_label_words_match(coder, base):
    assert coder.label_chunk(base) == label_chunk(base)
    labels = np.random.default_rng(base).integers(0, base, 1000).astype(np.uint8)
    assert coder.encode_labels(labels, base) == encode_labels(labels, base)


def test_crc32_matches_zlib(coder):
    data = np.random.default_rng(0).bytes(10_000)
    assert coder.crc32(data) == zlib.crc32(data)
    assert coder.crc32(data[5000:], coder.crc32(data[:5000])) == zlib.crc32(data)


def test_host_decoder_refuses_what_numpy_refuses(coder):
    rng = np.random.default_rng(9)
    T = 4000
    indices = np.flatnonzero(rng.random(T) < 0.05)
    good = bytearray(encode_subset(indices, T))
    rejected = 0
    for i in range(2000):
        bad = bytearray(good)
        bad[rng.integers(len(bad))] ^= 1 << rng.integers(8)
        try:
            expected = decode_subset(memoryview(bytes(bad)), indices.size, T)
        except PayloadError:
            with pytest.raises(PayloadError):
                coder.decode_subset(bytes(bad), indices.size, T)
            rejected += 1
        else:
            np.testing.assert_array_equal(coder.decode_subset(bytes(bad), indices.size, T), expected)
    assert rejected > 100


def check_encoder(coder, x, cfg):
    from slicer_compile.codec import decode, encode

    expected = encode(x, cfg)
    got = coder.encode_slicer(x, cfg)
    assert got == expected, (x.shape, cfg)
    np.testing.assert_array_equal(decode(got), decode(expected))


@given(st.integers(1, 3000), st.sampled_from([np.float32, np.float16]), st.floats(0.0, 0.995),
       st.sampled_from([0.0, 0.3, -0.5]), st.integers(1, 6), st.integers(1, 6), st.integers(1, 16),
       st.sampled_from([0.0, 0.01, 0.5, 3.0]), st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_slicer_encoder_matches_numpy_byte_for_byte(coder, n, dtype, sparsity, lam, mp, mn, q_bits, delta, seed):
    from slicer_compile.codec import SlicerConfig

    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * rng.choice([0.01, 1.0, 100.0])).astype(dtype)
    x[rng.random(n) < 0.2] = 0  # zeros, never kept
    x[rng.random(n) < 0.1] = x[0]  # ties
    cfg = SlicerConfig(sparsity=sparsity, lam=lam, blocks=(mp, mn), q_bits=q_bits, q_min=max(1, q_bits // 3),
                       delta=delta)
    check_encoder(coder, x.reshape(-1, 1) if n % 2 else x, cfg)


@pytest.mark.parametrize("shape", [(1 << 20,), (64, 56, 56), (1, 1), (7,)])
def test_slicer_encoder_matches_numpy_on_feature_maps(coder, shape):
    from slicer_compile.codec import SlicerConfig

    x = np.maximum(np.random.default_rng(1).standard_normal(shape), -0.2).astype(np.float32)
    for cfg in (SlicerConfig(), SlicerConfig(sparsity=0.5, blocks=(4, 2), delta=1.0)):
        check_encoder(coder, x, cfg)


def test_slicer_decoder_matches_numpy_and_refuses_what_it_refuses(coder):
    from slicer_compile.codec import DecodeLimits, SlicerConfig, decode, encode
    from slicer_compile.codec.fuzz import mutated_payloads
    from slicer_compile.errors import SlicerCompileError

    rng = np.random.default_rng(5)
    seeds = []
    for shape, dtype, cfg in (((4, 33), np.float32, SlicerConfig(sparsity=0.5)),
                              ((300,), np.float16, SlicerConfig(sparsity=0.9, lam=0.3, blocks=(2, 4), q_bits=5)),
                              ((2, 3, 40), np.float32, SlicerConfig(sparsity=0.1, delta=2.0, q_min=1))):
        x = rng.standard_normal(shape).astype(dtype)
        x[..., :3] = 0
        seeds.append(encode(x, cfg))
        np.testing.assert_array_equal(coder.decode_slicer(seeds[-1]), decode(seeds[-1]))
    limits = DecodeLimits(max_elements=1 << 20)
    outcomes = {"both_decode": 0, "both_refuse": 0}
    for i, payload in enumerate(mutated_payloads(seeds, 4000, rng)):
        try:
            expected = decode(payload, limits)
        except PayloadError:
            expected = None
        try:
            got = coder.decode_slicer(payload, max_elements=1 << 20)
        except PayloadError:
            got = None
        except SlicerCompileError:  # the codec byte was mutated to another codec: not this decoder's job
            assert payload[5] != 1
            continue
        if expected is None:
            assert got is None, f"numpy refuses, C++ accepts (case {i})"
            outcomes["both_refuse"] += 1
        else:
            assert got is not None, f"numpy accepts, C++ refuses (case {i})"
            np.testing.assert_array_equal(got, expected)
            outcomes["both_decode"] += 1
    assert outcomes["both_refuse"] > 1000 and outcomes["both_decode"] > 10


def test_encode_from_kept_finishes_a_device_selection(coder):
    """The GPU path selects on the device and finishes on the host: from numpy's
    selection, the host half gives numpy's bytes."""
    from slicer_compile.codec import SlicerConfig, encode
    from slicer_compile.codec.slicer import select_kept

    x = np.random.default_rng(8).standard_normal((32, 28, 28)).astype(np.float32)
    for cfg in (SlicerConfig(), SlicerConfig(sparsity=0.6, lam=0.2, blocks=(5, 2), delta=0.5)):
        kept = select_kept(x.ravel(), cfg.kept_count(x.size), cfg.lam)
        assert coder.encode_from_kept(kept, x.ravel()[kept], x.shape, x.dtype, cfg) == encode(x, cfg)


@pytest.mark.parametrize("shape,cfg", [
    ((4, 16, 16), dict(sparsity=0.9)),
    ((3, 1000), dict(sparsity=0.6, lam=-0.3, blocks=(4, 7), q_bits=5, delta=1.0)),
    ((7,), dict(sparsity=0.0, blocks=(1, 1))),
])
def test_sparse_decode_is_the_dense_decode_before_the_scatter(coder, shape, cfg):
    """The GPU decoder's host half: scattering its (positions, values) into zeros
    gives the numpy decoder's tensor, and the positions are ascending."""
    from slicer_compile.codec import SlicerConfig, decode, encode

    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    payload = encode(x, SlicerConfig(**cfg))
    decoded_shape, positions, values = coder.decode_sparse(payload)
    assert decoded_shape == shape
    assert np.all(np.diff(positions) > 0)
    dense = np.zeros(int(np.prod(shape)), dtype=np.float32)
    dense[positions] = values
    np.testing.assert_array_equal(dense.reshape(shape), decode(payload))
    with pytest.raises(PayloadError):
        coder.decode_sparse(payload[:-1])


def _sample(n: int, dtype, data: str, seed: int) -> np.ndarray:
    """n values of a kind: normal, ReLU'd (many zeros), ties (few distinct values), constant magnitude."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    if data == "relu":
        x = np.maximum(x, 0)
    elif data == "ties":
        x = np.round(x * 2) / 2
    elif data == "constant":
        x = np.where(rng.random(n) < 0.5, 1.5, -1.5)
    return x.astype(dtype)


@given(st.integers(1, 3000), st.sampled_from([np.float32, np.float16]), st.floats(0.0, 0.999),
       st.floats(-0.9, 0.9), st.integers(1, 64), st.integers(1, 64), st.integers(1, 16), st.floats(0.0, 4.0),
       st.sampled_from(["normal", "relu", "ties", "constant"]), st.integers(0, 2**32 - 1))
@settings(max_examples=300, deadline=None)
def test_parallel_stages_match_numpy_byte_for_byte(coder, n, dtype, sparsity, lam, mp, mn, q_bits, delta, data,
                                                   seed):
    """The GPU encoder's data-parallel stages (cuda/src/parallel_encode.h), run by the
    host executor inside the workspace bound, give numpy's bytes: every position
    method (bitmap, fixed, Golomb, complement), every block count, DS trial and tie."""
    from slicer_compile.codec import SlicerConfig, encode
    from slicer_compile.codec.slicer import select_kept

    x = _sample(n, dtype, data, seed)
    cfg = SlicerConfig(sparsity=sparsity, lam=lam, blocks=(mp, mn), q_bits=q_bits, q_min=max(1, q_bits // 3),
                       delta=delta)
    flat = x.ravel()
    kept = select_kept(flat, cfg.kept_count(flat.size), cfg.lam)
    values = flat[kept].astype(np.float32)
    assert coder.encode_from_kept_parallel(kept, values, x.shape, dtype, cfg) == encode(x, cfg)


@pytest.mark.parametrize("shape, sparsity", [((64, 56, 56), 0.9), ((256, 1024), 0.3), ((1 << 18,), 0.99),
                                             ((3, 7), 0.0)])
def test_parallel_stages_on_feature_maps_within_the_workspace_bound(coder, shape, sparsity):
    from slicer_compile.codec import SlicerConfig, encode
    from slicer_compile.codec.slicer import select_kept

    x = np.maximum(np.random.default_rng(2).standard_normal(shape), -0.3).astype(np.float32)
    cfg = SlicerConfig(sparsity=sparsity, blocks=(8, 4), delta=0.5)
    kept = select_kept(x.ravel(), cfg.kept_count(x.size), cfg.lam)
    assert coder.encode_from_kept_parallel(kept, x.ravel()[kept], x.shape, x.dtype, cfg) == encode(x, cfg)


def test_parallel_stages_refuse_a_workspace_too_small(coder):
    from slicer_compile.codec import SlicerConfig
    from slicer_compile.codec.slicer import select_kept
    from slicer_compile.errors import SlicerCompileError

    x = np.random.default_rng(0).standard_normal(10000).astype(np.float32)
    cfg = SlicerConfig(sparsity=0.5)
    kept = select_kept(x, cfg.kept_count(x.size), cfg.lam)
    with pytest.raises(SlicerCompileError, match="status 2"):
        coder.encode_from_kept_parallel(kept, x[kept], x.shape, x.dtype, cfg, workspace_bytes=4096)


@given(st.integers(1, 3000), st.sampled_from([np.float32, np.float16]), st.floats(0.0, 0.999),
       st.floats(-0.9, 0.9), st.integers(1, 64), st.integers(1, 64), st.integers(1, 16), st.floats(0.0, 4.0),
       st.sampled_from(["normal", "relu", "ties", "constant"]), st.integers(0, 2**32 - 1))
@settings(max_examples=300, deadline=None)
def test_parallel_decoder_matches_numpy(coder, n, dtype, sparsity, lam, mp, mn, q_bits, delta, data, seed):
    from slicer_compile.codec import SlicerConfig, decode, encode

    cfg = SlicerConfig(sparsity=sparsity, lam=lam, blocks=(mp, mn), q_bits=q_bits, q_min=max(1, q_bits // 3),
                       delta=delta)
    payload = encode(_sample(n, dtype, data, seed), cfg)
    expected = decode(payload)
    got = coder.decode_parallel(payload, max_elements=4096)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_parallel_decoder_refuses_what_numpy_refuses(coder):
    """Mutated payloads (every other one with a fresh CRC, so the checks behind it run):
    the data-parallel decoder and numpy refuse the same ones and agree on the rest."""
    from slicer_compile.codec import SlicerConfig, decode, encode
    from slicer_compile.codec.fuzz import mutated_payloads

    rng = np.random.default_rng(7)
    seeds = [encode(rng.standard_normal(shape).astype(np.float32), cfg) for shape, cfg in [
        ((16, 40), SlicerConfig(sparsity=0.8)),
        ((3000,), SlicerConfig(sparsity=0.3, blocks=(5, 3), delta=1.0)),  # complement Golomb, bitmap
        ((200,), SlicerConfig(sparsity=0.97, blocks=(1, 1), q_bits=3)),   # fixed
        ((64,), SlicerConfig(sparsity=0.5, lam=0.5, blocks=(64, 64))),
    ]]
    outcomes = {"both_refuse": 0, "both_decode": 0}
    for payload in mutated_payloads(seeds, 6000, np.random.default_rng(3)):
        try:
            expected = decode(payload)
        except PayloadError:
            expected = None
        try:
            got = coder.decode_parallel(payload, max_elements=1 << 16)
        except PayloadError:
            got = None
        except SlicerCompileError:  # another codec id: not the SLICER decoder's to judge
            assert payload[5] != 1
            continue
        if expected is None:
            assert got is None, "numpy refuses, the parallel decoder accepts"
            outcomes["both_refuse"] += 1
        elif expected.size <= 1 << 16:
            assert got is not None, "numpy accepts, the parallel decoder refuses"
            np.testing.assert_array_equal(got, expected)
            outcomes["both_decode"] += 1
    assert outcomes["both_refuse"] > 1000 and outcomes["both_decode"] > 10


@pytest.mark.parametrize("sparsity", [0.99, 0.9, 0.95, 0.3, 0.999])
def test_every_coder_keeps_a_persons_count(coder, sparsity):
    """The C++ encoder and both C++ decoders agree with numpy on k = floor((1 - s)·T) at
    decimal sparsities where float32 rounding of s alone would lose one (0.99 of 300: 3)."""
    from slicer_compile.codec import SlicerConfig, decode, encode

    cfg = SlicerConfig(sparsity=sparsity)
    for T in (300, 1000, 999, 7):
        x = np.arange(1, T + 1, dtype=np.float32)
        expected = encode(x, cfg)
        assert np.count_nonzero(decode(expected)) == cfg.kept_count(T)
        assert coder.encode_slicer(x, cfg) == expected
        np.testing.assert_array_equal(coder.decode_slicer(expected), decode(expected))
        np.testing.assert_array_equal(coder.decode_parallel(expected, max_elements=4096), decode(expected))


# --- bounded decoding and agreement of every decoder ---------------------------------

_RSS_PROBE = """
import resource, sys
from slicer_compile.codec.crafted import slicer_constant, slicer_short_values
from slicer_compile.codec.native import HostCoder
from slicer_compile.errors import PayloadError
coder = HostCoder(sys.argv[1])
payloads = [slicer_constant(valid=False), slicer_short_values()]
coder.decode_slicer(slicer_constant(4096))  # warm: code paths and buffers touched once
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
refused = 0
for payload in payloads:
    for decode in (coder.decode_slicer, coder.decode_sparse):
        try:
            decode(payload)
        except PayloadError:
            refused += 1
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(refused, (after - before) * 1024)
"""


def test_cpp_decoders_refuse_a_tiny_payload_claiming_2_26_elements_before_allocating(coder, tmp_path):
    """The host and sparse decoders (the CUDA decoder's host half) check every section
    length before sizing anything by the kept count: peak RSS grows < 64 MB."""
    import subprocess
    import sys

    library = coder._lib._name
    done = subprocess.run([sys.executable, "-c", _RSS_PROBE, library], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    refused, growth = (int(v) for v in done.stdout.split())
    assert refused == 4
    assert growth < 64 << 20, f"peak RSS grew {growth >> 20} MiB"


def _golomb_m1(positions: np.ndarray) -> bytes:
    """A Golomb (m = 1) position section: each gap in unary, no fields, no extra bits."""
    gaps = np.diff(positions, prepend=-1) - 1
    bits = np.zeros(int(gaps.sum()) + positions.size, dtype=np.uint8)
    bits[np.cumsum(gaps + 1) - 1] = 1
    return bytes([3]) + np.array([1, bits.size], dtype="<u4").tobytes() + np.packbits(bits).tobytes()


def _with_section(payload: bytes, index: int, data: bytes) -> bytes:
    from slicer_compile.codec.fuzz import restamp
    from slicer_compile.codec.wire import PayloadReader, read_header

    header = read_header(payload)
    reader = PayloadReader(payload, header)
    sections = []
    while True:
        try:
            sections.append(bytes(reader.section("any")))
        except PayloadError:
            break
    sections[index] = data
    body = payload[:header.body_offset] + b"".join(struct.pack("<I", len(s)) + s for s in sections)
    return restamp(body + b"\0\0\0\0")


def test_all_four_decoders_agree_on_every_fuzzed_payload(coder):
    """numpy, the host decoder, the sparse decoder (the CUDA decoder's host half) and
    the data-parallel decoder (the CUDA and TensorRT decoders' template): the same
    refusals and the same tensors, on mutated payloads and on crafted ones."""
    from slicer_compile.codec import SlicerConfig, decode, encode
    from slicer_compile.codec.crafted import slicer_constant, slicer_short_values
    from slicer_compile.codec.fuzz import mutated_payloads
    from slicer_compile.codec.wire import read_header

    rng = np.random.default_rng(11)
    x = rng.standard_normal((8, 40)).astype(np.float32)
    seeds = [encode(x, SlicerConfig(sparsity=0.8)),
             encode(rng.standard_normal(3000).astype(np.float32), SlicerConfig(sparsity=0.3, blocks=(5, 3))),
             encode(x.astype(np.float16), SlicerConfig(sparsity=0.5, lam=0.4, blocks=(3, 7), q_bits=4)),
             slicer_constant(4096)]
    kept = np.flatnonzero(decode(seeds[0]).ravel())
    m1 = _with_section(seeds[0], 1, _golomb_m1(kept))
    assert np.array_equal(decode(m1), decode(seeds[0]))  # m = 1 is a valid code of the same mask
    crafted = [m1, _with_section(seeds[0], 1, _golomb_m1(kept) + b"\0"),  # m = 1, then a trailing byte
               slicer_constant(4096, valid=False), slicer_short_values(4096)]
    limit = 1 << 16
    outcomes = {"all_refuse": 0, "all_decode": 0}
    for payload in [*crafted, *mutated_payloads(seeds + crafted[:1], 3000, np.random.default_rng(4))]:
        try:
            if read_header(payload).codec_id != 1:
                continue  # another codec: the C++ decoders are SLICER's
        except PayloadError:
            pass
        results = []
        for decoder in (decode, coder.decode_slicer, coder.decode_parallel, coder.decode_sparse):
            try:
                out = decoder(payload) if decoder is decode else decoder(payload, max_elements=limit)
            except PayloadError:
                out = None
            if out is not None and decoder == coder.decode_sparse:
                shape, positions, values = out
                dense = np.zeros(int(np.prod(shape)), np.float32)
                dense[positions] = values
                out = dense.reshape(shape)
            results.append(out)
        expected = results[0]
        if expected is not None and expected.size > limit:
            continue  # numpy's default limit is larger than the one given to the C++ decoders
        if expected is None:
            assert all(r is None for r in results), f"numpy refuses, {[r is None for r in results]}"
            outcomes["all_refuse"] += 1
        else:
            for got in results[1:]:
                assert got is not None, "numpy decodes, a C++ decoder refuses"
                np.testing.assert_array_equal(got.astype(expected.dtype), expected)
            outcomes["all_decode"] += 1
    assert outcomes["all_refuse"] > 800 and outcomes["all_decode"] > 10


def test_the_runtime_takes_the_cpp_coder_where_it_is_faster(host_build):
    """RuntimeCoder: under "auto", C++ for small tensors and numpy for large ones, the
    same bytes either way; "native" always; "numpy" never."""
    from slicer_compile.codec import DecodeLimits, SlicerConfig, decode, encode
    from slicer_compile.codec.native import AUTO_NATIVE_ENCODE_ELEMENTS, RuntimeCoder

    cfg = SlicerConfig(sparsity=0.75)
    auto, numpy_only = RuntimeCoder("auto", host_build), RuntimeCoder("numpy", host_build)
    assert auto.native is not None and numpy_only.native is None
    calls = []
    native_encode = auto.native.encode_slicer
    auto.native.encode_slicer = lambda x, c: calls.append(x.size) or native_encode(x, c)
    for size in (64, AUTO_NATIVE_ENCODE_ELEMENTS, AUTO_NATIVE_ENCODE_ELEMENTS + 1):
        x = np.random.default_rng(size).standard_normal((1, size)).astype(np.float32)
        payload = auto.encode(x, cfg)
        assert payload == encode(x, cfg)
        np.testing.assert_array_equal(auto.decode(payload, DecodeLimits(max_elements=size), 1, size), decode(payload))
    assert calls == [64, AUTO_NATIVE_ENCODE_ELEMENTS]  # the larger one went to numpy
    with pytest.raises(PayloadError):
        auto.decode(encode(np.ones((1, 64), np.float32), cfg), DecodeLimits(max_elements=63), 1, 64)


def test_native_needs_a_build(tmp_path):
    from slicer_compile.codec.native import RuntimeCoder
    from slicer_compile.errors import ConfigError

    with pytest.raises(ConfigError, match="build-kernels"):
        RuntimeCoder("native", tmp_path)
    with pytest.raises(ConfigError, match="one of"):
        RuntimeCoder("fast", tmp_path)
    assert RuntimeCoder("auto", tmp_path).native is None  # auto falls back to numpy


def test_a_server_and_client_on_the_cpp_coder_answer_as_on_numpy(host_build, tmp_path):
    from slicer_compile.compiler import compile_model
    from slicer_compile.runtime.client import EdgeClient
    from slicer_compile.runtime.server import ServerConfig, SplitServer
    from slicer_compile.codec import SlicerConfig
    from tests.models import EXAMPLES

    artifact = compile_model(EXAMPLES / "digits_cnn.onnx", device="jetson", out_dir=tmp_path / "a", max_pairs=3)
    x = np.load(EXAMPLES / "digits_calib.npz")["x"][:3]
    cfg = SlicerConfig(sparsity=0.75)
    outputs = {}
    for choice in ("numpy", "native"):
        with SplitServer(artifact.path, port=0, config=ServerConfig(decoder=choice, native_build_dir=str(host_build))) \
                as server, EdgeClient(artifact, server.url, coder=choice, native_build_dir=host_build) as client:
            outputs[choice] = [client.infer({"x": s[None]}, split=split.id, config=cfg).outputs["logits"]
                               for split in artifact.splits if split.files for s in x]
    for a, b in zip(outputs["numpy"], outputs["native"]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("size, kind", [(1 << 16, "normal"), (70001, "ties"), (200000, "sparse")])
def test_the_radix_select_of_large_tensors_keeps_what_numpy_keeps(coder, size, kind):
    """From 64 Ki values the C++ encoder finds the k-th score by a radix select: the same
    kept set (ties to the lower index, zeros never kept) as numpy's, byte for byte."""
    from slicer_compile.codec import SlicerConfig

    rng = np.random.default_rng(size)
    x = rng.standard_normal(size).astype(np.float32)
    if kind == "ties":
        x = np.round(x * 4) / 4  # a few distinct magnitudes: the k-th score is shared by many
    elif kind == "sparse":
        x[rng.random(size) < 0.95] = 0  # fewer non-zeros than k at s = 0.9
    for sparsity in (0.5, 0.9, 0.99):
        check_encoder(coder, x.reshape(1, -1), SlicerConfig(sparsity=sparsity))


@pytest.mark.parametrize("expected", [None, 4096, 4000, 5000, 1])
def test_decoding_with_a_size_hint_gives_the_same_tensor(coder, expected):
    """One pass where the hint holds the payload, a sizing pass first where it does not
    (a smaller hint), the same tensor either way."""
    from slicer_compile.codec import SlicerConfig, decode, encode

    x = np.random.default_rng(4).standard_normal((1, 4096)).astype(np.float32)
    payload = encode(x, SlicerConfig(sparsity=0.9))
    got = coder.decode_slicer(payload, expected_elements=expected)
    assert got.shape == (1, 4096)
    np.testing.assert_array_equal(got, decode(payload))
    with pytest.raises(PayloadError):
        coder.decode_slicer(payload[:-3], expected_elements=expected)
