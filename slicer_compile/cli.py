"""The ``slicer-compile`` command line. Nothing in the package imports this module.

Every failure a user can cause (a missing file, a bad knob, a corrupt payload)
ends as one line on stderr and a non-zero exit code, never a traceback; set
SLICER_DEBUG=1 to see the traceback anyway.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
from pathlib import Path

import click
import numpy as np

from slicer_compile import __version__
from slicer_compile.errors import SlicerCompileError

#: Exit codes: 1 for a failure of the job, 2 for a bad command line.
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _parse_list(text: str, kind, what: str) -> list:
    try:
        return [kind(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise click.UsageError(f"{what} must be a comma-separated list of numbers, got {text!r}") from None


class _CompileByDefault(click.Group):
    """``slicer-compile MODEL.onnx ...`` means ``slicer-compile compile MODEL.onnx ...``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["compile", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_CompileByDefault, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="slicer-compile")
def cli() -> None:
    """Split a DNN between edge devices and a shared GPU server, with a compressing
    codec for the intermediate feature.

    \b
    slicer-compile MODEL.onnx --device jetson -o out/   compile (same as: compile MODEL.onnx ...)
    slicer-compile devices                              device profiles known
    slicer-compile profile MODEL.onnx -o prof.json      measure per-node latency here
    slicer-compile inspect out/                         the split table
    slicer-compile select out/ --bandwidth 10MHz ...    split and knobs for a channel
    slicer-compile serve out/ | run out/ --server ...   run the split for real
    """


# --- compile -------------------------------------------------------------------


def _parse_shapes(specs: tuple[str, ...]) -> dict | None:
    shapes = {}
    for spec in specs:
        name, sep, dims = spec.partition("=")
        try:
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            sep = ""
        if not sep or not name:
            raise click.UsageError(f"--input-shape takes NAME=DxDxD, got {spec!r}")
    return shapes or None


class _Progress:
    """A rich progress bar for the compiler's stages."""

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), transient=True, console=_stderr_console())
        self._progress.__enter__()
        self._tasks = {}
        return self

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=total)
        self._progress.update(self._tasks[stage], completed=done, total=total)

    def __exit__(self, *exc):
        self._progress.__exit__(*exc)


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


@cli.command("compile")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", default="out", show_default=True, type=click.Path(path_type=Path),
              help="Artifact directory to create.")
@click.option("--device", default="cpu", show_default=True,
              help="Edge device (see: slicer-compile devices); cpu measures this machine.")
@click.option("--backend", default="onnxruntime", show_default=True, type=click.Choice(["onnxruntime", "tensorrt"]),
              help="Engine backend: tensorrt also builds edge.plan/server.plan per pair (needs TensorRT and a GPU).")
@click.option("--precision", default="fp16", show_default=True, type=click.Choice(["fp32", "fp16", "int8"]),
              help="TensorRT engine precision (int8: the edge engines, calibrated on --calib).")
@click.option("--server-device", default="a100", show_default=True, help="Server GPU model for server latency.")
@click.option("--profile", "profile_path", type=click.Path(path_type=Path), help="Profile measured on the target.")
@click.option("--calib", "calib_path", type=click.Path(path_type=Path), help="Calibration inputs (.npz).")
@click.option("--calib-samples", default=64, show_default=True, help="Calibration samples used at most.")
@click.option("--input-shape", "input_shapes", multiple=True, help="Pin an input shape: NAME=1x3x224x224.")
@click.option("--max-pairs", default=8, show_default=True, help="Split pairs materialised at most.")
@click.option("--runs", default=10, show_default=True, help="Timed profiling runs (cpu).")
@click.option("--force", is_flag=True, help="Replace the output directory if it exists.")
def compile_command(model_path: Path, out_dir: Path, device: str, backend: str, precision: str, server_device: str,
                    profile_path: Path | None, calib_path: Path | None, calib_samples: int,
                    input_shapes: tuple[str, ...], max_pairs: int, runs: int, force: bool) -> None:
    """Compile MODEL.onnx into paired edge/server parts with the codec, a manifest and a report."""
    from slicer_compile.compiler import compile_model
    from slicer_compile.report import REPORT

    _require_backend(backend)
    with _Progress() as progress:
        artifact = compile_model(model_path, device=device, out_dir=out_dir, calib=calib_path, profile=profile_path,
                                 server_device=server_device, calib_samples=calib_samples,
                                 input_shapes=_parse_shapes(input_shapes), max_pairs=max_pairs, runs=runs,
                                 overwrite=force, backend=backend, precision=precision, progress=progress)
    _print_split_table(artifact)
    click.echo(f"wrote {out_dir}/ ({len(artifact.splits)} splits, {len(artifact.pareto)} pairs materialised, "
               f"{artifact.manifest['compile_seconds']:.1f} s); read {out_dir}/{REPORT}")


