"""The ``slicer-compile`` command line. Nothing in the package imports this module.

Every failure a user can cause (a missing file, a bad knob, a corrupt payload)
ends as one line on stderr and a non-zero exit code, never a traceback; set
SLICER_DEBUG=1 to see the traceback anyway.
"""

from __future__ import annotations

import json
import os
import sys
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="slicer-compile")
def cli() -> None:
    """Split a DNN between edge devices and a shared GPU server, with a compressing
    codec for the intermediate feature."""


# --- bench -----------------------------------------------------------------------


@cli.group()
def bench() -> None:
    """Benchmarks: codec size and speed."""


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


# --- codec -----------------------------------------------------------------------


@cli.group()
def codec() -> None:
    """Encode and decode tensors (.npy) with the intermediate-feature codecs."""


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise SlicerCompileError(f"no such file: {path}")
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
