"""The artifact's report: a split table (markdown) and plots (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slicer_compile.artifact import Artifact
from slicer_compile.storage import save_png, write_text_atomically

REPORT = "report.md"
PLOTS = "plots"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def _kib(nbytes: float) -> str:
    return f"{nbytes / 1024:.1f}"


def latency_label(artifact: Artifact) -> str:
    """Where the edge latencies come from, in a word: measured, profile or roofline."""
    source = artifact.manifest["device"].get("latency_source", "")
    if source.startswith("measured profile"):
        return "profile"
    return "measured" if source.startswith("measured") else "roofline"


def fidelity_label(artifact: Artifact) -> str:
    calibration = artifact.calibration
    if not calibration.measured:
        return "fidelity (not measured)"
    return f"fidelity ({calibration.metric}, s={default_sparsity(artifact)})"


def default_sparsity(artifact: Artifact) -> str:
    return f"{default_sparsity_value(artifact):g}"


def default_sparsity_value(artifact: Artifact) -> float:
    return artifact.codec.defaults.sparsity


def split_table(artifact: Artifact) -> tuple[list[tuple[str, int]], list[list[str]]]:
    """The split table, the same in report.md and ``slicer-compile inspect``: a list of
    (header, keep) — keep ranks what a narrow terminal shows longest — and the rows."""
    default_s, default = default_sparsity(artifact), default_sparsity_value(artifact)
    header = [("split", 100), ("edge FLOPs", 40), ("activations", 20), ("IF shape", 30), ("IF KiB", 50),
              (f"payload bound KiB (s={default_s})", 85), ("side KiB (raw)", 75),
              (f"edge ms ({latency_label(artifact)})", 90),
              ("server ms (roofline)", 60), ("edge MiB", 70), (fidelity_label(artifact), 80)]
    rows = []
    pareto = set(artifact.pareto)
    for s in artifact.splits:
        activations = s.activations
        fidelity = s.fidelity_at(default)
        rows.append([
            s.id + (" *" if s.id in pareto else ""),
            f"{100 * s.edge_share:.1f}%",
            ", ".join(t.name + (" (padding left out)" if t.mask else "") for t in activations)
            + (f" (+{len(s.crossing) - len(activations)} side)"
                                                         if len(s.crossing) > len(activations) else ""),
            "x".join(map(str, s.if_shape)),
            _kib(s.if_bytes),
            _kib(s.payload_bound_at(default) or 0),
            _kib(s.side_bytes),
            _ms(s.edge_latency_s),
            _ms(s.server_latency_s),
            f"{s.edge_memory_bytes / 2**20:.2f}",
            "" if fidelity is None else f"{fidelity:.4f}",
        ])
    return header, rows


def split_table_notes(artifact: Artifact) -> str:
    """What the table's columns mean, where a reader would otherwise guess."""
    m = artifact.manifest
    return (f"* = materialised. edge ms: {m['device'].get('latency_source', 'unknown')}; server ms: roofline "
            f"prediction on {m['server_device'].get('description', m['server_device'].get('name', '?'))}; "
            f"payload bound and fidelity at the default sparsity {default_sparsity(artifact)}.")


