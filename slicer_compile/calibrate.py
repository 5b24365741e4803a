"""Calibration: how faithful the split model stays, per split and sparsity.

For every split and every sparsity on a grid, the crossing activations of each
calibration sample are encoded and decoded (one sample at a time, as the edge
sends them), the server part finishes the model, and its output is compared
with the uncompressed model by the metric that fits the output (:data:`METRICS`:
top-1 agreement for class logits, cosine for embeddings, mask IoU for dense maps,
token agreement for per-position logits), inferred or given with ``--metric``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from slicer_compile.artifact import sparsity_key
from slicer_compile.codec import SlicerConfig, decode, encode
from slicer_compile.codec.centring import Centre, centred, choose_centre, restored
from slicer_compile.codec.padding import masked, padded_config
from slicer_compile.errors import ModelError
from slicer_compile.frontend.onnx_model import graph_inputs, tensor_types
from slicer_compile.graph.cuts import Cut
from slicer_compile.graph.partition import Partitioner

_log = logging.getLogger(__name__)

DEFAULT_SPARSITY_GRID = (0.5, 0.75, 0.9, 0.95, 0.99)
#: samples the centring decision looks at (codec.centring.choose_centre)
CENTRING_SAMPLES = 4
TOP1 = "top1_agreement"
COSINE = "cosine_similarity"
IOU = "mask_iou"
TOKEN = "token_agreement"
NEIGHBOURS = "neighbour_agreement"


@dataclass(frozen=True)
class Calibration:
    metric: str  # a key of METRICS
    samples: int
    sparsities: tuple[float, ...]
    fidelity: dict[str, dict[float, float]]  # split id -> sparsity (artifact.sparsity_key) -> fidelity
    #: coded tensor -> its channel offsets, where coding the residual is clearly better
    #: (codec.centring); the fidelity above was measured so
    centres: dict[str, Centre] = field(default_factory=dict)

    def centred_cut(self, cut: Cut) -> Cut:
        """``cut`` with its activations' centres, as the edge and server will code them."""
        crossing = tuple(dataclasses.replace(t, centre=self.centres.get(t.name)) if t.kind == "activation" else t
                         for t in cut.crossing)
        return dataclasses.replace(cut, crossing=crossing)

    def as_dict(self) -> dict:
        return {"status": "measured", "metric": self.metric, "samples": self.samples,
                "sparsities": list(self.sparsities), "centred": sorted(self.centres)}


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


def _padded(x: np.ndarray, size: int) -> np.ndarray:
    if len(x) == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])


def batch_size(model, n: int) -> int:
    """Samples per run: all ``n`` where the batch axis is free, else the model's static
    batch (an export at batch 8 runs 8 at a time, not one)."""
    fixed = set()
    for inp in graph_inputs(model):
        dims = inp.type.tensor_type.shape.dim
        if not dims:
            return 1
        if dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            fixed.add(dims[0].dim_value)
    if not fixed:
        return n
    if len(fixed) > 1:
        raise ModelError(f"the model's inputs have different static batch sizes {sorted(fixed)}")
    return fixed.pop()


def _static_batch(model) -> bool:
    dims = graph_inputs(model)[0].type.tensor_type.shape.dim
    return bool(dims) and dims[0].HasField("dim_value") and dims[0].dim_value > 0


def with_outputs(model, names: list[str]):
    """A copy of ``model`` that also outputs the tensors ``names`` (their inferred types)."""
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


#: What an output is, and how faithful a split keeps it.
METRICS = {
    TOP1: "class logits: the share of samples whose top class is unchanged",
    COSINE: "embeddings and other features: mean cosine similarity per sample",
    IOU: "dense maps: IoU of the thresholded map (0.5 for probabilities, 0 for logits)",
    TOKEN: "per-position logits (tokens, CTC frames): the share of positions whose argmax is unchanged",
    NEIGHBOURS: "embeddings for retrieval (--metric): the share of samples whose nearest other sample, by "
                "cosine, is unchanged",
}