def _print_split_table(artifact) -> None:
    from rich.console import Console
    from rich.table import Table

    from slicer_compile.report import TABLE_HEADER, split_table_rows

    table = Table(title=f"splits of {Path(artifact.manifest['source']['path']).name} "
                        f"on {artifact.manifest['device']['name']} (* = materialised)")
    for column in TABLE_HEADER:
        table.add_column(column, justify="right")
    for row in split_table_rows(artifact):
        table.add_row(*row)
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _require_backend(backend: str) -> None:
    """Fail with what is missing (TensorRT, a GPU, cuda-python, the plugin library)
    before any work when a backend cannot run here."""
    if backend == "tensorrt":
        from slicer_compile.backends.tensorrt.availability import require_tensorrt

        require_tensorrt()


@cli.command("backends")
def backends_command() -> None:
    """What each backend needs on this machine: what is there, what is missing."""
    import onnxruntime
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from slicer_compile.backends.tensorrt.availability import report

    table = Table(title="backends on this machine")
    for column in ("component", "usable", "detail"):
        table.add_column(column)
    table.add_row("onnxruntime (CPU)", "yes", onnxruntime.__version__)
    for component, usable, detail in report():
        table.add_row(component, "yes" if usable else "no", escape(detail))  # "[gpu]" is not markup
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@cli.command("devices")
def devices_command() -> None:
    """List the device profiles known to --device."""
    from rich.console import Console
    from rich.table import Table

    from slicer_compile.profile.devices import device_aliases, get_device, known_devices

    aliases = device_aliases()
    table = Table(title="device profiles")
    for column in ("name", "description", "peak TFLOP/s", "bandwidth GB/s", "memory GiB", "precision"):
        table.add_column(column)
    for name in known_devices():
        if name in aliases:
            continue
        spec = get_device(name)
        alias = [a for a, target in aliases.items() if target == name]
        table.add_row(name + (f" ({', '.join(alias)})" if alias else ""), spec.description,
                      f"{spec.peak_flops / 1e12:.2f}", f"{spec.memory_bandwidth / 1e9:.1f}",
                      f"{spec.memory_bytes / 2**30:.1f}", spec.precision)
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@cli.command("profile")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Profile JSON.")
@click.option("--input-shape", "input_shapes", multiple=True, help="Pin an input shape: NAME=1x3x224x224.")
@click.option("--warmup", default=3, show_default=True)
@click.option("--runs", default=20, show_default=True)
@click.option("--backend", default="onnxruntime", show_default=True, type=click.Choice(["onnxruntime", "tensorrt"]),
              help="onnxruntime: the CPU, one event per node; tensorrt: this GPU, per engine layer (IProfiler).")
@click.option("--precision", default="fp16", show_default=True, type=click.Choice(["fp32", "fp16"]),
              help="TensorRT engine precision.")
