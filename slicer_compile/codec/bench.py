"""Codec benchmark: size and speed of every codec on the same tensors, one run.

``slicer-compile bench codec`` prints this as a table; Python callers get the
rows from :func:`run_codec_benchmark`. Speeds are medians over ``repeat``
timed runs after one warm-up, on one thread (numpy's codec paths do not
multi-thread).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import numpy as np

from slicer_compile.codec import (
    DenseConfig,
    Float16Config,
    Int8Config,
    SlicerConfig,
    TabqConfig,
    ZstdConfig,
    decode,
    encode,
    inspect_payload,
)
from slicer_compile.codec.slicer import block_layout
from slicer_compile.errors import ConfigError

DEFAULT_SIZES = (4 * 1024, 200 * 1024, 1024 * 1024)
DEFAULT_SPARSITIES = (0.5, 0.75, 0.9, 0.95, 0.99)
DATA_KINDS = ("gaussian", "relu")


@dataclass(frozen=True)
class CodecBenchRow:
    """One codec on one tensor. Bits are totals for the tensor."""

    elements: int
    codec: str
    sparsity: float | None
    total_bits: int
    bits_per_element: float
    position_bits: int
    position_bound_bits: float | None  # log2(T! / ((T-k)! Π k_m!)), SLICER only
    value_bits: int
    header_bits: int
    content_bits: float | None  # position bound + Σ k_m·q_m + block headers, SLICER only
    encode_melem_s: float
    decode_melem_s: float
    max_abs_error: float
    rmse: float

    @property
    def position_overhead(self) -> float | None:
        """Position bits over the information bound, as a fraction (0.01 = 1%)."""
        if not self.position_bound_bits:
            return None
        return self.position_bits / self.position_bound_bits - 1.0

    @property
    def content_overhead(self) -> float | None:
        if not self.content_bits:
            return None
        return self.total_bits / self.content_bits - 1.0

    def as_dict(self) -> dict:
        row = asdict(self)
        row["position_overhead"] = self.position_overhead
        row["content_overhead"] = self.content_overhead
        return row


def information_bound_bits(num_elements: int, sizes: Iterable[int]) -> float:
    """``log2(T! / ((T-k)! · Π k_m!))``: bits any coder of these block positions needs."""
    sizes = [int(s) for s in sizes]
    k = sum(sizes)
    nats = math.lgamma(num_elements + 1) - math.lgamma(num_elements - k + 1) - sum(math.lgamma(s + 1) for s in sizes)
    return nats / math.log(2)


def make_tensor(num_elements: int, data: str = "gaussian", seed: int = 0) -> np.ndarray:
    """The benchmark input: standard normal float32, or its ReLU (half zeros)."""
    if data not in DATA_KINDS:
        raise ConfigError(f"unknown data kind {data!r} (known: {', '.join(DATA_KINDS)})")
    x = np.random.default_rng(seed).standard_normal(num_elements).astype(np.float32)
    return np.maximum(x, 0) if data == "relu" else x


def _median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(x: np.ndarray, cfg, repeat: int = 5) -> CodecBenchRow:
    """Encode/decode ``x`` with ``cfg``: sizes by section, speeds, error."""
    payload = encode(x, cfg)
    x_hat = decode(payload)
    info = inspect_payload(payload)
    encode_s = _median_seconds(lambda: encode(x, cfg), repeat)
    decode_s = _median_seconds(lambda: decode(payload), repeat)
    err = x_hat.astype(np.float64) - x.astype(np.float64)
    bound = content = None
    if isinstance(cfg, SlicerConfig):
        sizes, q = block_layout(payload)
        bound = information_bound_bits(x.size, sizes)
        content = bound + float(np.dot(sizes, q)) + 8 * 9 * len(sizes)
    return CodecBenchRow(
        elements=int(x.size),
        codec=cfg.name,
        sparsity=getattr(cfg, "sparsity", None),
        total_bits=8 * len(payload),
        bits_per_element=8 * len(payload) / x.size,
        position_bits=info.position_bits,
        position_bound_bits=bound,
        value_bits=info.value_bits,
        header_bits=info.header_bits,
        content_bits=content,
        encode_melem_s=x.size / encode_s / 1e6,
        decode_melem_s=x.size / decode_s / 1e6,
        max_abs_error=float(np.abs(err).max()) if err.size else 0.0,
        rmse=float(np.sqrt(np.mean(err ** 2))) if err.size else 0.0,
    )


def baseline_configs() -> list:
    return [Float16Config(), Int8Config(), ZstdConfig()]


def run_codec_benchmark(
    sizes: Iterable[int] = DEFAULT_SIZES,
    sparsities: Iterable[float] = DEFAULT_SPARSITIES,
    repeat: int = 5,
    data: str = "gaussian",
    seed: int = 0,
    slicer: SlicerConfig = SlicerConfig(),
    tabq: TabqConfig | None = TabqConfig(tau=2.0),
    progress: Callable[[str], None] | None = None,
) -> list[CodecBenchRow]:
    """SLICER at every sparsity, then TAB-Q, the dense codec at 4 bits and the
    baselines, for every size."""
    rows = []
    for n in sizes:
        x = make_tensor(int(n), data, seed)
        configs = [dataclasses.replace(slicer, sparsity=s) for s in sparsities]
        configs += ([tabq] if tabq is not None else []) + [DenseConfig(bits=4)] + baseline_configs()
        for cfg in configs:
            if progress:
                progress(f"{n} elements, {cfg.name}" + (f" s={cfg.sparsity:g}" if hasattr(cfg, "sparsity") else ""))
            rows.append(measure(x, cfg, repeat))
    return rows


# --- per-token wire: version-1 payloads against the stream form -----------------------


@dataclass(frozen=True)
class WireBenchRow:
    """One codec on a sequence of token tensors: bytes per token on each form (means),
    and the error each form's decode leaves (relative MSE, summed over the tokens)."""

    elements: int
    codec: str
    sparsity: float | None
    tokens: int
    payload_bytes: float  # version 1, a self-describing payload per token
    frame_bytes: float  # the stream form, a frame per token
    frame_overhead_bytes: int  # what a frame adds to the codec's content (tag, CRC)
    session_header_bytes: int  # once per sequence
    narrow_tables: float  # the fraction of frames whose quantiser tables went narrow
    relative_mse_v1: float
    relative_mse_stream: float
    #: the same over the values version 1 kept (its decode non-zero): for SLICER the
    #: quantisation error alone, which the dropped values' error would hide
    kept_mse_change: float

    @property
    def mse_change(self) -> float:
        """The stream form's relative MSE over version 1's, minus 1 (0.001 = 0.1% worse)."""
        return self.relative_mse_stream / self.relative_mse_v1 - 1 if self.relative_mse_v1 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "mse_change": self.mse_change}