_EMBEDDING_NAMES = ("embed", "pool", "sentence", "feature", "hidden", "vector", "encoding")
_LOGIT_NAMES = ("logit", "score", "prob", "class", "label")
_NORMALISING_OPS = {"ReduceMean", "ReduceSum", "Div", "LpNormalization", "Tanh", "ReduceL2"}


def fidelity_metric(model, reference: np.ndarray, given: str | None = None) -> str:
    """The metric for the model's first output: ``given`` (``--metric``), else inferred
    from its name, the op that makes it, its rank and its values."""
    if given is not None:
        if given not in METRICS:
            raise ModelError(f"unknown metric {given!r} (known: {', '.join(METRICS)})")
        return given
    output = model.graph.output[0].name
    name = output.lower()
    producer = next((n.op_type for n in model.graph.node if output in n.output), "")
    if reference.ndim == 2 and reference.shape[1] >= 2:
        if any(k in name for k in _EMBEDDING_NAMES):
            return COSINE
        if any(k in name for k in _LOGIT_NAMES) or producer in ("Softmax", "LogSoftmax"):
            return TOP1
        norms = np.linalg.norm(reference.reshape(len(reference), -1).astype(np.float64), axis=1)
        if producer in _NORMALISING_OPS or np.allclose(norms, 1.0, atol=1e-3):
            return COSINE  # pooled or normalised: an embedding, whose argmax means nothing
        return TOP1
    if reference.ndim == 3 and reference.shape[2] >= 2 and (
            producer in ("Softmax", "LogSoftmax") or any(k in name for k in _LOGIT_NAMES)):
        return TOKEN
    if reference.ndim == 4 and (reference.shape[1] == 1 or producer == "Sigmoid"):
        return IOU
    return COSINE


def score(metric: str, reference: np.ndarray, output: np.ndarray, valid: np.ndarray | None = None) -> float:
    """How faithful ``output`` is to ``reference`` (one sample per first-axis row).

    ``valid`` [N, S], for an output whose first two axes are an attention mask's: only
    the positions it marks count (what a padded position's output holds is no one's
    concern, and padding-aware coding leaves those rows out).
    """
    if valid is not None:
        keep = (valid != 0).reshape(valid.shape + (1,) * (reference.ndim - 2))
        if metric == TOKEN:
            agree = reference.argmax(axis=-1) == output.argmax(axis=-1)
            return float(agree[valid != 0].mean()) if np.any(valid) else 1.0
        reference, output = np.where(keep, reference, 0), np.where(keep, output, 0)
    if metric == TOP1:
        return float(np.mean(reference.argmax(axis=1) == output.argmax(axis=1)))
    if metric == TOKEN:
        return float(np.mean(reference.argmax(axis=-1) == output.argmax(axis=-1)))
    if metric == IOU:
        probabilities = reference.min() >= 0 and reference.max() <= 1
        threshold = 0.5 if probabilities else 0.0
        a = reference.reshape(len(reference), -1) > threshold
        b = output.reshape(len(output), -1) > threshold
        union = (a | b).sum(axis=1)
        return float(np.mean(np.where(union > 0, (a & b).sum(axis=1) / np.maximum(union, 1), 1.0)))
    if metric == NEIGHBOURS:
        return float(np.mean(_nearest(reference) == _nearest(output))) if len(reference) > 1 else 1.0
    a = reference.reshape(len(reference), -1).astype(np.float64)
    b = output.reshape(len(output), -1).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(denom > 0, (a * b).sum(axis=1) / np.where(denom > 0, denom, 1), 1.0)
    return float(np.mean(cos))


def _sample_axis_tensors(model) -> set[str]:
    """Tensors whose first axis is the batch: where shape inference on the model as
    exported (batch symbolic) leaves axis 0 open. A shape vector (``Shape -> Gather ->
    Cast``) has a fixed length there, whatever the batch; a tensor inference did not
    type at all is left out (its runs are not stacked)."""
    return {name for name, (shape, _) in tensor_types(model).items() if shape and shape[0] is None}


