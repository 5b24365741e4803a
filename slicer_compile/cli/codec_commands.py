"""codec encode | decode | info: the intermediate-feature codecs on .npy tensors."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from slicer_compile.cli.options import chosen_knobs, codec_knob_options, verbosity_options
from slicer_compile.cli.runtime_commands import load_npy
from slicer_compile.errors import SlicerCompileError
from slicer_compile.storage import atomic_path, write_bytes_atomically


@click.group("codec")
def codec() -> None:
    """Encode and decode tensors (.npy) with the intermediate-feature codecs."""


@codec.command("encode")
@click.argument("input_path", metavar="INPUT.npy", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Payload file.")
@click.option("--codec", "codec_name", default="slicer", show_default=True,
              help="slicer, tabq, dense, float16, int8 or zstd.")
@codec_knob_options()
@verbosity_options
def codec_encode(input_path: Path, output: Path, codec_name: str, **knobs) -> None:
    """Encode a float32/float16 .npy tensor into a payload file."""
    from slicer_compile.codec import config_from_name, encode, predict_bits

    cfg = config_from_name(codec_name, **chosen_knobs(knobs))
    x = load_npy(input_path)
    payload = encode(x, cfg)
    write_bytes_atomically(output, payload)
    click.echo(f"{input_path} {x.shape} {x.dtype} -> {output}: {len(payload)} bytes "
               f"({8 * len(payload) / max(x.size, 1):.3f} bits/element, bound {predict_bits(x.shape, cfg, x.dtype)} bits)")


@codec.command("decode")
@click.argument("payload_path", metavar="PAYLOAD", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output .npy.")
@verbosity_options
def codec_decode(payload_path: Path, output: Path) -> None:
    """Decode a payload file into a .npy tensor."""
    from slicer_compile.codec import decode

    x_hat = decode(_read_file(payload_path))
    with atomic_path(output) as tmp, open(tmp, "wb") as f:
        np.save(f, x_hat)  # a file object: np.save would append ".npy" to a path
    click.echo(f"{payload_path} -> {output}: {x_hat.shape} {x_hat.dtype}")


@codec.command("info")
@click.argument("payload_path", metavar="PAYLOAD", type=click.Path(path_type=Path))
@verbosity_options
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


COMMANDS = [codec]