def profile_command(model_path: Path, output: Path, input_shapes: tuple[str, ...], warmup: int, runs: int,
                    backend: str, precision: str) -> None:
    """Measure per-node latency and memory of MODEL.onnx on this machine (run it on the target)."""
    from slicer_compile.frontend import concretize, load_onnx
    from slicer_compile.profile.devices import local_cpu
    from slicer_compile.profile.measure import measure_profile

    _require_backend(backend)
    model = concretize(load_onnx(model_path), _parse_shapes(input_shapes))
    with _Progress() as progress:
        if backend == "tensorrt":
            from slicer_compile.profile.measure_tensorrt import local_gpu_description, measure_profile_tensorrt

            prof = measure_profile_tensorrt(model, "gpu", local_gpu_description(), warmup=warmup, runs=runs,
                                            precision=precision, progress=lambda d, t: progress("profiling", d, t))
        else:
            prof = measure_profile(model, "cpu", local_cpu().description, warmup=warmup, runs=runs,
                                   progress=lambda d, t: progress("profiling", d, t))
    with _atomic_path(output) as tmp:
        prof.save(tmp)
    click.echo(f"{len(prof.nodes)} nodes, {prof.total_latency_s * 1e3:.3f} ms per run -> {output}")


@cli.command("inspect")
@click.argument("artifact_dir", metavar="OUT_DIR", type=click.Path(path_type=Path))
@click.option("--plots/--no-plots", default=True, show_default=True, help="Rewrite report.md and plots/.")
def inspect_command(artifact_dir: Path, plots: bool) -> None:
    """Show an artifact's split table (and rewrite its report and plots)."""
    from slicer_compile.artifact import load_artifact
    from slicer_compile.report import write_report

    artifact = load_artifact(artifact_dir)
    _print_split_table(artifact)
    if plots:
        click.echo(f"wrote {write_report(artifact)}")


@cli.command("materialize")
@click.argument("artifact_dir", metavar="OUT_DIR", type=click.Path(path_type=Path))
@click.option("--split", "split_id", required=True, help="Split id from the split table.")
def materialize_command(artifact_dir: Path, split_id: str) -> None:
    """Write the edge/server pair of one more split into an artifact."""
    from slicer_compile.compiler import materialize

    info = materialize(artifact_dir, split_id)
    click.echo(f"{split_id}: {artifact_dir / info.files['edge']}, {artifact_dir / info.files['server']}")


# --- bench -----------------------------------------------------------------------


@cli.group()
def bench() -> None:
    """Benchmarks: codec size and speed; server load; TensorRT engine pairs."""


@bench.command("codec")
@click.option("--sizes", default="4096,204800,1048576", show_default=True, help="Tensor sizes (elements).")
@click.option("--sparsities", default="0.5,0.75,0.9,0.95,0.99", show_default=True, help="SLICER sparsities.")
@click.option("--repeat", default=5, show_default=True, type=int, help="Timed runs per measurement (median).")
@click.option("--data", default="gaussian", show_default=True, help="Input tensors: gaussian or relu.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write rows as JSON.")
def bench_codec(sizes: str, sparsities: str, repeat: int, data: str, seed: int, json_path: Path | None) -> None:
    """Bits per element, position bits vs the information bound, and encode/decode
    speed of the SLICER codec, TS + TAB-Q and the baselines, measured in one run."""
    from rich.console import Console
    from rich.table import Table

    from slicer_compile.codec.bench import run_codec_benchmark

    size_list = _parse_list(sizes, int, "--sizes")
    sparsity_list = _parse_list(sparsities, float, "--sparsities")
    if repeat < 1:
        raise click.UsageError("--repeat must be at least 1")
    if any(n < 1 for n in size_list):
        raise click.UsageError("--sizes must be positive")
    for s in sparsity_list:
        if not 0.0 <= s < 1.0:
            raise SlicerCompileError(f"sparsity must be in [0, 1), got {s}")
    console = Console(stderr=True)
    with console.status("measuring") as status:
        rows = run_codec_benchmark(size_list, sparsity_list, repeat=repeat, data=data, seed=seed,
                                   progress=lambda what: status.update(f"measuring {what}"))
    table = Table(title=f"codec benchmark ({data} float32, median of {repeat})")
    for column in ("elements", "codec", "s", "bits/elem", "pos bits / bound", "value bits", "header bits",
                   "total / content", "encode Melem/s", "decode Melem/s", "rmse"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r.elements), r.codec, "" if r.sparsity is None else f"{r.sparsity:g}", f"{r.bits_per_element:.3f}",
            "" if r.position_overhead is None else f"{r.position_bits} / {r.position_bound_bits:.0f} ({r.position_overhead:+.2%})",
            str(r.value_bits), str(r.header_bits),
            "" if r.content_overhead is None else f"{r.content_overhead:+.2%}",
            f"{r.encode_melem_s:.1f}", f"{r.decode_melem_s:.1f}", f"{r.rmse:.4g}",
        )
    # Off a terminal rich assumes 80 columns and would cut the table; use a wide one.
    Console(width=None if sys.stdout.isatty() else 220).print(table)
    if json_path is not None:
        json_path.write_text(json.dumps([r.as_dict() for r in rows], indent=2) + "\n")
        click.echo(f"wrote {json_path}", err=True)


