"""compile, profile, inspect, materialize, devices, backends, build-kernels."""

from __future__ import annotations

from pathlib import Path

import click

from slicer_compile.cli.options import (
    POSITIVE,
    InputShape,
    SLICER_KNOBS,
    artifact_argument,
    backend_option,
    chosen_knobs,
    codec_knob_options,
    json_option,
    shapes_dict,
    verbosity_options,
)
from slicer_compile.cli.output import Column, Progress, print_json, print_table, stderr_console
from slicer_compile.errors import SlicerCompileError

#: calibrate.METRICS' names, here so that the CLI starts without numpy (a test keeps them equal).
METRIC_NAMES = ("top1_agreement", "cosine_similarity", "mask_iou", "token_agreement", "neighbour_agreement")


def print_split_table(artifact) -> None:
    from slicer_compile.report import split_table, split_table_notes

    header, rows = split_table(artifact)
    print_table(f"splits of {Path(artifact.manifest['source']['path']).name} on {artifact.manifest['device']['name']}",
                [Column(name, keep) for name, keep in header], rows, caption=split_table_notes(artifact))


def require_backend(backend: str) -> None:
    """Fail with what is missing (TensorRT, a GPU, cuda-python, the plugin library)
    before any work when a backend cannot run here."""
    from slicer_compile.backends.registry import get_backend

    get_backend(backend).require()


@click.command("compile")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", default="out", show_default=True, type=click.Path(path_type=Path),
              help="Artifact directory to create.")
@click.option("--device", default="cpu", show_default=True,
              help="Edge device (see: slicer-compile devices); cpu measures this machine.")
@backend_option("Engine backend: tensorrt also builds edge.plan/server.plan per pair (needs TensorRT and a GPU).")
@click.option("--precision", default="fp16", show_default=True, type=click.Choice(["fp32", "fp16", "int8"]),
              help="TensorRT engine precision (int8: the edge engines, calibrated on --calib).")
@click.option("--server-device", default="a100", show_default=True, help="Server GPU model for server latency.")
@click.option("--profile", "profile_path", type=click.Path(path_type=Path), help="Profile measured on the target.")
@click.option("--calib", "calib_path", type=click.Path(path_type=Path),
              help="Calibration inputs: an .npz with one array per model input, samples on the first axis.")
@click.option("--calib-samples", default=64, show_default=True, type=POSITIVE, help="Calibration samples used at most.")
@click.option("--metric", type=click.Choice(METRIC_NAMES),
              help="Fidelity metric (default: inferred from the output: top1 for class logits, cosine for "
                   "embeddings, mask IoU for dense maps, token agreement for per-position logits; "
                   "neighbour_agreement scores embeddings for retrieval).")
@click.option("--centring/--no-centring", default=True, show_default=True,
              help="With --calib: code an activation as its residual from per-channel means where that codes "
                   "clearly better (tensors after an affine layer, with channel offsets).")
@click.option("--input-shape", "input_shapes", multiple=True, type=InputShape(),
              help="Size a symbolic input: NAME=1x3x224x224 (else the --calib samples' size; a symbolic batch is 1).")
@click.option("--max-pairs", default=8, show_default=True, type=POSITIVE, help="Split pairs materialised at most.")
@click.option("--runs", default=10, show_default=True, type=POSITIVE, help="Timed profiling runs (cpu).")
@click.option("--force", is_flag=True,
              help="Replace the output directory if it is an artifact slicer-compile wrote (never anything else).")
