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
@json_option("the decision")
@verbosity_options
def select_command(artifact_dir: Path, bandwidth: float, snr_db: float | None, snr_linear: float | None,
                   epsilon: float, deadline: float, memory: float, rate: float | None, accuracy_budget: float,
                   codec_times: Path | None, as_json: bool) -> int:
    """Choose the split and codec knobs for a channel, deadline and memory budget.

    Exit status 3 when no split meets the constraints (the answer says which
    constraint excluded how many splits)."""
    from slicer_compile.select import Selector

    conditions = conditions_from(bandwidth, snr_db, snr_linear, epsilon, deadline, memory, rate, accuracy_budget)
    decision = Selector.from_artifact(artifact_dir, codec_times).select(conditions)
    if as_json:
        print_json(decision.as_dict())
    else:
        for line in describe(decision):
            click.echo(line)
    return EXIT_OK if decision.feasible else EXIT_INFEASIBLE


COMMANDS = [select_command]
