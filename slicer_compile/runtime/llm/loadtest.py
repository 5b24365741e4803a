"""`slicer-compile bench llm`: what a split LLM costs the server, and the link.

* **Server time against clients** (SLICER Fig. 2, right): a fixed workload — P prompts
  of T tokens each — run by C clients at once (each takes P/C prompts in turn), per
  cut: cloud only (ℓ = 0, the server runs every layer) and splits at increasing ℓ. The
  clients step in lockstep (every active session's step queued before the batcher looks:
  ``LlmHost.hold``), the arrival that batches best; the edge's hidden states are
  computed beforehand (teacher-forced on the unsplit model's own greedy tokens, which the
  server's answers must reproduce), so that the server's compute is all that is timed.
* **The link, per mode** (one client over HTTP on loopback): request bytes and codec
  payload bytes per token, and end-to-end ms per token, for the per-token split with
  float16 hidden states, with the calibrated codec, and a hand-over.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from slicer_compile.llm.artifact import load_llm_artifact
from slicer_compile.llm.stack import LayerStack, generate_greedy, split_stacks
from slicer_compile.runtime.llm.host import LlmHost, LlmServerConfig, Step


@dataclass(frozen=True)
class ServerTimeRow:
    cut: int
    clients: int
    tokens: int
    server_s: float  # compute over the whole workload
    server_ms_per_token: float
    mean_batch: float
    vs_cloud_only: float  # cloud-only server time at the same client count / this one's
    exact: bool  # every answered token equals the unsplit model's


@dataclass(frozen=True)
class LinkRow:
    mode: str
    transport: str  # "http" (a KServe v2 request per step) or "stream" (one WebSocket, a frame per token)
    tokens: int
    request_bytes_per_token: float  # what the client counts: request bodies, or frames with their WebSocket framing
    payload_bytes_per_token: float  # the codec payloads (frames) inside them
    socket_up_per_step: float  # counted at the socket, client to server, a decode step (median; nan: none)
    socket_down_per_step: float  # server to client
    socket_per_token: float  # both ways, the whole sequence (connection, prompt, header) over its tokens
    ms_per_token: float
    token_agreement: float


def workload(spec, parts, prompts: int, prompt_len: int, tokens: int, seed: int = 0
             ) -> tuple[list[list[int]], list[list[int]]]:
    """Random prompts and the unsplit model's greedy continuation of each."""
    rng = np.random.default_rng(seed)
    prompt_ids = [rng.integers(0, spec.vocab_size, prompt_len).tolist() for _ in range(prompts)]
    edge, server = split_stacks(spec, parts, spec.num_layers)
    try:
        return prompt_ids, [generate_greedy(edge, server, p, tokens) for p in prompt_ids]
    finally:
        edge.close()
        server.close()


def edge_hidden(spec, parts, cut: int, sequence: list[int]) -> np.ndarray:
    """The hidden states after layer ``cut`` of every position of ``sequence`` (one pass:
    causal attention makes it what a token-by-token edge would compute)."""
    stack = LayerStack(spec, parts.layers[:cut], embed=parts.embed)
    try:
        return stack.forward(stack.embed(np.asarray(sequence)))
    finally:
        stack.close()


def server_time(artifact_dir: str | Path, clients: list[int], cuts: list[int], prompts: int = 64,
                tokens: int = 64, prompt_len: int = 16, progress: Callable[[str], None] = lambda s: None
                ) -> list[ServerTimeRow]:
    artifact = load_llm_artifact(artifact_dir)
    spec, parts = artifact.spec, artifact.parts()
    progress("the unsplit model's tokens")
    prompt_ids, continuations = workload(spec, parts, prompts, prompt_len, tokens)
    rows, cloud = [], {}
    host = LlmHost(artifact_dir, LlmServerConfig(max_sessions=max(clients), max_batch=max(clients)))
    try:
        for cut in cuts:
            progress(f"edge hidden states at cut {cut}")
            hidden = [edge_hidden(spec, parts, cut, p + c[:-1]) if cut else None
                      for p, c in zip(prompt_ids, continuations)]
            for n in clients:
                progress(f"cut {cut}, {n} clients")
                row = _run_workload(host, cut, n, prompt_ids, continuations, hidden, prompt_len, tokens)
                if cut == 0:
                    cloud[n] = row["server_s"]
                base = cloud.get(n)
                rows.append(ServerTimeRow(cut, n, row["tokens"], row["server_s"],
                                          1e3 * row["server_s"] / row["tokens"], row["mean_batch"],
                                          base / row["server_s"] if base and row["server_s"] else float("nan"),
                                          row["exact"]))
    finally:
        host.stop()
    return rows


