"""The compiler: model in, profiled and cut artifact with codec-equipped pairs out.

    load/export -> concretize -> find cuts -> per-node latency (measured or
    device model) -> split table -> calibrate (optional) -> Pareto pairs ->
    artifact directory (staged, moved into place when complete) -> report
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from slicer_compile import __version__
from slicer_compile.artifact import (
    ARTIFACT_ID_KEY,
    FULL_MODEL,
    SCHEMA_VERSION,
    SPLIT_ID_KEY,
    Artifact,
    SplitInfo,
    is_artifact_dir,
    load_model_file,
    sparsity_key,
    load_artifact,
    write_manifest,
)
from slicer_compile.backends.registry import BACKENDS, get_backend
from slicer_compile.calibrate import DEFAULT_SPARSITY_GRID, calibrate, load_calibration_inputs
from slicer_compile.codec import SlicerConfig, predict_bits
from slicer_compile.errors import ArtifactError, ConfigError, ModelError
from slicer_compile.frontend.onnx_model import (
    concretize,
    graph_inputs,
    load_onnx,
    model_sha256,
    normalise,
    resolve_input_shapes,
    tensor_types,
)
from slicer_compile.graph.codec_nodes import CodecLimits, add_decoders, add_encoders, set_metadata, strip_decoders
from slicer_compile.graph.cuts import Cut, CrossingTensor, GraphOrder, find_cuts, order_graph
from slicer_compile.graph.partition import Partitioner
from slicer_compile.profile.costs import NodeCost, node_costs
from slicer_compile.profile.devices import LOCAL_CPU, DeviceSpec, fit_device, get_device
from slicer_compile.profile.measure import Profile, measure_profile, profile_costs
from slicer_compile.storage import StagedDirectory, save_onnx_atomically, sha256_of

_log = logging.getLogger(__name__)

DEFAULT_SERVER_DEVICE = "a100"
#: Precisions an engine backend may be asked for (each backend says which it builds).
PRECISIONS = ("fp32", "fp16", "int8")

#: Progress callback: (stage description, done, total).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class CompileOptions:
    device: str = LOCAL_CPU
    server_device: str = DEFAULT_SERVER_DEVICE
    profile: str | Path | None = None
    calib: str | Path | None = None
    calib_samples: int = 64
    input_shapes: dict | None = None
    #: the fidelity metric (calibrate.METRICS); None: inferred from the output
    metric: str | None = None
    #: with calibration: code the residual from each activation's channel means where
    #: that codes clearly better (codec.centring)
    centring: bool = True
    codec: SlicerConfig = SlicerConfig()
    limits: CodecLimits = CodecLimits()
    sparsity_grid: tuple[float, ...] = DEFAULT_SPARSITY_GRID
    max_pairs: int = 8
    max_activations: int = 1
    warmup: int = 3
    runs: int = 10
    overwrite: bool = False
    #: a name of ``backends.registry.BACKENDS``: the ONNX pairs always; an engine backend
    #: also builds its engines per pair (TensorRT: edge.plan, server.plan, server_core.plan)
    backend: str = "onnxruntime"
    #: engine precision for backends that build engines: fp32, fp16 or int8 (the edge engine)
    precision: str = "fp16"

    def __post_init__(self):
        # The default sparsity is calibrated too (the report shows its fidelity), and the
        # encoder nodes accept the default knobs.
        if sparsity_key(self.codec.sparsity) not in {sparsity_key(s) for s in self.sparsity_grid}:
            object.__setattr__(self, "sparsity_grid", tuple(sorted({*self.sparsity_grid, self.codec.sparsity})))
        limits = self.limits
        loosest = dataclasses.replace(limits, min_sparsity=min(limits.min_sparsity, min(self.sparsity_grid)),
                                      max_blocks=max(limits.max_blocks, *self.codec.blocks),
                                      max_q_bits=max(limits.max_q_bits, self.codec.q_bits))
        object.__setattr__(self, "limits", loosest)
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


def compile_model(model, device: str = LOCAL_CPU, out_dir: str | Path = "out", calib: str | Path | None = None,
                  profile: str | Path | None = None, example_inputs: Sequence | None = None,
                  progress: Progress | None = None, **options) -> Artifact:
    """Compile a model into an artifact directory.

    Args:
        model: path to an .onnx file, an ``onnx.ModelProto``, or a ``torch.nn.Module``
            (then ``example_inputs`` are its forward's inputs).
        device: edge device name (``slicer-compile devices``); ``cpu`` measures this machine.
        out_dir: the artifact directory; must not exist or be empty (``overwrite=True`` replaces it).
        calib: an .npz of calibration inputs; measures fidelity per split and sparsity.
        profile: a profile JSON measured on the target (``slicer-compile profile``).
        **options: any field of :class:`CompileOptions`.
    Returns:
        The loaded artifact.
    """
    opts = CompileOptions(device=device, calib=calib, profile=profile, **options)
    progress = progress or (lambda stage, done, total: None)
    started = time.perf_counter()
    get_device(opts.server_device)  # fail on a bad name before any work
    edge_spec = get_device(opts.device)
    # Fails at once where the backend cannot build here (TensorRT, a GPU, the plugin library).
    backend = get_backend(opts.backend)
    engine_options = backend.check_build(opts.precision, opts.calib is not None)

    inputs = [p for p in (model, opts.calib, opts.profile) if isinstance(p, (str, Path))]
    destination = StagedDirectory(out_dir, overwrite=opts.overwrite, owned=is_artifact_dir, what="artifact",
                                  inputs=inputs)
    destination.check()  # a refused output directory costs nothing: before any work
    source_path, normalised = _front_end(model, example_inputs)
    feeds = load_calibration_inputs(opts.calib, normalised) if opts.calib else None
    input_shapes, shape_notes = resolve_input_shapes(normalised, opts.input_shapes, feeds)
    for line in shape_notes:  # the batch axis is routine; a size taken from the samples is worth a note
        _log.log(logging.INFO if line.startswith("batch axis") else logging.WARNING, "%s", line)
    concrete = _fill_unknown_shapes(concretize(normalised, input_shapes), feeds)
    cuts = find_cuts(concrete, opts.max_activations)
    order = order_graph(concrete)
    costs = node_costs(concrete, order.nodes)

    edge_latency, device_info = _edge_latencies(concrete, costs, opts, edge_spec, progress)
    server_spec = get_device(opts.server_device)
    server_latency = server_spec.predict(costs)

    calibration = None
    table = _split_table(cuts, order, costs, edge_latency, server_latency, concrete, opts, calibration)
    pareto = _pareto_ids(table, opts.max_pairs)  # on latency, memory and bytes: fidelity does not move it
    if feeds is not None:
        # Every split at the default sparsity (the table's column), the Pareto splits at every one.
        calibration = calibrate(normalised, cuts, feeds, opts.codec, opts.sparsity_grid, opts.calib_samples,
                                progress=lambda d, t: progress("calibrating", d, t), metric=opts.metric,
                                refine=set(pareto), centring=opts.centring)
        cuts = [calibration.centred_cut(cut) for cut in cuts]
        table = _split_table(cuts, order, costs, edge_latency, server_latency, concrete, opts, calibration)
    model_bytes = normalised.SerializeToString()
    artifact_id = hashlib.sha256(model_bytes + repr(sorted(asdict(opts).items())).encode()).hexdigest()[:16]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "tool_version": __version__,
        "artifact_id": artifact_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {"path": str(source_path), "sha256": hashlib.sha256(model_bytes).hexdigest()},
        "device": device_info,
        "server_device": {**server_spec.as_dict(), "latency_source": "roofline model"},
        "backend": opts.backend,
        "engine": backend.manifest_section(engine_options) if engine_options is not None else None,
        "inputs": [_value_info(concrete, i.name) for i in graph_inputs(concrete)],
        "shape_notes": shape_notes,
        "outputs": [_value_info(concrete, o.name) for o in concrete.graph.output],
        "codec": {"name": "slicer", "defaults": opts.codec.as_dict(), "limits": asdict(opts.limits),
                  "sparsity_grid": list(opts.sparsity_grid)},
        "calibration": calibration.as_dict() if calibration else {
            "status": "none", "reason": "compiled without --calib: fidelity is unknown"},
        "splits": [row.as_dict() for row in table],
        "pareto": pareto,
        "compile_seconds": None,
    }

    with destination as staging:
        (staging / FULL_MODEL).write_bytes(model_bytes)
        artifact = Artifact(staging, manifest, table)
        partitioner = Partitioner(normalised)
        for done, split_id in enumerate(pareto):
            _materialize_into(artifact, partitioner, split_id)
            progress("materialising split pairs", done + 1, len(pareto))
        if engine_options is not None:
            engine_feeds = _int8_feeds(feeds, opts) if opts.precision == "int8" else None
            for done, split_id in enumerate(pareto):
                _build_engines(artifact, backend, split_id, engine_options, engine_feeds)
                progress(f"building {backend.name} engines", done + 1, len(pareto))
        manifest["compile_seconds"] = round(time.perf_counter() - started, 3)
        write_manifest(staging, manifest)
        from slicer_compile.report import write_report

        write_report(load_artifact(staging))
    return load_artifact(out_dir)


def _front_end(model, example_inputs):
    """(source description, normalised ONNX model) from a path, a ModelProto or a torch module."""
    if isinstance(model, (str, Path)):
        return Path(model), load_onnx(model)
    if hasattr(model, "graph") and hasattr(model, "SerializeToString"):
        return "<onnx.ModelProto>", normalise(model)
    if hasattr(model, "forward") and hasattr(model, "parameters"):
        if example_inputs is None:
            raise ModelError("compiling a torch module needs example_inputs")
        from slicer_compile.frontend.torch_export import export_torch

        return f"<torch {type(model).__name__}>", normalise(export_torch(model, example_inputs))
    raise ModelError(f"cannot compile a {type(model).__name__}: give an .onnx path, an onnx.ModelProto or a torch module")


def _edge_latencies(concrete, costs: list[NodeCost], opts: CompileOptions, edge_spec: DeviceSpec,
                    progress: Progress) -> tuple[np.ndarray, dict]:
    """Per-node edge latency: from a given profile, measured here (cpu), or the device model."""
    if opts.profile is not None:
        prof = Profile.load(opts.profile)
        if prof.model_sha256 != model_sha256(concrete):
            raise ModelError(f"profile {opts.profile} was measured on another model (or other input shapes)")
        by_node = prof.latency_by_node()
        spec = fit_device(edge_spec, profile_costs(prof), [n.latency_s for n in prof.nodes])
        info = {**spec.as_dict(), "description": prof.device_description or prof.device,
                "latency_source": f"measured profile {Path(opts.profile).name}"}
        return np.array([by_node.get(c.name, 0.0) for c in costs]), info
    if opts.device == LOCAL_CPU:
        prof = measure_profile(concrete, warmup=opts.warmup, runs=opts.runs,
                               progress=lambda d, t: progress("profiling on this CPU", d, t))
        by_node = prof.latency_by_node()
        spec = fit_device(edge_spec, profile_costs(prof), [n.latency_s for n in prof.nodes])
        info = {**spec.as_dict(), "latency_source": f"measured with ONNX Runtime ({opts.runs} runs, median)"}
        return np.array([by_node.get(c.name, 0.0) for c in costs]), info
    info = {**edge_spec.as_dict(), "latency_source": "roofline model (datasheet peaks, prior efficiencies)"}
    return edge_spec.predict(costs), info


def _live_activation_peaks(concrete, order: GraphOrder) -> np.ndarray:
    """peak[p]: the most activation bytes alive at once while running the first p nodes.

    A tensor needed after the prefix stays alive to its end, exactly as it
    does in a full run, so one pass over the full order gives every prefix.
    """
    types = tensor_types(concrete)

    def nbytes(name):
        shape, dtype = types.get(name, (None, None))
        return 0 if shape is None or None in shape else math.prod(shape) * np.dtype(dtype).itemsize

    last_use = {}
    for pos, node in enumerate(order.nodes):
        for name in node.input:
            last_use[name] = pos
    for out in concrete.graph.output:
        last_use[out.name] = len(order.nodes)
    live = {i.name: nbytes(i.name) for i in graph_inputs(concrete)}
    peaks = [sum(live.values())]
    for pos, node in enumerate(order.nodes):
        for name in node.output:
            if name and name not in order.static_tensors:
                live[name] = nbytes(name)
        peaks.append(max(peaks[-1], sum(live.values())))
        live = {n: b for n, b in live.items() if last_use.get(n, -1) > pos}
    return np.array(peaks)


def _split_table(cuts: list[Cut], order: GraphOrder, costs: list[NodeCost], edge_latency: np.ndarray,
                 server_latency: np.ndarray, concrete, opts: CompileOptions, calibration) -> list[SplitInfo]:
    edge_cum = np.concatenate([[0.0], np.cumsum(edge_latency)])
    server_cum = np.concatenate([[0.0], np.cumsum(server_latency)])
    flops_cum = np.concatenate([[0.0], np.cumsum([c.flops for c in costs])])
    weights_cum = np.concatenate([[0], np.cumsum([c.weight_bytes for c in costs])])
    peaks = _live_activation_peaks(concrete, order)
    rows = []
    for cut in cuts:
        p = cut.position
        activations = cut.activations
        bounds = {sparsity_key(s): int(sum(math.ceil(predict_bits(t.shape, dataclasses.replace(opts.codec, sparsity=s)) / 8)
                                    for t in activations)) for s in opts.sparsity_grid}
        bounds.setdefault(sparsity_key(opts.codec.sparsity), int(sum(
            math.ceil(predict_bits(t.shape, opts.codec) / 8) for t in activations)))
        limit = sum(opts.limits.payload_bytes(t.shape) for t in activations)
        codec_buffer = limit + sum(t.nbytes for t in activations)
        rows.append(SplitInfo(
            id=cut.id, position=p, crossing=tuple(cut.crossing),
            edge_latency_s=float(edge_cum[p]), server_latency_s=float(server_cum[-1] - server_cum[p]),
            edge_memory_bytes=int(weights_cum[p] + peaks[p] + codec_buffer),
            edge_flops=float(flops_cum[p]), server_flops=float(flops_cum[-1] - flops_cum[p]),
            if_shape=tuple(max(activations or cut.crossing, key=lambda t: t.nbytes).shape),
            if_bytes=int(sum(t.nbytes for t in cut.crossing)),
            payload_bound_bytes=bounds, payload_bytes_limit=int(limit),
            fidelity=calibration.fidelity.get(cut.id) if calibration else None, files=None,
        ))
    return rows


def _pareto_ids(table: list[SplitInfo], max_pairs: int) -> list[str]:
    """Splits worth materialising: no deeper split is at least as good on edge
    latency, edge memory and payload. At most ``max_pairs``, spread over depth,
    always keeping the shallowest (cloud-only) and the deepest."""
    front = []
    for a in table:
        dominated = any(
            b.position > a.position and b.edge_latency_s <= a.edge_latency_s
            and b.edge_memory_bytes <= a.edge_memory_bytes
            and b.payload_bytes_limit + b.side_bytes <= a.payload_bytes_limit + a.side_bytes  # all bytes sent
            for b in table)
        if not dominated:
            front.append(a)
    if len(front) > max_pairs:
        picks = np.unique(np.round(np.linspace(0, len(front) - 1, max_pairs)).astype(int))
        front = [front[i] for i in picks]
    return [s.id for s in front]


def _value_info(model, name: str) -> dict:
    shape, dtype = tensor_types(model)[name]
    return {"name": name, "shape": list(shape) if shape else None, "dtype": str(dtype)}


def _fill_unknown_shapes(concrete, feeds: dict | None):
    """Shapes ONNX's inference cannot follow (run-time shape arithmetic: ``Shape ->
    Cast -> Mul -> Concat -> Reshape``) taken from one run of the model in ONNX Runtime
    on an example input (the first calibration batch, else generated inputs); where
    inference did give a dimension, the run must agree with it.

    Without this, every cut past such a chain is dropped (its tensors cannot be sized).
    """
    import onnx

    from slicer_compile.backends.registry import RunSettings
    from slicer_compile.frontend.onnx_model import example_feeds

    order = order_graph(concrete)
    types = tensor_types(concrete)
    unknown = [name for node in order.nodes for name in node.output
               if name and (types.get(name, (None, None))[0] is None or None in types[name][0])]
    if not unknown:
        return concrete
    inputs = graph_inputs(concrete)
    specs = [(i.name, *types[i.name]) for i in inputs]
    if feeds is not None:
        example = {name: feeds[name][: shape[0]] for name, shape, _ in specs}
        if any(len(example[name]) != shape[0] for name, shape, _ in specs):
            example = example_feeds(specs)  # fewer samples than a static batch: generated inputs
    else:
        example = example_feeds(specs)
    probe = onnx.ModelProto.FromString(concrete.SerializeToString())
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in unknown)
    with get_backend("onnxruntime").open(probe, "shape probe", RunSettings(optimize=False)) as runner:
        values = runner.infer(example)
    filled = onnx.ModelProto.FromString(concrete.SerializeToString())
    known = {v.name: v for v in filled.graph.value_info}
    for name in unknown:
        value = values[name]
        inferred = types.get(name, (None, None))[0]
        if inferred is not None and len(inferred) == value.ndim and any(
                d is not None and d != v for d, v in zip(inferred, value.shape)):
            raise ModelError(f"tensor {name}: shape inference says {inferred}, a run of the model gives "
                             f"{value.shape}")
        info = onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype),
                                                  list(value.shape))
        if name in known:
            known[name].CopyFrom(info)
        else:
            filled.graph.value_info.append(info)
    for output in filled.graph.output:
        if output.name in values:
            output.type.tensor_type.shape.CopyFrom(
                onnx.helper.make_tensor_type_proto(1, list(values[output.name].shape)).tensor_type.shape)
    _log.info("%d tensor shape(s) ONNX's inference left open were taken from a run of the model", len(unknown))
    return filled


def _cut_of(info: SplitInfo) -> Cut:
    return Cut(info.id, info.position, tuple(info.crossing))


def _materialize_into(artifact: Artifact, partitioner: Partitioner, split_id: str) -> SplitInfo:
    """Write splits/<id>/edge.onnx and server.onnx (codec inserted) and record them."""
    import onnx

    info = artifact.split(split_id)
    cut = _cut_of(info)
    codec = artifact.codec
    limits = CodecLimits(codec.min_sparsity, codec.max_blocks, codec.max_q_bits)
    pair = partitioner.split(cut)
    edge, server = add_encoders(pair.edge, cut, limits), add_decoders(pair.server, cut)
    split_dir = artifact.path / "splits" / split_id
    split_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for part, model in (("edge", edge), ("server", server)):
        set_metadata(model, **{ARTIFACT_ID_KEY: artifact.id, SPLIT_ID_KEY: split_id})
        onnx.checker.check_model(model)
        files[part] = f"splits/{split_id}/{part}.onnx"
        save_onnx_atomically(model, artifact.path / files[part])
    return artifact.update_split(split_id, files=files, digests=_digests(artifact, files))


def _digests(artifact: Artifact, files: dict) -> dict:
    """SHA-256 of each part just written: a part is code-like (custom ops, engine
    plans), so what is loaded later is checked against it."""
    return {key: sha256_of(artifact.path / relative) for key, relative in files.items()}


def _int8_feeds(feeds: dict, opts: CompileOptions):
    """INT8 calibration batches for edge engines: the calibration inputs, one sample
    at a time, plus the default knobs."""
    from slicer_compile.codec.ops import KNOBS_INPUT, knobs_tensor

    count = min(len(next(iter(feeds.values()))), opts.calib_samples)
    knobs = knobs_tensor(opts.codec)
    return [{**{name: value[i: i + 1] for name, value in feeds.items()}, KNOBS_INPUT: knobs} for i in range(count)]


def _build_engines(artifact: Artifact, backend, split_id: str, options, calibration) -> SplitInfo:
    """The backend's engines beside a materialised pair, recorded in the manifest."""
    import onnx

    info = artifact.split(split_id)
    split_dir = artifact.path / "splits" / split_id
    server_core = strip_decoders(artifact.load_part_model(split_id, "server"), list(info.crossing))
    built = backend.build_split(split_dir, server_core, options, calibration=calibration)
    files = {**(info.files or {}), **{key: f"splits/{split_id}/{path.name}" for key, path in built.items()}}
    return artifact.update_split(split_id, files=files, digests=_digests(artifact, files))


