"""report.md of an LLM artifact: the cut table, per generated token."""

from __future__ import annotations

from pathlib import Path

from slicer_compile.llm.artifact import LlmArtifact
from slicer_compile.storage import write_text_atomically

REPORT = "report.md"
PLOTS = "plots"
CODEC_PLOT = "bits_vs_agreement.png"
HEADER = ("cut", "edge layers", "edge ms/token", "server ms/token", "hidden B/token", "edge KV B/token",
          "server KV B/token", "edge memory at W̄")


def cut_rows(artifact: LlmArtifact) -> list[tuple[str, ...]]:
    return [(str(c["cut"]), str(c["edge_layers"]), f"{c['edge_ms_per_token']:.3f}", f"{c['server_ms_per_token']:.3f}",
             str(c["hidden_bytes_per_token"]), str(c["edge_kv_bytes_per_token"]),
             str(c["server_kv_bytes_per_token"]), _mib(c["edge_memory_bytes_at_max_tokens"])) for c in artifact.cuts]


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def write_llm_report(artifact: LlmArtifact) -> Path:
    m, spec = artifact.manifest, artifact.spec
    lines = [
        f"# LLM split report: {m['source']}",
        "",
        f"- artifact `{m['artifact_id']}`, slicer-compile {m['tool_version']}",
        f"- {spec.num_layers} decoder layers, hidden {spec.hidden_size}, {spec.num_heads} heads over "
        f"{spec.num_kv_heads} key/value heads of {spec.head_dim}, vocabulary {spec.vocab_size}",
        f"- edge device: {m['device']['description']} ({m['device']['latency_source']})",
        f"- server device: {m['server_device']['description']} ({m['server_device']['latency_source']})",
        f"- W̄ = {m['max_tokens']} tokens; weights: edge {m['weights']['edge']}"
        + (f" (weight-only, groups of {m['weights']['group_size']}: OPSC)" if m['weights']['edge'] != "fp32" else "")
        + f", server {m['weights']['server']}",
        "- cut ℓ: the edge runs the embedding and layers 1..ℓ, the server ℓ+1..L and the head; the hidden "
        "state crosses per token, each side keeps the KV cache of its layers",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
        *("| " + " | ".join(row) + " |" for row in cut_rows(artifact)),
        "",
        *_opsc_lines(artifact),
        *_calibration_lines(artifact),
    ]
    path = artifact.path / REPORT
    write_text_atomically(path, "\n".join(lines) + "\n")
    return path


def _opsc_lines(artifact: LlmArtifact) -> list[str]:
    plan = artifact.manifest.get("opsc")
    if not plan:
        return []
    lines = [f"Edge weights chosen for {_mib(plan['memory_bytes'])} (Sung et al. Eq. 8): "
             f"**{plan['chosen']['weights']}**, deepest cut {plan['chosen']['cut']} — {plan['reason']}.", "",
             "| edge weights | deepest cut that fits | token agreement (all layers on the edge) |", "|---|---:|---:|"]
    for row in plan["candidates"]:
        agreement = "not measured" if row["token_agreement"] is None else f"{row['token_agreement']:.4f}"
        lines.append(f"| {row['weights']} | {row['deepest_cut']} | {agreement} |")
    return lines + [""]


def _calibration_lines(artifact: LlmArtifact) -> list[str]:
    calibration = artifact.manifest.get("calibration") or {}
    if calibration.get("status") != "measured":
        return ["Fidelity: not measured (compile with --calib-text FILE)."]
    lines = [f"Fidelity on {calibration['positions']} positions of the calibration text (unsplit perplexity "
             f"{calibration['perplexity']:.3f}); each token's hidden state coded alone"
             + (f"; the edge's layers at {artifact.edge_weights}" if artifact.edge_weights != "fp32" else "") + ":",
             "", "| cut | codec | bits/token (payload) | bits/token (stream frame) | token agreement | perplexity |",
             "|---:|---|---:|---:|---:|---:|"]
    for cut, rows in calibration["cuts"].items():
        for name, row in rows.items():
            frame = row.get("frame_bits_per_token")
            lines.append(f"| {cut} | {name} | {row['bits_per_token']:.0f} | "
                         f"{'' if frame is None else f'{frame:.0f}'} | {row['token_agreement']:.4f} | "
                         f"{row['perplexity']:.3f} |")
    handover = calibration.get("handover") or {}
    if handover:
        lines += ["", "Hand-over with the KV cache (SLICER Eq. 5, I_kv = 1): the edge's layers' cache shipped "
                  "through each codec, the server carrying on with the whole model:", "",
                  "| cut | KV codec | KV bits per hand-over token | token agreement after | perplexity after |",
                  "|---:|---|---:|---:|---:|"]
        for cut, rows in handover.items():
            for name, row in rows.items():
                lines.append(f"| {cut} | {name} | {row['kv_bits_per_token']:.0f} | {row['token_agreement']:.4f} | "
                             f"{row['perplexity']:.3f} |")
    lines += ["", f"![bits per token against token agreement]({PLOTS}/{CODEC_PLOT})", ""]
    _plot(artifact, calibration)
    return lines


def _plot(artifact: LlmArtifact, calibration: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slicer_compile.storage import save_png

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for cut, rows in calibration["cuts"].items():
        names = list(rows)
        axes.plot([rows[n]["bits_per_token"] for n in names], [rows[n]["token_agreement"] for n in names], "o",
                  label=f"cut {cut}")
        if cut == next(iter(calibration["cuts"])):
            for n in names:
                axes.annotate(n, (rows[n]["bits_per_token"], rows[n]["token_agreement"]), fontsize=7,
                              textcoords="offset points", xytext=(3, 3))
    axes.set_xscale("log")
    axes.set_xlabel("bits per token (hidden state)")
    axes.set_ylabel("greedy token agreement")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    save_png(figure, artifact.path / PLOTS / CODEC_PLOT, dpi=100)