@codec_knob_options(SLICER_KNOBS)
@verbosity_options
def compile_command(model_path: Path, out_dir: Path, device: str, backend: str, precision: str, server_device: str,
                    profile_path: Path | None, calib_path: Path | None, calib_samples: int, metric: str | None,
                    centring: bool, input_shapes, max_pairs: int, runs: int, force: bool, **knobs) -> None:
    """Compile MODEL.onnx into paired edge/server parts with the codec, a manifest and a report.

    The codec knobs set the artifact's defaults (the report's payload bounds and the
    knobs a client starts from); --sparsity also joins the calibrated grid."""
    from slicer_compile.codec import SlicerConfig
    from slicer_compile.compiler import compile_model
    from slicer_compile.report import REPORT

    if not model_path.is_file():
        raise SlicerCompileError(f"no such model file: {model_path}")
    require_backend(backend)
    with Progress() as progress:
        artifact = compile_model(model_path, device=device, out_dir=out_dir, calib=calib_path, profile=profile_path,
                                 server_device=server_device, calib_samples=calib_samples,
                                 input_shapes=shapes_dict(input_shapes), max_pairs=max_pairs, runs=runs,
                                 overwrite=force, backend=backend, precision=precision, progress=progress,
                                 codec=SlicerConfig(**chosen_knobs(knobs)), metric=metric, centring=centring)
    print_split_table(artifact)
    click.echo(f"wrote {out_dir}/ ({len(artifact.splits)} splits, {len(artifact.pareto)} pairs materialised, "
               f"{artifact.manifest['compile_seconds']:.1f} s); read {out_dir}/{REPORT}")


@click.command("profile")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Profile JSON.")
@click.option("--input-shape", "input_shapes", multiple=True, type=InputShape(),
              help="Pin an input shape: NAME=1x3x224x224.")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(min=0))
@click.option("--runs", default=20, show_default=True, type=POSITIVE)
@backend_option("onnxruntime: the CPU, one event per node; tensorrt: this GPU, per engine layer (IProfiler).")
@click.option("--precision", default="fp16", show_default=True, type=click.Choice(["fp32", "fp16"]),
              help="TensorRT engine precision.")
@verbosity_options
def profile_command(model_path: Path, output: Path, input_shapes, warmup: int, runs: int, backend: str,
                    precision: str) -> None:
    """Measure per-node latency and memory of MODEL.onnx on this machine (run it on the target)."""
    from slicer_compile.frontend import concretize, load_onnx
    from slicer_compile.profile.by_backend import measure_on_backend
    from slicer_compile.storage import atomic_path

    require_backend(backend)
    model = concretize(load_onnx(model_path), shapes_dict(input_shapes))
    with Progress() as progress:
        prof = measure_on_backend(model, backend, warmup=warmup, runs=runs, precision=precision,
                                  progress=lambda d, t: progress("profiling", d, t))
    with atomic_path(output) as tmp:
        prof.save(tmp)
    click.echo(f"{len(prof.nodes)} nodes, {prof.total_latency_s * 1e3:.3f} ms per run -> {output}")


@click.command("inspect")
@artifact_argument
@click.option("--plots/--no-plots", default=True, show_default=True, help="Rewrite report.md and plots/.")
@json_option("the split table")
@verbosity_options
def inspect_command(artifact_dir: Path, plots: bool, as_json: bool) -> None:
    """Show an artifact's split table (and rewrite its report and plots); an LLM
    artifact's cut table per generated token."""
    from slicer_compile.artifact import load_artifact
    from slicer_compile.report import write_report

    from slicer_compile.llm.artifact import is_llm_artifact_dir

    if is_llm_artifact_dir(artifact_dir):
        _inspect_llm(artifact_dir, plots, as_json)
        return
    artifact = load_artifact(artifact_dir)
    if as_json:
        m = artifact.manifest
        print_json({"artifact_id": artifact.id, "source": m["source"], "device": m["device"],
                    "server_device": m["server_device"], "calibration": m["calibration"], "codec": m["codec"],
                    "pareto": artifact.pareto, "splits": [s.as_dict() for s in artifact.splits]})
    else:
        print_split_table(artifact)
    if plots:
        written = write_report(artifact)
        click.echo(f"wrote {written}", err=as_json)


def _inspect_llm(path: Path, report: bool, as_json: bool) -> None:
    from slicer_compile.cli.llm_commands import print_cut_table
    from slicer_compile.llm.artifact import load_llm_artifact
    from slicer_compile.llm.report import write_llm_report

    artifact = load_llm_artifact(path)
    if as_json:
        m = artifact.manifest
        print_json({k: m[k] for k in ("artifact_id", "kind", "source", "architecture", "max_tokens", "device",
                                      "server_device", "weights", "cuts")})
    else:
        print_cut_table(artifact)
    if report:
        click.echo(f"wrote {write_llm_report(artifact)}", err=as_json)


