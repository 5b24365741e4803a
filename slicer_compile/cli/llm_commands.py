"""llm: compile a decoder-only LLM for token-by-token split execution."""

from __future__ import annotations

from pathlib import Path

import click

from slicer_compile.cli.options import MEMORY, POSITIVE, verbosity_options
from slicer_compile.cli.output import Column, Progress, print_table
from slicer_compile.errors import SlicerCompileError


def print_cut_table(artifact) -> None:
    from slicer_compile.llm.report import HEADER, cut_rows

    keep = {"cut": 9, "edge ms/token": 8, "server ms/token": 7, "hidden B/token": 6, "edge memory at W̄": 5}
    print_table(f"cuts of {artifact.manifest['source']} on {artifact.manifest['device']['name']}, per generated token",
                [Column(h, keep.get(h, 0)) for h in HEADER], cut_rows(artifact),
                caption="cut ℓ: edge runs the embedding and layers 1..ℓ; the server ℓ+1..L and the head")


@click.command("llm")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path), help="Artifact directory.")
@click.option("--device", default="cpu", show_default=True,
              help="Edge device (slicer-compile devices; cpu = measured here).")
@click.option("--server-device", default="a100", show_default=True, help="Server device profile.")
@click.option("--max-tokens", default=256, show_default=True, type=POSITIVE,
              help="W̄: tokens a session may reach (sizes the KV cache in edge memory).")
@click.option("--weights", default="fp32", show_default=True, type=click.Choice(["fp32", "int8", "int4", "auto"]),
              help="Edge layer weights: int8/int4 weight-only (OPSC; ONNX Runtime's MatMulNBits); server fp32. "
                   "auto: the precision that puts the most layers within --memory and --accuracy-budget.")
@click.option("--memory", type=MEMORY, help="Edge memory budget (weights + KV cache at W̄): 1GB.")
@click.option("--accuracy-budget", default=0.01, show_default=True, type=click.FloatRange(0, 1),
              help="With --weights auto and --calib-text: the token agreement lost at most.")
@click.option("--group-size", default=32, show_default=True, type=click.Choice(["32", "64", "128"]),
              help="Weights per quantisation scale (int8/int4).")
@click.option("--calib-text", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Text to measure each cut under each per-token codec on (token agreement, perplexity, bits).")
@click.option("--calib-positions", default=1000, show_default=True, type=POSITIVE,
              help="Next-token positions of --calib-text scored.")
@click.option("--force", is_flag=True, help="Replace the output directory if slicer-compile wrote it.")
@verbosity_options
def llm_command(model_path: Path, out_dir: Path, device: str, server_device: str, max_tokens: int,
                weights: str, memory: float | None, accuracy_budget: float, group_size: str, calib_text: Path | None,
                calib_positions: int, force: bool) -> None:
    """Compile a decoder-only LLM (Llama family: a transformers model directory, or an
    ONNX export with its KV cache as past_key_values inputs) into per-layer parts with
    explicit KV caches, and a per-token cut table."""
    from slicer_compile.llm.compile import compile_llm

    if not model_path.exists():
        raise SlicerCompileError(f"no such model: {model_path}")
    with Progress() as progress:
        artifact = compile_llm(model_path, device=device, out_dir=out_dir, max_tokens=max_tokens,
                               server_device=server_device, overwrite=force, weights=weights,
                               group_size=int(group_size), calib_text=calib_text,
                               calib_positions=calib_positions, memory_bytes=memory,
                               accuracy_budget=accuracy_budget, progress=progress)
    print_cut_table(artifact)
    plan = artifact.manifest.get("opsc")
    if plan:
        click.echo(f"edge weights {plan['chosen']['weights']}, deepest cut {plan['chosen']['cut']}: {plan['reason']}")
    click.echo(f"wrote {out_dir}/ ({artifact.spec.num_layers} layers, {len(artifact.cuts)} cuts, "
               f"{artifact.manifest['compile_seconds']:.1f} s); read {out_dir}/report.md")


COMMANDS = [llm_command]