def _run_workload(host: LlmHost, cut: int, clients: int, prompt_ids, continuations, hidden, prompt_len: int,
                  tokens: int) -> dict:
    waiting = list(range(len(prompt_ids)))
    active: list[int] = []  # the prompt each busy client is on
    position: dict[int, int] = {}  # prompt -> its next step
    server_s, batches, answered, exact = 0.0, [], 0, True
    while waiting or active:
        while len(active) < clients and waiting:  # a free client takes the next prompt
            active.append(waiting.pop(0))
        with host.hold():
            submitted = []
            for p in active:
                t = position.get(p, 0)
                first = t == 0
                step = Step(f"bench-{cut}-{clients}-{p}", start=first, end=t == tokens - 1, cut=cut)
                if cut == 0:
                    seq = prompt_ids[p] + continuations[p]
                    step.token_ids = np.array([seq[:prompt_len]] if first else [[seq[prompt_len + t - 1]]])
                else:
                    h = hidden[p]
                    step.hidden = h[:, :prompt_len] if first else h[:, prompt_len + t - 1: prompt_len + t]
                submitted.append((p, t, host.submit(step)))
        for p, t, future in submitted:
            result = future.result(120)
            server_s += result.compute_s
            batches.append(result.batch_sizes[-1])
            answered += 1
            exact &= result.tokens == [continuations[p][t]]
            position[p] = t + 1
            if t + 1 == tokens:
                active.remove(p)
    return {"server_s": server_s, "tokens": answered, "mean_batch": float(np.mean(batches)), "exact": exact}


def link(artifact_dir: str | Path, server_url: str, cut: int, tokens: int = 32, prompt: bytes | list[int] = b"def ",
         progress: Callable[[str], None] = lambda s: None) -> list[LinkRow]:
    """One client through a byte-counting proxy (runtime.linkmeter): per mode and
    transport, the bytes per token the client counts and those that cross the socket,
    ms per token, and token agreement with the raw per-token split."""
    from slicer_compile.runtime.linkmeter import CountingProxy
    from slicer_compile.runtime.llm.client import EdgeLLM, Plan

    artifact = load_llm_artifact(artifact_dir)
    spec = artifact.spec
    prompt = list(prompt) if isinstance(prompt, bytes) else prompt
    prompt = [t % spec.vocab_size for t in prompt]
    rows = []
    with CountingProxy(server_url) as proxy, EdgeLLM(artifact, proxy.url) as http, \
            EdgeLLM(artifact, proxy.url, transport="stream") as stream:
        reference = [s.token for s in http.generate(prompt, tokens, cut=cut, codec="float32")]
        calibrated = http.plan(tokens, cut=cut)
        measured = (artifact.manifest.get("calibration") or {}).get("status") == "measured"
        chosen_by = "the fewest calibrated bits within 1%" if measured else "no calibration: the default"
        split = [(f"per-token split, {codec}", dict(cut=cut, codec=codec))
                 for codec in ("float16", "int8", "zstd", "dense-6", "slicer-0.5")]
        split.append((f"per-token split, {calibrated.codec} ({chosen_by})", dict(cut=cut)))
        split.append(("cloud only (token ids)", dict(cut=0)))
        modes = [(name, client, how) for name, how in split for client in (http, stream)]
        modes += [("hand-over after 8 edge tokens, KV cache shipped", http,
                   dict(plan=Plan(8, cut, True, calibrated.codec, calibrated.kv_codec, "bench"))),
                  ("hand-over after 8 edge tokens, KV recomputed", http,
                   dict(plan=Plan(8, cut, False, calibrated.codec, calibrated.kv_codec, "bench")))]
        for name, client, how in modes:
            progress(f"{name} over {client.transport}")
            steps, deltas = [], []
            before = proxy.counts()
            for step in client.generate(prompt, tokens, **how):
                after = proxy.counts()
                steps.append(step)
                deltas.append(after - before)
                before = after
            rows.append(_link_row(name, client.transport, steps, deltas, reference))
    return rows


def _link_row(name: str, transport: str, steps, deltas, reference) -> LinkRow:
    # Decode steps: a per-token mode's after the first (which carries the prompt and
    # opens the connection); a hand-over has none (its tokens come in one reply).
    decode = [d for s, d in zip(steps[1:], deltas[1:]) if s.mode == "split"]
    total = sum(d.up + d.down for d in deltas)
    return LinkRow(name, transport, len(steps), sum(s.sent_bytes for s in steps) / len(steps),
                   sum(s.payload_bytes for s in steps) / len(steps),
                   float(np.median([d.up for d in decode])) if decode else float("nan"),
                   float(np.median([d.down for d in decode])) if decode else float("nan"),
                   total / len(steps), 1e3 * sum(s.seconds for s in steps) / len(steps),
                   float(np.mean([s.token == r for s, r in zip(steps, reference)])))


def rows_as_dicts(rows) -> list[dict]:
    return [asdict(r) for r in rows]


def plot_server_time(rows: list[ServerTimeRow], path: str | Path) -> Path:
    """Server compute per token against clients, one line per cut."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slicer_compile.storage import save_png

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for cut in dict.fromkeys(r.cut for r in rows):
        pts = [r for r in rows if r.cut == cut]
        ax.plot([r.clients for r in pts], [r.server_ms_per_token for r in pts], "o-",
                label="cloud only" if cut == 0 else f"split at layer {cut}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("clients at once")
    ax.set_ylabel("server compute per token (ms)")
    ax.legend(fontsize=8)
    ax.set_title("Server time per token: cloud only against splits at increasing depth")
    fig.tight_layout()
    return save_png(fig, path)