def materialize(out_dir: str | Path, split_id: str) -> SplitInfo:
    """Materialise one more split pair in an existing artifact (``slicer-compile materialize``)."""
    import onnx

    artifact = load_artifact(out_dir)
    info = artifact.split(split_id)
    if info.files and all((artifact.path / f).is_file() for f in info.files.values()):
        return info
    model_path = artifact.confined(FULL_MODEL)
    if not model_path.is_file():
        raise ArtifactError(f"{out_dir} has no {FULL_MODEL} to cut")
    backend = get_backend(artifact.manifest.get("backend", "onnxruntime"))
    engine = artifact.manifest.get("engine")
    options = None
    if engine:  # check before writing anything
        if engine["precision"] == "int8":
            raise ConfigError(f"materialising a split of an INT8 {backend.name} artifact needs its calibration "
                              "inputs: recompile with a larger --max-pairs")
        options = backend.check_build(engine["precision"], False, artifact.path)
    updated = _materialize_into(artifact, Partitioner(load_model_file(model_path)), split_id)
    if options is not None:
        updated = _build_engines(artifact, backend, split_id, options, None)
    write_manifest(artifact.path, artifact.manifest)
    return updated


def capture_activations(model, calib: str | Path | None = None, samples: int = 4, max_tensors: int = 4
                        ) -> dict[str, list[np.ndarray]]:
    """The tensors a split of ``model`` would send: the major activation of up to
    ``max_tensors`` cuts spread over its depth, for ``samples`` inputs (the calibration
    samples, else generated ones), one array per sample — what ``bench rd`` codes.

    Raises:
        ModelError: a model that cannot be read or has no valid cut.
    """
    from slicer_compile.backends.registry import RunSettings
    from slicer_compile.calibrate import with_outputs
    from slicer_compile.frontend.onnx_model import example_feeds

    _, normalised = _front_end(model, None)
    feeds = load_calibration_inputs(calib, normalised) if calib else None
    input_shapes, _ = resolve_input_shapes(normalised, None, feeds)
    shapes = {name: (1, *shape[1:]) for name, shape in input_shapes.items()}  # one sample per run
    concrete = _fill_unknown_shapes(concretize(normalised, shapes), None)
    names = list(dict.fromkeys(t.name for cut in find_cuts(concrete) for t in cut.activations
                               if t.name not in shapes))
    picked = [names[i] for i in sorted({round(j * (len(names) - 1) / max(max_tensors - 1, 1))
                                        for j in range(min(max_tensors, len(names)))})] if names else []
    types = tensor_types(concrete)
    specs = [(i.name, *types[i.name]) for i in graph_inputs(concrete)]
    captured: dict[str, list[np.ndarray]] = {name: [] for name in picked}
    with get_backend("onnxruntime").open(with_outputs(concrete, picked), "capture", RunSettings()) as runner:
        for s in range(samples):
            feed = ({name: feeds[name][s % len(feeds[name])][None] for name, _, _ in specs} if feeds is not None
                    else example_feeds(specs, seed=s))
            out = runner.infer(feed)
            for name in picked:
                captured[name].append(np.ascontiguousarray(out[name], dtype=np.float32))
    return captured
