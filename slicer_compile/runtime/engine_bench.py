"""``slicer-compile bench tensorrt``: per split of a TensorRT artifact, the edge and
server engine latency, the CUDA codec's time on the split's real activation, and
the bytes that cross.

Engine latency is CUDA-event time around each execution with the inputs already on
the device (median of ``repeat``); the codec time is ``GpuCoder.time_round_trip`` on
the activation the edge part computes for an example input (encode: device tensor
to payload bytes on the host; decode: host payload to device tensor).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from slicer_compile.artifact import load_artifact
from slicer_compile.codec import SlicerConfig
from slicer_compile.codec.ops import KNOBS_INPUT, knobs_tensor
from slicer_compile.errors import ArtifactError
from slicer_compile.graph.codec_nodes import nbytes_name, payload_name
from slicer_compile.runtime.parts import EDGE, SERVER, open_part


@dataclass(frozen=True)
class EngineBenchRow:
    split: str
    position: int
    edge_ms: float
    server_ms: float
    encode_ms: float | None  # CUDA codec on the activation (None: no activation crosses)
    decode_ms: float | None
    activation_elements: int
    payload_bytes: int  # the wire message at the artifact's default knobs
    raw_bytes: int  # the activation uncompressed (float32)

    def as_dict(self) -> dict:
        return asdict(self)


def _median_ms(times: list[float]) -> float:
    return float(np.median(times)) * 1e3


def run_tensorrt_benchmark(artifact_dir: str | Path, repeat: int = 50, splits: list[str] | None = None,
                           codec_library: str | Path | None = None) -> list[EngineBenchRow]:
    """Benchmark every split that has engines (or the named ones)."""
    from slicer_compile.codec.gpu import GpuCoder
    from slicer_compile.codec.native import build_kernels

    artifact = load_artifact(artifact_dir)
    with_plans = [s for s in artifact.splits if s.files and "edge_plan" in s.files]
    if splits:
        unknown = set(splits) - {s.id for s in with_plans}
        if unknown:
            raise ArtifactError(f"no engines for split(s) {sorted(unknown)} in {artifact.path}")
        with_plans = [s for s in with_plans if s.id in splits]
    if not with_plans:
        raise ArtifactError(f"{artifact.path} has no TensorRT engines: compile it with --backend tensorrt")
    cfg = artifact.codec.defaults
    inputs = artifact.example_inputs()
    library = codec_library or build_kernels(cuda=True)["cuda"]
    rows = []
    with GpuCoder(library) as coder:
        for info in with_plans:
            edge_feeds = {**inputs, KNOBS_INPUT: knobs_tensor(cfg)}
            with open_part(artifact, info.id, EDGE, "tensorrt") as edge:
                edge_feeds = {k: v for k, v in edge_feeds.items() if k in edge.input_names}
                edge_out = edge.infer(edge_feeds)
                edge_ms = _median_ms(edge.time_execution(edge_feeds, repeat))
            activations = [t for t in info.crossing if t.kind == "activation"]
            server_feeds, payload_bytes = {}, 0
            for t in info.crossing:
                if t.kind == "activation":
                    count = int(edge_out[nbytes_name(t.name)][0])
                    server_feeds[payload_name(t.name)] = edge_out[payload_name(t.name)][:count]
                    payload_bytes += count
                else:
                    server_feeds[t.name] = edge_out[t.name]
            with open_part(artifact, info.id, SERVER, "tensorrt") as server:
                server_ms = _median_ms(server.time_execution(server_feeds, repeat))
            encode_ms = decode_ms = None
            elements = 0
            if activations:
                with open_part(artifact, info.id, EDGE, "onnxruntime") as reference:
                    feeds = {k: v for k, v in inputs.items() if k in reference.input_names}
                    activation = reference.infer(feeds)[activations[0].name].astype(np.float32)
                timing = coder.time_round_trip(activation, cfg, repeat=repeat)
                encode_ms, decode_ms, elements = timing.encode_s * 1e3, timing.decode_s * 1e3, timing.elements
            rows.append(EngineBenchRow(info.id, info.position, edge_ms, server_ms, encode_ms, decode_ms, elements,
                                       payload_bytes, 4 * elements))
    return rows