def _output_padding(feeds: dict[str, np.ndarray], reference: np.ndarray, n: int) -> np.ndarray | None:
    """The attention mask [N, S] of a per-position output [N, S, ...], if an input is one
    (integer, two axes, named as exporters name masks, matching the output's axes)."""
    for name, value in feeds.items():
        if ("mask" in name.lower() and value.ndim == 2 and np.issubdtype(value.dtype, np.integer)
                and reference.ndim >= 3 and reference.shape[:2] == (n, value.shape[1])):
            return value[:n]
    return None


def _nearest(embeddings: np.ndarray) -> np.ndarray:
    """Index of each sample's nearest other sample by cosine similarity."""
    x = embeddings.reshape(len(embeddings), -1).astype(np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.argmax(axis=1)


def round_trip(x: np.ndarray, cfg: SlicerConfig, group: int = 1, mask: np.ndarray | None = None,
               centre: Centre | None = None) -> np.ndarray:
    """Encode and decode as the edge sends: ``group`` samples (the first axis) per
    payload — one for a model with a free batch axis, its static batch otherwise —
    the residual from ``centre``'s offsets coded (codec.centring), with the padded rows
    ``mask`` marks left out of the coding (codec.padding)."""
    out = []
    for start in range(0, len(x), group):
        chunk = centred(_padded(x[start: start + group], group), centre)
        chunk_cfg = cfg
        if mask is not None:
            rows = _padded(mask[start: start + group], group)
            chunk, chunk_cfg = masked(chunk, rows), padded_config(cfg, rows)
        decoded = restored(decode(encode(np.ascontiguousarray(chunk), chunk_cfg)), centre)
        out.append(decoded[: min(group, len(x) - start)].astype(x.dtype, copy=False))
    return np.concatenate(out)


def calibrate(model, cuts: Sequence[Cut], feeds: dict[str, np.ndarray], codec: SlicerConfig = SlicerConfig(),
              sparsities: Sequence[float] = DEFAULT_SPARSITY_GRID, max_samples: int = 64,
              progress: Callable[[int, int], None] | None = None, metric: str | None = None,
              refine: set[str] | None = None, centring: bool = True) -> Calibration:
    """Fidelity of the cuts against the uncompressed model, by ``metric`` (default:
    inferred from the output, :func:`fidelity_metric`).

    Coarse, then fine where it matters: the cuts in ``refine`` (the Pareto-useful ones,
    which get materialised and served) are measured at every sparsity; the others only
    at the codec's default sparsity, which the table shows (``None``: all at every one).
    A (cut, sparsity) left unmeasured is never chosen by the selector.

    With ``centring``, each coded tensor whose residual from its channel means codes
    clearly better than the tensor itself at the default sparsity is centred
    (codec.centring.choose_centre), and its cuts are measured so.
    """
    from slicer_compile.backends.onnxrt import OnnxrtRunner

    n = min(len(next(iter(feeds.values()))), max_samples)
    batch = batch_size(model, n)
    static = _static_batch(model)
    group = batch if static else 1  # samples per payload: a static batch travels whole
    # The samples in runs of `batch` (the last padded): every tensor below is kept per
    # run as the model made it, so that shape tensors (Shape -> ... -> Reshape), which
    # have no sample axis and depend on the run's batch, stay consistent with it.
    runs = [(start, min(batch, n - start)) for start in range(0, n, batch)]
    chunks = [{k: _padded(np.ascontiguousarray(v[start: start + count]), batch) for k, v in feeds.items()}
              for start, count in runs]
    output_name = model.graph.output[0].name
    # Every crossing tensor of every cut, from one pass of the full model; graph
    # inputs that cross (the cloud-only cut) are the feeds themselves.
    crossing = [n for n in dict.fromkeys(name for cut in cuts for name in cut.crossing_names) if n not in feeds]
    with OnnxrtRunner(with_outputs(model, [output_name] + crossing)) as full:
        passes = [full.infer(chunk) for chunk in chunks]
    tensors = {name: [chunk[name] for chunk in chunks] for name in feeds}
    tensors.update({name: [p[name] for p in passes] for name in crossing})
    reference = np.concatenate([p[output_name][:count] for p, (_, count) in zip(passes, runs)])
    metric = fidelity_metric(model, reference, metric)
    valid = _output_padding(feeds, reference, n) if metric in (COSINE, TOKEN) else None
    partitioner = Partitioner(model)
    batched = _sample_axis_tensors(model)
    round_trips: dict[tuple[str, str | None, float], list[np.ndarray]] = {}
    # Cuts still to come that send each activation: a coded tensor is kept until its last.
    uses_left = Counter((t.name, t.mask) for cut in cuts for t in cut.activations)
    centres: dict[str, Centre] = {}
    if centring:
        # Decided on the first run's first samples, at the loosest and the default sparsity.
        checked = sorted({min(sparsities), codec.sparsity})
        for t in {t.name: t for cut in cuts for t in cut.activations}.values():
            values = [tensors[t.name][0][:CENTRING_SAMPLES]]
            masks = [tensors[t.mask][0][:CENTRING_SAMPLES] if t.mask is not None else None]
            centre = choose_centre(values, lambda i, c, s: round_trip(
                values[i], dataclasses.replace(codec, sparsity=s), group, masks[i], c), checked)
            if centre is not None:
                centres[t.name] = centre

    def coded(t, sparsity: float) -> list[np.ndarray]:
        """A tensor through the codec (per run), once per sparsity however many cuts it crosses."""
        key = (t.name, t.mask, sparsity)
        if key not in round_trips:
            cfg = dataclasses.replace(codec, sparsity=sparsity)
            masks = tensors[t.mask] if t.mask is not None else [None] * len(tensors[t.name])
            round_trips[key] = [round_trip(value, cfg, group, mask, centres.get(t.name))
                                for value, mask in zip(tensors[t.name], masks)]
        return round_trips[key]

    def feeds_at(cut: Cut, sparsity: float, index: int) -> dict[str, np.ndarray]:
        return {t.name: coded(t, sparsity)[index] if t.kind == "activation" else tensors[t.name][index]
                for t in cut.crossing}

    fidelity: dict[str, dict[str, float]] = {}
    for done, cut in enumerate(cuts):
        grid = sparsities if refine is None or cut.id in refine else [codec.sparsity]
        # Where the batch is free and every crossing tensor has the sample axis, all
        # sparsities run at once, stacked on it; otherwise one run per sparsity and run.
        stackable = not static and len(runs) == 1 and all(t.name in batched for t in cut.crossing)
        with OnnxrtRunner(partitioner.server_part(cut)) as server:
            if stackable:
                stacked = {name: np.concatenate([feeds_at(cut, s, 0)[name] for s in grid]) for name in cut.crossing_names}
                out = server.infer(stacked)[output_name]
                outputs = [out[i * n: (i + 1) * n] for i in range(len(grid))]
            else:
                outputs = [np.concatenate([server.infer(feeds_at(cut, s, i))[output_name][:count]
                                           for i, (_, count) in enumerate(runs)]) for s in grid]
        fidelity[cut.id] = {sparsity_key(s): score(metric, reference, out, valid) for s, out in zip(grid, outputs)}
        for t in cut.activations:
            uses_left[(t.name, t.mask)] -= 1
            if not uses_left[(t.name, t.mask)]:
                for s in grid:
                    round_trips.pop((t.name, t.mask, s), None)
        if progress:
            progress(done + 1, len(cuts))
    return Calibration(metric, n, tuple(sparsities), fidelity, centres)