# --- kernels ---------------------------------------------------------------------


@cli.command("build-kernels")
@click.option("--build-dir", type=click.Path(path_type=Path), help="CMake build directory (default: build/cuda).")
@click.option("--cuda/--host-only", default=True, show_default=True, help="Also build the CUDA library (needs nvcc).")
@click.option("-j", "--jobs", default=2, show_default=True, type=int)
@click.option("--plugins", is_flag=True,
              help="Also build plugins/ (libslicer_trt_plugins.so; needs TensorRT headers: $TENSORRT_ROOT).")
def build_kernels_command(build_dir: Path | None, cuda: bool, jobs: int, plugins: bool) -> None:
    """Build cuda/: libslicer_host.so, and libslicer_cuda.so for sm_75..sm_90 (sm_87 = Jetson Orin)."""
    from slicer_compile.codec.native import DEFAULT_BUILD_DIR, build_kernels

    with _stderr_console().status("building kernels (nvcc, six architectures: about a minute)"):
        libraries = build_kernels(build_dir or DEFAULT_BUILD_DIR, cuda=cuda, jobs=jobs)
    for kind, path in libraries.items():
        click.echo(f"{kind}: {path}")
    if cuda and "cuda" not in libraries:
        click.echo("nvcc was not found: only the host library was built", err=True)
    if plugins:
        from slicer_compile.backends.tensorrt.availability import DEFAULT_PLUGIN_BUILD_DIR, build_plugins

        plugin_dir = build_dir / "plugins" if build_dir else DEFAULT_PLUGIN_BUILD_DIR
        with _stderr_console().status("building the TensorRT plugins"):
            click.echo(f"plugins: {build_plugins(plugin_dir, jobs=jobs)}")


# --- select ----------------------------------------------------------------------


@cli.command("select")
@click.argument("artifact_dir", metavar="OUT_DIR", type=click.Path(path_type=Path))
@click.option("--bandwidth", required=True, help="Channel bandwidth W, e.g. 10MHz.")
@click.option("--snr-db", type=float, help="Average SNR in dB.")
@click.option("--snr", "snr_linear", type=float, help="Average SNR, linear (instead of --snr-db).")
@click.option("--epsilon", default=1e-3, show_default=True, type=float, help="Target outage probability ε.")
@click.option("--deadline", required=True, help="Deadline D, e.g. 50ms.")
@click.option("--memory", required=True, help="Edge memory budget M, e.g. 2GB.")
@click.option("--rate", help="Fixed transmission rate, e.g. 20Mbps (default: the best rate).")
@click.option("--accuracy-budget", default=0.01, show_default=True, type=float,
              help="Fidelity drop allowed against the uncompressed model.")
