"""Calibration: how faithful the split model stays, per split and sparsity.

For every split and every sparsity on a grid, the crossing activations of each
calibration sample are encoded and decoded (one sample at a time, as the edge
sends them), the server part finishes the model, and its output is compared
with the uncompressed model: top-1 agreement for classifiers (a single
``[N, C]`` output), mean cosine similarity otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from slicer_compile.artifact import sparsity_key
from slicer_compile.codec import SlicerConfig, decode, encode
from slicer_compile.errors import ModelError
from slicer_compile.frontend.onnx_model import graph_inputs
from slicer_compile.graph.cuts import Cut
from slicer_compile.graph.partition import Partitioner

_log = logging.getLogger(__name__)

DEFAULT_SPARSITY_GRID = (0.5, 0.75, 0.9, 0.95, 0.99)
TOP1 = "top1_agreement"
COSINE = "cosine_similarity"


@dataclass(frozen=True)
class Calibration:
    metric: str  # TOP1 or COSINE
    samples: int
    sparsities: tuple[float, ...]
    fidelity: dict[str, dict[float, float]]  # split id -> sparsity (artifact.sparsity_key) -> fidelity

    def as_dict(self) -> dict:
        return {"status": "measured", "metric": self.metric, "samples": self.samples,
                "sparsities": list(self.sparsities)}


def load_calibration_inputs(path: str | Path, model) -> dict[str, np.ndarray]:
    """Arrays from an .npz, one per model input, named after it; samples on the first axis.

    Every array is checked against its input before any work: rank, the fixed
    dimensions after the sample axis, and dtype. float64 (what numpy makes by
    default) is cast to a float32 input with a note, and a narrower integer to a
    wider one; anything else is refused. Arrays that name no input (labels, say)
    are ignored.

    Raises:
        ModelError: not an .npz, an input without its array, a 0-d or empty array,
            another rank, shape or dtype, or inputs with different sample counts.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no such calibration file: {path}")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise ModelError(f"{path} is a .npy file; --calib takes an .npz with one array per model input, named after "
                         "it (np.savez('calib.npz', x=samples))")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError) as exc:
        raise ModelError(f"{path} is not an .npz of arrays: {exc}") from None
    inputs = {i.name: i for i in graph_inputs(model)}
    missing = [n for n in inputs if n not in arrays]
    if missing:
        raise ModelError(f"{path} has no array for input(s) {', '.join(missing)} (it holds "
                         f"{', '.join(sorted(arrays)) or 'nothing'}); name each array after its model input")
    feeds = {name: _checked_samples(path, name, arrays[name], inputs[name]) for name in inputs}
    counts = {name: len(v) for name, v in feeds.items()}
    if len(set(counts.values())) > 1:
        raise ModelError(f"{path}: the inputs have different sample counts: "
                         + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return feeds


def _checked_samples(path: Path, name: str, value: np.ndarray, value_info) -> np.ndarray:
    import onnx

    tensor_type = value_info.type.tensor_type
    expected_dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    wanted = "x".join("?" if d is None else str(d) for d in dims)
    if value.ndim == 0:
        raise ModelError(f"{path}: array {name!r} is 0-d; it needs a first axis of samples ({expected_dtype} {wanted})")
    if len(value) == 0:
        raise ModelError(f"{path}: array {name!r} has 0 samples")
    if value.ndim != len(dims):
        raise ModelError(f"{path}: array {name!r} has shape {'x'.join(map(str, value.shape))}; input {name} is "
                         f"{expected_dtype} {wanted} (samples on the first axis)")
    for axis, (have, want) in enumerate(zip(value.shape[1:], dims[1:]), start=1):
        if want is not None and have != want:
            raise ModelError(f"{path}: array {name!r} has size {have} on axis {axis}; input {name} is "
                             f"{expected_dtype} {wanted}")
    if value.dtype != expected_dtype:
        same_family = value.dtype.kind == expected_dtype.kind or (value.dtype.kind in "iu" and expected_dtype.kind in "iu")
        if not same_family:
            raise ModelError(f"{path}: array {name!r} is {value.dtype}; input {name} is {expected_dtype}")
        cast = value.astype(expected_dtype)
        if value.dtype.kind in "iu" and not np.array_equal(cast, value):
            raise ModelError(f"{path}: array {name!r} ({value.dtype}) has values outside {expected_dtype}")
        _log.warning("calibration input %s: %s cast to %s", name, value.dtype, expected_dtype)
        value = cast
    return value


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
            fidelity[cut.id][sparsity_key(s)] = score(metric, reference, output)
        if progress:
            progress(done + 1, len(cuts))
    return Calibration(metric, n, tuple(sparsities), fidelity)