def run_wire_benchmark(elements: int = 4096, sparsities: Iterable[float] = (0.95, 0.99), tokens: int = 64,
                       data: str = "gaussian", seed: int = 0, tensors: np.ndarray | None = None
                       ) -> list[WireBenchRow]:
    """Each codec on ``tokens`` token tensors [1, 1, elements] (``tensors``: your own,
    [tokens, 1, 1, H]): the version-1 payload per token against the stream frame per
    token (codec.stream), and what the stream form's float16 tables cost in fidelity."""
    from slicer_compile.codec.stream import FRAME_OVERHEAD_NBYTES, StreamDecoder, StreamEncoder

    if tensors is None:
        flat = np.stack([make_tensor(elements, data, seed + t) for t in range(tokens)])
        tensors = flat.reshape(tokens, 1, 1, elements)
    shape = tuple(tensors.shape[1:])
    configs = [SlicerConfig(sparsity=s) for s in sparsities] + [
        TabqConfig(tau=2.0), DenseConfig(bits=6), DenseConfig(bits=4)] + baseline_configs()
    energy = float((tensors.astype(np.float64) ** 2).sum())
    rows = []
    for cfg in configs:
        encoder = StreamEncoder(cfg, shape)
        decoder = StreamDecoder(encoder.header)
        payload_bytes = frame_bytes = narrow = 0
        err_v1 = err_stream = kept_v1 = kept_stream = 0.0
        for x in tensors:
            payload, frame = encode(x, cfg), encoder.frame(x)
            payload_bytes += len(payload)
            frame_bytes += len(frame)
            narrow += frame[0] >> 7  # the tag's narrow-tables bit
            v1, stream = decode(payload).astype(np.float64), decoder.decode(frame).astype(np.float64)
            kept = v1 != 0
            err_v1 += float(((v1 - x) ** 2).sum())
            err_stream += float(((stream - x) ** 2).sum())
            kept_v1 += float(((v1 - x)[kept] ** 2).sum())
            kept_stream += float(((stream - x)[kept] ** 2).sum())
        n = len(tensors)
        name = f"{cfg.name}-{cfg.bits}" if isinstance(cfg, DenseConfig) else cfg.name
        rows.append(WireBenchRow(int(np.prod(shape)), name, getattr(cfg, "sparsity", None), n,
                                 payload_bytes / n, frame_bytes / n, FRAME_OVERHEAD_NBYTES, len(encoder.header),
                                 narrow / n, err_v1 / energy if energy else 0.0, err_stream / energy if energy else 0.0,
                                 kept_stream / kept_v1 - 1 if kept_v1 else 0.0))
    return rows