@click.option("--codec-times", type=click.Path(path_type=Path), help="`bench codec --json` output measured on the edge.")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def select_command(artifact_dir: Path, bandwidth: str, snr_db: float | None, snr_linear: float | None,
                   epsilon: float, deadline: str, memory: str, rate: str | None, accuracy_budget: float,
                   codec_times: Path | None, as_json: bool) -> None:
    """Choose the split and codec knobs for a channel, deadline and memory budget."""
    from slicer_compile.select import Conditions, Selector
    from slicer_compile.select.units import parse_quantity

    conditions = Conditions(
        bandwidth_hz=parse_quantity(bandwidth, "frequency"), snr_db=snr_db, snr=snr_linear, epsilon=epsilon,
        deadline_s=parse_quantity(deadline, "time"), memory_bytes=parse_quantity(memory, "bytes"),
        rate_bps=None if rate is None else parse_quantity(rate, "rate"), accuracy_budget=accuracy_budget)
    conditions.validate()
    decision = Selector.from_artifact(artifact_dir, codec_times).select(conditions)
    if as_json:
        click.echo(json.dumps(decision.as_dict(), indent=1))
        return
    if not decision.feasible:  # an answer, not an error: exit status 0
        click.echo(f"infeasible (binding: {decision.binding}): {decision.reason}")
        return
    cfg, lat = decision.config, decision.latency
    click.echo(f"split {decision.split_id}: sparsity {cfg.sparsity:g}, blocks {cfg.blocks}, q_bits {cfg.q_bits}; "
               f"rate {decision.rate_bps / 1e6:.2f} Mbit/s, payload <= {decision.payload_bits} bits")
    click.echo(f"latency {lat.total_s * 1e3:.3f} ms = edge {lat.edge_s * 1e3:.3f} + codec {lat.codec_s * 1e3:.3f} "
               f"+ transmit {lat.transmit_s * 1e3:.3f}; binding: {decision.binding} ({decision.reason})")


# --- runtime ---------------------------------------------------------------------


@cli.command("serve")
@click.argument("artifact_dir", metavar="OUT_DIR", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8700, show_default=True, type=int)
@click.option("--max-batch", default=16, show_default=True, type=int, help="Requests batched together at most.")
@click.option("--max-queue-delay", default="0.5ms", show_default=True, help="Longest wait to fill a batch.")
@click.option("--max-request-bytes", default="64MiB", show_default=True, help="Larger requests get 413.")
@click.option("--backend", default="onnxruntime", show_default=True, type=click.Choice(["onnxruntime", "tensorrt"]),
              help="tensorrt: each split's server.plan, decoder inside (one request at a time).")
