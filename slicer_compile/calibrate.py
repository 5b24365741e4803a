"""Calibration: how faithful the split model stays, per split and sparsity.

For every split and every sparsity on a grid, the crossing activations of each
calibration sample are encoded and decoded (one sample at a time, as the edge
sends them), the server part finishes the model, and its output is compared
with the uncompressed model: top-1 agreement for classifiers (a single
``[N, C]`` output), mean cosine similarity otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from slicer_compile.codec import SlicerConfig, decode, encode
from slicer_compile.errors import ModelError
from slicer_compile.frontend.onnx_model import graph_inputs
from slicer_compile.graph.cuts import Cut
from slicer_compile.graph.partition import Partitioner

DEFAULT_SPARSITY_GRID = (0.5, 0.75, 0.9, 0.95, 0.99)
TOP1 = "top1_agreement"
COSINE = "cosine_similarity"


@dataclass(frozen=True)
class Calibration:
    metric: str  # TOP1 or COSINE
    samples: int
    sparsities: tuple[float, ...]
    fidelity: dict[str, dict[str, float]]  # split id -> sparsity (str) -> fidelity

    def as_dict(self) -> dict:
        return {"status": "measured", "metric": self.metric, "samples": self.samples,
                "sparsities": list(self.sparsities)}


def load_calibration_inputs(path: str | Path, model) -> dict[str, np.ndarray]:
    """Arrays from an .npz, keyed by input name (a single unnamed array is the single input)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no such calibration file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise ModelError(f"{path} is not an .npz of arrays: {exc}") from None
    names = [i.name for i in graph_inputs(model)]
    if all(n in arrays for n in names):
        return {n: arrays[n] for n in names}
    if len(names) == 1 and len(arrays) >= 1:
        key = "x" if "x" in arrays else sorted(arrays)[0]
        return {names[0]: arrays[key]}
    raise ModelError(f"{path} must hold arrays named after the model inputs {names}, has {sorted(arrays)}")


def _run(model, feeds: dict[str, np.ndarray], outputs: Sequence[str], batched: bool) -> list[np.ndarray]:
    """Run a model on all samples, batched or one sample at a time."""
    from slicer_compile.backends.onnxrt import OnnxrtRunner

    with OnnxrtRunner(model) as runner:
        if batched:
            result = runner.infer(feeds)
            return [result[n] for n in outputs]
        n = len(next(iter(feeds.values())))
        per_sample = [runner.infer({k: v[i: i + 1] for k, v in feeds.items()}) for i in range(n)]
    return [np.concatenate([r[name] for r in per_sample]) for name in outputs]


def _accepts_batch(model, n: int) -> bool:
    for inp in graph_inputs(model):
        dims = inp.type.tensor_type.shape.dim
        if not dims or (dims[0].HasField("dim_value") and dims[0].dim_value != n):
            return False
    return True


def _with_outputs(model, names: list[str]):
    import onnx

    extended = onnx.ModelProto.FromString(model.SerializeToString())
    have = {o.name for o in extended.graph.output}
    value_info = {v.name: v for v in extended.graph.value_info}
    for name in names:
        if name not in have:
            info = value_info.get(name)
            if info is None:
                raise ModelError(f"calibration: no inferred type for {name}")
            extended.graph.output.append(info)
            have.add(name)
    return extended


def fidelity_metric(reference: np.ndarray) -> str:
    return TOP1 if reference.ndim == 2 and reference.shape[1] >= 2 else COSINE


def score(metric: str, reference: np.ndarray, output: np.ndarray) -> float:
    if metric == TOP1:
        return float(np.mean(reference.argmax(axis=1) == output.argmax(axis=1)))
    a = reference.reshape(len(reference), -1).astype(np.float64)
    b = output.reshape(len(output), -1).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(denom > 0, (a * b).sum(axis=1) / np.where(denom > 0, denom, 1), 1.0)
    return float(np.mean(cos))


def round_trip(x: np.ndarray, cfg: SlicerConfig) -> np.ndarray:
    """Encode and decode each sample (the first axis) on its own, as the edge sends it."""
    return np.stack([decode(encode(np.ascontiguousarray(sample), cfg)) for sample in x[:, None]])[:, 0]


def calibrate(model, cuts: Sequence[Cut], feeds: dict[str, np.ndarray], codec: SlicerConfig = SlicerConfig(),
              sparsities: Sequence[float] = DEFAULT_SPARSITY_GRID, max_samples: int = 64,
              progress: Callable[[int, int], None] | None = None) -> Calibration:
    """Fidelity of every cut at every sparsity against the uncompressed model."""
    n = min(len(next(iter(feeds.values()))), max_samples)
    feeds = {k: np.ascontiguousarray(v[:n]) for k, v in feeds.items()}
    batched = _accepts_batch(model, n)
    output_name = model.graph.output[0].name
    # Every crossing tensor of every cut, from one run of the full model; graph
    # inputs that cross (the cloud-only cut) are the feeds themselves.
    crossing = [n for n in dict.fromkeys(name for cut in cuts for name in cut.crossing_names) if n not in feeds]
    values = _run(_with_outputs(model, [output_name] + crossing), feeds, [output_name] + crossing, batched)
    reference, tensors = values[0], {**feeds, **dict(zip(crossing, values[1:]))}
    metric = fidelity_metric(reference)
    partitioner = Partitioner(model)
    fidelity: dict[str, dict[str, float]] = {}
    for done, cut in enumerate(cuts):
        server = partitioner.server_part(cut)
        fidelity[cut.id] = {}
        for s in sparsities:
            cfg = dataclasses.replace(codec, sparsity=s)
            server_feeds = {t.name: round_trip(tensors[t.name], cfg) if t.kind == "activation" else tensors[t.name]
                            for t in cut.crossing}
            (output,) = _run(server, server_feeds, [output_name], batched)
            fidelity[cut.id][f"{s:g}"] = score(metric, reference, output)
        if progress:
            progress(done + 1, len(cuts))
    return Calibration(metric, n, tuple(sparsities), fidelity)