def write_report(artifact: Artifact) -> Path:
    """Write report.md and plots/*.png into the artifact directory."""
    m = artifact.manifest
    plots = write_plots(artifact)
    header, rows = split_table(artifact)
    default_s = default_sparsity(artifact)
    lines = [
        f"# Split report: {Path(m['source']['path']).name}",
        "",
        f"- artifact `{m['artifact_id']}`, slicer-compile {m['tool_version']}, backend {m['backend']}",
        f"- edge device: {m['device']['description']} ({m['device']['latency_source']})",
        f"- server device: {m['server_device']['description']} (roofline model)",
        *(f"- {line}" for line in m.get("shape_notes", [])),
        f"- {len(artifact.splits)} valid splits; {len(artifact.pareto)} materialised (marked *)",
        f"- payload bound at sparsity {default_s}; fidelity = "
        + (f"{m['calibration']['metric']} on {m['calibration']['samples']} calibration samples"
           if m["calibration"]["status"] == "measured" else "not measured (compile with --calib inputs.npz)"),
        *([f"- coded as a residual from their channel means (codec.centring): "
           + ", ".join(f"`{name}`" for name in m["calibration"]["centred"])] if m["calibration"].get("centred") else []),
        "",
        "| " + " | ".join(h for h, _ in header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", split_table_notes(artifact),
              "Edge and server latency are per-node sums without the codec; edge memory is edge weights +",
              "peak live activations + the codec buffer (payload + a copy of the feature).", ""]
    for plot in plots:
        lines.append(f"![{plot.stem}]({PLOTS}/{plot.name})")
    path = artifact.path / REPORT
    write_text_atomically(path, "\n".join(lines) + "\n")
    return path


def write_plots(artifact: Artifact) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = artifact.path / PLOTS
    out_dir.mkdir(exist_ok=True)
    splits = artifact.splits
    x = list(range(len(splits)))
    default_s = default_sparsity(artifact)
    paths = []

    fig, ax = plt.subplots(figsize=(9, 4.5))
    few = len(splits) <= ALL_LABELS_UP_TO  # a marker per split where they can be told apart
    ax.plot(x, [s.edge_latency_s * 1e3 for s in splits], "o-" if few else "-", label="edge latency")
    ax.plot(x, [s.server_latency_s * 1e3 for s in splits], "s-" if few else "-", label="server latency")
    ax.set_xlabel("split (shallow → deep)")
    ax.set_ylabel("ms")
    ax2 = ax.twinx()
    # Filled steps, not bars: one artist per series however many splits (a bar is a
    # patch each, and drawing 800 of them was most of a compile).
    ax2.fill_between(x, [s.if_bytes / 1024 for s in splits], step="mid", alpha=0.2, color="gray", label="IF raw KiB")
    ax2.fill_between(x, [((s.payload_bound_at(default_sparsity_value(artifact)) or 0) + s.side_bytes) / 1024
                         for s in splits], step="mid", alpha=0.5, color="tab:green",
                     label=f"bytes sent KiB: payload bound (s={default_s}) + side tensors")
    ax2.set_ylabel("KiB")
    ticks = _labelled_splits(artifact)
    ax.set_xticks([x[i] for i in ticks], [splits[i].id for i in ticks], rotation=90, fontsize=6)
    lines1, labels1 = ax.get_legend_handles_labels()
    lines2, labels2 = ax2.get_legend_handles_labels()
    ax.legend(lines1 + lines2, labels1 + labels2, fontsize=8, loc="upper center")
    ax.set_title("Latency and intermediate-feature size per split")
    fig.tight_layout()
    paths.append(out_dir / "latency.png")
    save_png(fig, paths[-1])

    sweep_path = write_sweep_plot(artifact, out_dir / "selector_sweep.png")
    if sweep_path is not None:
        paths.append(sweep_path)

    calibrated = [s for s in splits if s.fidelity]
    if calibrated:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        shown = [s for s in calibrated if s.id in set(artifact.pareto)] or calibrated
        for s in shown[:12]:
            grid = sorted(s.fidelity)
            ax.plot(grid, [s.fidelity[g] for g in grid], "o-", label=s.id)
        ax.set_xlabel("sparsity s")
        ax.set_ylabel(artifact.calibration.metric)
        ax.set_title("Fidelity vs sparsity")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        paths.append(out_dir / "fidelity.png")
        save_png(fig, paths[-1])
    return paths


#: The papers' channel setting (SLICER §4.1, Sung et al. §3): W = 10 MHz, ε = 0.001.
SWEEP_BANDWIDTH_HZ = 10e6
SWEEP_EPSILON = 1e-3
SWEEP_SNR_DB = list(range(-10, 31))


def sweep_deadlines(artifact: Artifact) -> list[float]:
    """Three deadlines that bracket the model: tight, medium, loose."""
    deepest = max(s.edge_latency_s for s in artifact.splits)
    base = max(deepest, 1e-4)
    return [1.5 * base, 4 * base, 20 * base]


def write_sweep_plot(artifact: Artifact, path: Path) -> Path | None:
    """Chosen split and predicted latency vs SNR for a few deadlines (the selector's behaviour)."""
    import matplotlib.pyplot as plt

    from slicer_compile.select import Conditions, Selector

    selector = Selector.from_artifact(artifact)
    memory = artifact.manifest["device"].get("memory_bytes") or 2**40
    base = Conditions(bandwidth_hz=SWEEP_BANDWIDTH_HZ, deadline_s=1.0, memory_bytes=memory, epsilon=SWEEP_EPSILON,
                      snr_db=0.0)
    rows = selector.sweep(base, SWEEP_SNR_DB, sweep_deadlines(artifact))
    order = {s.id: i for i, s in enumerate(artifact.splits)}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    for d in sorted({r["deadline_s"] for r in rows}):
        pts = [r for r in rows if r["deadline_s"] == d]
        label = f"D = {d * 1e3:.2f} ms"
        top.step([r["snr_db"] for r in pts], [order[r["split_id"]] if r["feasible"] else -1 for r in pts],
                 where="mid", label=label)
        bottom.plot([r["snr_db"] for r in pts], [r["latency_s"] * 1e3 if r["feasible"] else np.nan for r in pts],
                    "o-", markersize=3, label=label)
    top.set_ylabel("chosen split (index; -1 = none)")
    chosen = sorted({order[r["split_id"]] for r in rows if r["feasible"]})  # a tick per split ever chosen
    top.set_yticks([-1, *chosen], ["none"] + [artifact.splits[i].id for i in chosen], fontsize=6)
    top.legend(fontsize=8)
    bottom.set_ylabel("predicted latency (ms)")
    bottom.set_xlabel("SNR (dB)")
    fig.suptitle(f"Selector sweep: W = {SWEEP_BANDWIDTH_HZ / 1e6:g} MHz, ε = {SWEEP_EPSILON:g}, best rate")
    fig.tight_layout()
    save_png(fig, path)
    return path


#: Up to this many splits every one gets a tick label; beyond, the Pareto ones and a
#: sample spread over depth (a label per split is unreadable there, and slow to draw).
ALL_LABELS_UP_TO = 60


def _labelled_splits(artifact: Artifact) -> list[int]:
    splits = artifact.splits
    if len(splits) <= ALL_LABELS_UP_TO:
        return list(range(len(splits)))
    pareto = {i for i, s in enumerate(splits) if s.id in set(artifact.pareto)}
    spread = np.round(np.linspace(0, len(splits) - 1, ALL_LABELS_UP_TO // 2)).astype(int).tolist()
    room = len(splits) / ALL_LABELS_UP_TO  # a sample label gives way to a Pareto one this close
    return sorted(pareto | {i for i in spread if all(abs(i - p) >= room for p in pareto)})