def serve_command(artifact_dir: Path, host: str, port: int, max_batch: int, max_queue_delay: str,
                  max_request_bytes: str, backend: str) -> None:
    """Serve an artifact's split server parts (KServe v2 / Triton HTTP protocol)."""
    import signal

    from slicer_compile.runtime.server import ServerConfig, serve
    from slicer_compile.select.units import parse_quantity

    if max_batch < 1:
        raise click.UsageError("--max-batch must be at least 1")
    _require_backend(backend)
    config = ServerConfig(max_batch=max_batch, max_queue_delay_s=parse_quantity(max_queue_delay, "time"),
                          max_request_bytes=int(parse_quantity(max_request_bytes, "bytes")), backend=backend)
    server = serve(artifact_dir, host, port, config)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.httpd.shutdown).start())
    click.echo(f"serving {', '.join(server.models)} of artifact {server.artifact.id} on http://{server.url} "
               f"(/v2/models/<split>/infer, /metrics); Ctrl-C stops after in-flight requests", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


@cli.command("run")
@click.argument("artifact_dir", metavar="OUT_DIR", type=click.Path(path_type=Path))
@click.option("--server", "server_url", required=True, help="host:port of slicer-compile serve or Triton.")
@click.option("--input", "input_paths", multiple=True, required=True,
              help="Input .npy (NAME=path.npy for a model with several inputs).")
@click.option("--split", "split_id", help="Split to use (default: chosen by the selector, or the deepest).")
@click.option("--sparsity", type=float, help="Codec sparsity (default: the artifact's).")
@click.option("--snr-db", type=float, help="With --deadline: let the selector choose split and knobs.")
@click.option("--deadline", help="Deadline, e.g. 50ms.")
@click.option("--bandwidth", default="10MHz", show_default=True)
@click.option("--memory", default="8GB", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the first output .npy.")
@click.option("--backend", default="onnxruntime", show_default=True, type=click.Choice(["onnxruntime", "tensorrt"]),
              help="tensorrt: the split's edge.plan, encoder inside.")
def run_command(artifact_dir: Path, server_url: str, input_paths: tuple[str, ...], split_id: str | None,
                sparsity: float | None, snr_db: float | None, deadline: str | None, bandwidth: str, memory: str,
                output: Path | None, backend: str) -> None:
    """Run one input through the split: edge part here, server part on --server."""
    from slicer_compile.runtime.client import EdgeClient
    from slicer_compile.select import Conditions
    from slicer_compile.select.units import parse_quantity

    _require_backend(backend)
    client = EdgeClient(artifact_dir, server_url, backend=backend)
    names = [i["name"] for i in client.artifact.manifest["inputs"]]
    inputs = {}
    for spec in input_paths:
        name, sep, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        name = name or (names[0] if len(names) == 1 else "")
        if name not in names:
            raise SlicerCompileError(f"give inputs as NAME=path.npy with NAME one of {names}")
        inputs[name] = _load_npy(Path(path))
    conditions = None
    if snr_db is not None or deadline is not None:
        if snr_db is None or deadline is None:
            raise click.UsageError("--snr-db and --deadline go together")
        conditions = Conditions(bandwidth_hz=parse_quantity(bandwidth, "frequency"), snr_db=snr_db,
                                deadline_s=parse_quantity(deadline, "time"), memory_bytes=parse_quantity(memory, "bytes"))
    config = None if sparsity is None else dataclasses.replace(client.default_config, sparsity=sparsity)
    with client:
        result = client.infer(inputs, conditions=conditions, split=split_id, config=config)
    t = result.timings
    for name, value in result.outputs.items():
        summary = f"argmax {int(value.reshape(len(value), -1)[0].argmax())}" if value.ndim == 2 else ""
        click.echo(f"{name}: {value.dtype}{tuple(value.shape)} {summary}")
    click.echo(f"split {result.split_id}, sparsity {result.config.sparsity:g}: edge {t['edge_s'] * 1e3:.3f} ms, "
               f"encode {t['encode_s'] * 1e3:.3f} ms, sent {t['bytes_sent']} bytes, server {t['server_s'] * 1e3:.3f} ms "
               f"(compute {t['server_compute_s'] * 1e3:.3f}), round trip {t['round_trip_s'] * 1e3:.3f} ms")
    if output is not None:
        with _atomic_path(output) as tmp, open(tmp, "wb") as f:
            np.save(f, next(iter(result.outputs.values())))


@cli.command("triton")
@click.argument("artifact_dir", metavar="OUT_DIR", type=click.Path(path_type=Path))
@click.option("-o", "--output", "repo_dir", required=True, type=click.Path(path_type=Path), help="Model repository.")
@click.option("--max-batch", default=16, show_default=True, type=int)
@click.option("--force", is_flag=True, help="Replace the repository if it exists.")
def triton_command(artifact_dir: Path, repo_dir: Path, max_batch: int, force: bool) -> None:
    """Write a Triton model repository (decoder + server part ensembles)."""
    from slicer_compile.runtime.triton import write_repository

    written = write_repository(artifact_dir, repo_dir, max_batch=max_batch, overwrite=force)
    click.echo(f"wrote {len(written)} models to {repo_dir}/ (configs validated against Triton's ModelConfig); "
               f"see {repo_dir}/README.md to start Triton")


@bench.command("serve")
@click.argument("artifact_dir", metavar="OUT_DIR", type=click.Path(path_type=Path))
@click.option("--clients", default="1,4,16,64", show_default=True, help="Client counts.")
@click.option("--requests", default=50, show_default=True, type=int, help="Requests per client.")
@click.option("--splits", help="Split ids (default: every materialised split).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG (default: OUT_DIR/plots/serve_scaling.png).")
def bench_serve(artifact_dir: Path, clients: str, requests: int, splits: str | None, json_path: Path | None,
                plot_path: Path | None) -> None:
    """Concurrent edge clients on loopback: throughput, latency and server time per split."""
    from rich.console import Console
    from rich.table import Table

    from slicer_compile.runtime.loadtest import plot_load, rows_as_dicts, run_load

    counts = _parse_list(clients, int, "--clients")
    if requests < 1 or not counts or min(counts) < 1:
        raise click.UsageError("--clients and --requests must be positive")
    with _stderr_console().status("load") as status:
        rows = run_load(artifact_dir, counts, requests, splits.split(",") if splits else None,
                        progress=lambda what: status.update(f"load: {what}"))
    table = Table(title=f"bench serve: {requests} requests per client")
    for column in ("split", "edge FLOPs", "clients", "answered", "req/s", "p50 ms", "p99 ms", "server compute µs/req",
                   "mean batch", "bytes/req"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r.split_id, f"{100 * r.edge_flops_share:.1f}%", str(r.clients), f"{r.answered}/{r.requests}",
                      f"{r.throughput_rps:.0f}", f"{r.round_trip_p50_ms:.2f}", f"{r.round_trip_p99_ms:.2f}",
                      f"{r.server_compute_us:.1f}", f"{r.mean_batch:.1f}", f"{r.bytes_sent:.0f}")
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    plot = plot_load(rows, plot_path or Path(artifact_dir) / "plots" / "serve_scaling.png")
    click.echo(f"wrote {plot}", err=True)
    if json_path is not None:
        json_path.write_text(json.dumps(rows_as_dicts(rows), indent=1) + "\n")


@bench.command("tensorrt")
@click.argument("artifact_dir", metavar="OUT_DIR", type=click.Path(path_type=Path))
@click.option("--repeat", default=50, show_default=True, type=int, help="Timed runs per measurement (median).")
@click.option("--splits", help="Split ids (default: every split with engines).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def bench_tensorrt(artifact_dir: Path, repeat: int, splits: str | None, json_path: Path | None) -> None:
    """Per split of a --backend tensorrt artifact, on this GPU: edge and server engine
    latency, CUDA codec time on the real activation, and the bytes that cross."""
    from rich.table import Table

    from slicer_compile.runtime.engine_bench import run_tensorrt_benchmark

    if repeat < 1:
        raise click.UsageError("--repeat must be at least 1")
    _require_backend("tensorrt")
    with _stderr_console().status("timing engines"):
        rows = run_tensorrt_benchmark(artifact_dir, repeat, splits.split(",") if splits else None)
    table = Table(title=f"bench tensorrt: median of {repeat}")
    for column in ("split", "edge ms", "server ms", "encode ms", "decode ms", "elements", "payload B", "raw B",
                   "ratio"):
        table.add_column(column, justify="right")
    for r in rows:
        codec = ("", "") if r.encode_ms is None else (f"{r.encode_ms:.3f}", f"{r.decode_ms:.3f}")
        table.add_row(r.split, f"{r.edge_ms:.3f}", f"{r.server_ms:.3f}", *codec, str(r.activation_elements),
                      str(r.payload_bytes), str(r.raw_bytes),
                      f"{r.raw_bytes / r.payload_bytes:.1f}x" if r.payload_bytes else "")
    from rich.console import Console

    Console(width=None if sys.stdout.isatty() else 200).print(table)
    if json_path is not None:
        json_path.write_text(json.dumps([r.as_dict() for r in rows], indent=1) + "\n")


# --- codec -----------------------------------------------------------------------


@cli.group()
def codec() -> None:
    """Encode and decode tensors (.npy) with the intermediate-feature codecs."""


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise SlicerCompileError(f"no such file: {path}")
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":  # np.load would guess "pickle" and advise allow_pickle
            raise SlicerCompileError(f"{path} is not a .npy file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise SlicerCompileError(f"cannot read {path} as a .npy array: {exc}") from None


@codec.command("encode")
@click.argument("input_path", metavar="INPUT.npy", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Payload file.")
@click.option("--codec", "codec_name", default="slicer", show_default=True,
              help="slicer, tabq, float16, int8 or zstd.")
@click.option("--sparsity", type=float, help="SLICER: fraction of elements dropped, in [0, 1).")
@click.option("--lam", type=float, help="SLICER: asymmetry λ in (-1, 1).")
@click.option("--blocks", help="SLICER: magnitude blocks per sign, M+,M- (e.g. 3,3).")
@click.option("--q-bits", type=int, help="SLICER: reference bit-width.")
@click.option("--q-min", type=int, help="SLICER / TAB-Q: lowest bit-width.")
@click.option("--delta", type=float, help="SLICER / TAB-Q: DS distortion budget.")
@click.option("--tau", type=float, help="TAB-Q: threshold for exact values.")
@click.option("--q-max", type=int, help="TAB-Q: bits per quantised element, sign included.")
def codec_encode(input_path: Path, output: Path, codec_name: str, blocks: str | None, **knobs) -> None:
    """Encode a float32/float16 .npy tensor into a payload file."""
    from slicer_compile.codec import config_from_name, encode, predict_bits

    chosen = {name: value for name, value in knobs.items() if value is not None}
    if blocks is not None:
        chosen["blocks"] = tuple(_parse_list(blocks, int, "--blocks"))
    cfg = config_from_name(codec_name, **chosen)
    x = _load_npy(input_path)
    payload = encode(x, cfg)
    _write_atomically(output, payload)
    click.echo(f"{input_path} {x.shape} {x.dtype} -> {output}: {len(payload)} bytes "
               f"({8 * len(payload) / max(x.size, 1):.3f} bits/element, bound {predict_bits(x.shape, cfg, x.dtype)} bits)")


@codec.command("decode")
@click.argument("payload_path", metavar="PAYLOAD", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output .npy.")
def codec_decode(payload_path: Path, output: Path) -> None:
    """Decode a payload file into a .npy tensor."""
    from slicer_compile.codec import decode

    x_hat = decode(_read_file(payload_path))
    with _atomic_path(output) as tmp, open(tmp, "wb") as f:
        np.save(f, x_hat)  # a file object: np.save would append ".npy" to a path
    click.echo(f"{payload_path} -> {output}: {x_hat.shape} {x_hat.dtype}")


@codec.command("info")
@click.argument("payload_path", metavar="PAYLOAD", type=click.Path(path_type=Path))
def codec_info(payload_path: Path) -> None:
    """Show a payload's codec, knobs, shape and section sizes."""
    from slicer_compile.codec import inspect_payload

    info = inspect_payload(_read_file(payload_path))
    click.echo(f"codec {info.codec}  shape {info.shape}  dtype {info.dtype}  {info.total_bytes} bytes")
    if info.config is not None:
        click.echo(f"knobs {info.config}")
    for name, nbytes in info.section_bytes.items():
        click.echo(f"  {name:8s} {nbytes:>10d} bytes")


def _read_file(path: Path) -> bytes:
    if not path.is_file():
        raise SlicerCompileError(f"no such file: {path}")
    return path.read_bytes()


class _atomic_path:
    """A temporary path beside ``target``, renamed onto it only on success, so a
    failed command never leaves a half-written file that looks complete."""

    def __init__(self, target: Path):
        self.target = target
        self.tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")

    def __enter__(self) -> Path:
        if not self.target.parent.is_dir():
            raise SlicerCompileError(f"output directory does not exist: {self.target.parent}")
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)


def _write_atomically(target: Path, data: bytes) -> None:
    with _atomic_path(target) as tmp:
        tmp.write_bytes(data)


# --- entry point -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn every expected failure into one line and an exit code."""
    try:
        result = cli.main(args=argv, prog_name="slicer-compile", standalone_mode=False)
    except click.UsageError as exc:
        _fail(exc.format_message(), EXIT_USAGE)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except click.Abort:
        _fail("aborted", 130)
    except (SlicerCompileError, OSError, ValueError) as exc:
        if os.environ.get("SLICER_DEBUG"):
            raise
        _fail(str(exc) or type(exc).__name__, EXIT_FAILURE)
    sys.exit(result if isinstance(result, int) else 0)


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