@click.command("materialize")
@artifact_argument
@click.option("--split", "split_id", required=True, help="Split id from the split table.")
@verbosity_options
def materialize_command(artifact_dir: Path, split_id: str) -> None:
    """Write the edge/server pair of one more split into an artifact."""
    from slicer_compile.compiler import materialize

    info = materialize(artifact_dir, split_id)
    click.echo(f"{split_id}: {artifact_dir / info.files['edge']}, {artifact_dir / info.files['server']}")


@click.command("backends")
@verbosity_options
def backends_command() -> None:
    """What each backend needs on this machine: what is there, what is missing."""
    import onnxruntime

    from slicer_compile.backends.tensorrt.availability import report

    rows = [["onnxruntime (CPU)", "yes", onnxruntime.__version__]]
    rows += [[component, "yes" if usable else "no", detail] for component, usable, detail in report()]
    print_table("backends on this machine", [Column("component", 100, "left"), Column("usable", 90, "left"),
                                             Column("detail", 80, "left")], _escaped(rows))


def _escaped(rows):
    from rich.markup import escape

    return [[escape(cell) for cell in row] for row in rows]  # "[gpu]" is not markup


@click.command("devices")
@verbosity_options
def devices_command() -> None:
    """List the device profiles known to --device."""
    from slicer_compile.profile.devices import device_aliases, get_device, known_devices

    aliases = device_aliases()
    rows = []
    for name in known_devices():
        if name in aliases:
            continue
        spec = get_device(name)
        alias = [a for a, target in aliases.items() if target == name]
        rows.append([name + (f" ({', '.join(alias)})" if alias else ""), spec.description,
                     f"{spec.peak_flops / 1e12:.2f}", f"{spec.memory_bandwidth / 1e9:.1f}",
                     f"{spec.memory_bytes / 2**30:.1f}", spec.precision])
    columns = [Column("name", 100, "left"), Column("description", 10, "left"), Column("peak TFLOP/s", 80),
               Column("bandwidth GB/s", 70), Column("memory GiB", 90), Column("precision", 60, "left")]
    print_table("device profiles", columns, rows)


@click.command("build-kernels")
@click.option("--source", "source_dir", type=click.Path(file_okay=False, path_type=Path),
              help="The slicer-compile source tree (default: the one this package was installed from, if present).")
@click.option("--build-dir", type=click.Path(path_type=Path), help="CMake build directory (default: build/cuda).")
@click.option("--cuda/--host-only", default=True, show_default=True, help="Also build the CUDA library (needs nvcc).")
@click.option("-j", "--jobs", default=2, show_default=True, type=POSITIVE)
@click.option("--plugins", is_flag=True,
              help="Also build plugins/ (libslicer_trt_plugins.so; needs TensorRT headers: $TENSORRT_ROOT).")
@verbosity_options
def build_kernels_command(source_dir: Path | None, build_dir: Path | None, cuda: bool, jobs: int,
                          plugins: bool) -> None:
    """Build cuda/: libslicer_host.so, and libslicer_cuda.so for sm_75..sm_90 (sm_87 = Jetson Orin).

    Needs the source tree (cuda/, plugins/): an editable install (pip install -e .)
    finds it; after pip install . give it with --source."""
    from slicer_compile.codec.native import build_kernels, default_build_dir

    build_dir = build_dir or default_build_dir(source_dir)
    with stderr_console().status("building kernels (nvcc, six architectures: about a minute)"):
        libraries = build_kernels(build_dir, cuda=cuda, jobs=jobs, source=source_dir)
    for kind, path in libraries.items():
        click.echo(f"{kind}: {path}")
    if cuda and "cuda" not in libraries:
        click.echo("nvcc was not found: only the host library was built", err=True)
    if plugins:
        from slicer_compile.backends.tensorrt.availability import build_plugins

        with stderr_console().status("building the TensorRT plugins"):
            click.echo(f"plugins: {build_plugins(build_dir.parent / 'plugins', jobs=jobs, source=source_dir)}")


COMMANDS = [compile_command, profile_command, inspect_command, materialize_command, backends_command,
            devices_command, build_kernels_command]
