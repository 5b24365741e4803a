"""select: which split and codec knobs for a channel, deadline and memory."""

from __future__ import annotations

from pathlib import Path

import click

from slicer_compile.cli.options import RATE, artifact_argument, channel_options, json_option, verbosity_options
from slicer_compile.cli.output import print_json
from slicer_compile.cli.status import EXIT_INFEASIBLE, EXIT_OK


def conditions_from(bandwidth, snr_db, snr_linear, epsilon, deadline, memory, rate, accuracy_budget):
    from slicer_compile.select import Conditions

    conditions = Conditions(bandwidth_hz=bandwidth, snr_db=snr_db, snr=snr_linear, epsilon=epsilon,
                            deadline_s=deadline, memory_bytes=memory, rate_bps=rate, accuracy_budget=accuracy_budget)
    conditions.validate()
    return conditions


def describe(decision) -> list[str]:
    """The decision in two lines a person reads: knobs, then the latency breakdown."""
    if not decision.feasible:
        return [f"infeasible (binding: {decision.binding}): {decision.reason}"]
    cfg, lat = decision.config, decision.latency
    lines = [f"split {decision.split_id}: sparsity {cfg.sparsity:g}, blocks {cfg.blocks}, q_bits {cfg.q_bits}; "
             f"rate {decision.rate_bps / 1e6:.2f} Mbit/s, payload <= {decision.payload_bits} bits"
             + ("" if decision.fidelity is None else f"; calibrated fidelity {decision.fidelity:.4f}")]
    if lat is not None:
        lines.append(f"latency {lat.total_s * 1e3:.3f} ms = edge {lat.edge_s * 1e3:.3f} + codec {lat.codec_s * 1e3:.3f} "
                     f"+ transmit {lat.transmit_s * 1e3:.3f} ({lat.transmissions} transmission"
                     f"{'s' if lat.transmissions != 1 else ''} of {decision.payload_bits} bits, budgeted for the "
                     f"outage target); binding: {decision.binding} ({decision.reason})")
    return lines


@click.command("select")
@artifact_argument
@channel_options(required=True)
@click.option("--snr", "snr_linear", type=click.FloatRange(min=0, min_open=True),
              help="Average SNR, linear (instead of --snr-db).")
@click.option("--rate", type=RATE, help="Fixed transmission rate, with a unit: 20Mbps (default: the best rate).")
@click.option("--codec-times", type=click.Path(path_type=Path),
              help="Codec times measured on the edge: slicer-compile bench codec --json > times.json")
@click.option("--max-tokens", type=click.IntRange(min=1),
              help="LLM artifacts: W̄, tokens to generate (default: the artifact's).")
@json_option("the decision")
@verbosity_options
def select_command(artifact_dir: Path, bandwidth: float, snr_db: float | None, snr_linear: float | None,
                   epsilon: float, deadline: float, memory: float, rate: float | None, accuracy_budget: float,
                   codec_times: Path | None, max_tokens: int | None, as_json: bool) -> int:
    """Choose the split and codec knobs for a channel, deadline and memory budget; for
    an LLM artifact, the tokens w the edge generates, the hand-over layer ℓ and whether
    the KV cache travels (SLICER Eq. 5-6, early exit).

    Exit status 3 when no split meets the constraints (the answer says which
    constraint excluded how many splits)."""
    from slicer_compile.llm.artifact import is_llm_artifact_dir
    from slicer_compile.select import Selector

    if is_llm_artifact_dir(artifact_dir):
        return _select_llm(artifact_dir, bandwidth, snr_db, snr_linear, epsilon, deadline, memory, rate, max_tokens,
                           accuracy_budget, as_json)
    conditions = conditions_from(bandwidth, snr_db, snr_linear, epsilon, deadline, memory, rate, accuracy_budget)
    decision = Selector.from_artifact(artifact_dir, codec_times).select(conditions)
    if as_json:
        print_json(decision.as_dict())
    else:
        for line in describe(decision):
            click.echo(line)
    return EXIT_OK if decision.feasible else EXIT_INFEASIBLE


def _select_llm(artifact_dir, bandwidth, snr_db, snr_linear, epsilon, deadline, memory, rate, max_tokens,
                accuracy_budget, as_json) -> int:
    import dataclasses

    from slicer_compile.llm.artifact import load_llm_artifact
    from slicer_compile.llm.selection import ar_table
    from slicer_compile.select import select_autoregressive

    artifact = load_llm_artifact(artifact_dir)
    tokens = max_tokens or artifact.manifest["max_tokens"]
    decision = select_autoregressive(ar_table(artifact, accuracy_budget=accuracy_budget), tokens, deadline, bandwidth, epsilon=epsilon, snr_db=snr_db,
                                     snr=snr_linear, rate_bps=rate, memory_bytes=memory)
    if as_json:
        print_json(dataclasses.asdict(decision))
    elif decision.feasible:
        click.echo(f"generate {decision.tokens} of {tokens} tokens on the edge, hand over at layer {decision.layer}"
                   f"{' with' if decision.kv_cache else ' without'} the KV cache"
                   f"{' (early exit)' if decision.early_exit else ''}")
        click.echo(f"latency {decision.latency_s * 1e3:.1f} ms (edge {decision.edge_s * 1e3:.1f} ms, transmit "
                   f"{decision.transmit_s * 1e3:.1f} ms at {decision.rate_bps / 1e6:.2f} Mbit/s), "
                   f"{decision.payload_bits} bits; binding: {decision.binding}")
    else:
        click.echo(f"infeasible: {decision.reason}")
    return EXIT_OK if decision.feasible else EXIT_INFEASIBLE


COMMANDS = [select_command]
