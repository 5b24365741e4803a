"""Measured per-node latency with ONNX Runtime's profiler, and the profile file.

Graph optimisations are off, so ONNX Runtime runs one kernel per ONNX node and
every profiler event maps to a node by name. Each node's latency is the median
over the timed runs, after warm-up runs that are discarded.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from slicer_compile.profile.engine_layers import LayerTime
from slicer_compile.errors import ModelError
from slicer_compile.frontend.onnx_model import example_feeds, graph_inputs, model_sha256, tensor_types
from slicer_compile.profile.costs import NodeCost, node_costs

PROFILE_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class NodeProfile:
    name: str
    op_type: str
    latency_s: float
    flops: float
    bytes_moved: int
    output_bytes: int
    weight_bytes: int


@dataclass(frozen=True)
class Profile:
    """Per-node measurements of one model on one device (TensorRT profiles also keep
    the per-layer times the node figures were attributed from)."""

    model_sha256: str
    device: str
    device_description: str
    warmup: int
    runs: int
    total_latency_s: float  # median whole-model run, profiler on
    nodes: tuple[NodeProfile, ...]
    backend: str = "onnxruntime"
    layers: tuple[LayerTime, ...] = ()

    def latency_by_node(self) -> dict[str, float]:
        return {n.name: n.latency_s for n in self.nodes}

    def save(self, path: str | Path) -> None:
        data = {"schema_version": PROFILE_SCHEMA_VERSION, **asdict(self)}
        Path(path).write_text(json.dumps(data, indent=1) + "\n")

    @staticmethod
    def load(path: str | Path) -> "Profile":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelError(f"no such profile: {path}") from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path} is not a profile JSON file: {exc}") from None
        if not isinstance(data, dict) or data.get("schema_version") != PROFILE_SCHEMA_VERSION:
            raise ModelError(f"{path}: not a slicer-compile profile of schema version {PROFILE_SCHEMA_VERSION}")
        try:
            nodes = tuple(NodeProfile(**n) for n in data["nodes"])
            layers = tuple(LayerTime(r["layer"], r["latency_s"], tuple(r["nodes"])) for r in data.get("layers", ()))
            return Profile(data["model_sha256"], data["device"], data["device_description"], data["warmup"],
                           data["runs"], data["total_latency_s"], nodes, data.get("backend", "onnxruntime"), layers)
        except KeyError as exc:
            raise ModelError(f"{path}: malformed profile, field {exc} is missing") from None
        except TypeError as exc:
            raise ModelError(f"{path}: malformed profile ({exc})") from None


def example_inputs(model, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for a concrete model (see ``frontend.example_feeds``)."""
    types = tensor_types(model)
    specs = []
    for inp in graph_inputs(model):
        shape, dtype = types[inp.name]
        if shape is None or any(d is None for d in shape):
            raise ModelError(f"input {inp.name} has an unknown shape; give one with --input-shape")
        specs.append((inp.name, shape, dtype))
    return example_feeds(specs, seed)


def measure_profile(concrete_model, device_name: str = "cpu", device_description: str = "", warmup: int = 3,
                    runs: int = 10, feeds: dict | None = None, threads: int = 0,
                    progress: Callable[[int, int], None] | None = None) -> Profile:
    """Run the model ``warmup + runs`` times under ONNX Runtime's profiler.

    Args:
        concrete_model: a normalised model with known shapes (``concretize``).
        feeds: inputs; random ones of the right shapes by default.
        progress: called with (runs done, runs in all).
    """
    import onnxruntime as ort

    from slicer_compile.backends.onnxrt.runner import session_options

    feeds = feeds if feeds is not None else example_inputs(concrete_model)
    with tempfile.TemporaryDirectory(prefix="slicer-profile-") as tmp:
        so = session_options(optimize=False, threads=threads, profile_prefix=os.path.join(tmp, "ort"))
        session = ort.InferenceSession(concrete_model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        total = warmup + runs
        for i in range(total):
            session.run(None, feeds)
            if progress:
                progress(i + 1, total)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[str, list[float]] = {}
    run_times: list[float] = []
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node.setdefault(event["name"][: -len("_kernel_time")], []).append(event["dur"] * 1e-6)
        elif event.get("cat") == "Session" and event["name"] == "model_run":
            run_times.append(event["dur"] * 1e-6)
    costs = node_costs(concrete_model)
    nodes = []
    for cost in costs:
        samples = per_node.get(cost.name, [])[warmup:]
        # Constant-like nodes may not appear as kernels: they cost nothing at run time.
        latency = float(np.median(samples)) if samples else 0.0
        nodes.append(NodeProfile(cost.name, cost.op_type, latency, cost.flops, cost.bytes_moved, cost.output_bytes,
                                 cost.weight_bytes))
    measured = [t for t in run_times[warmup:]] or [sum(n.latency_s for n in nodes)]
    return Profile(model_sha256(concrete_model), device_name, device_description, warmup, runs,
                   float(np.median(measured)), tuple(nodes))


def profile_costs(profile: Profile) -> list[NodeCost]:
    return [NodeCost(n.name, n.op_type, n.flops, n.bytes_moved, n.output_bytes, n.weight_bytes) for n in profile.nodes]
