"""Concurrent edge clients against the embedded server, on loopback.

The SLICER scaling experiment, measured here: for each split (cloud-only first,
then deeper) and each number of clients, every client sends requests back to
back; we record throughput, round-trip percentiles, and the server's compute
time per request. Clients run as threads of this process, so on a small
machine they compete with the server for cores: compare splits within a run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from slicer_compile.artifact import load_artifact
from slicer_compile.codec import SlicerConfig
from slicer_compile.runtime.client import EdgeClient
from slicer_compile.runtime.server import ServerConfig, SplitServer
from slicer_compile.storage import save_png


@dataclass(frozen=True)
class LoadRow:
    split_id: str
    edge_flops_share: float
    clients: int
    requests: int
    answered: int
    throughput_rps: float
    round_trip_p50_ms: float
    round_trip_p99_ms: float
    server_compute_us: float  # per request (batch time / batch size), mean
    server_total_us: float  # receipt to answer, mean
    mean_batch: float
    bytes_sent: float


def drive(artifact_dir, server_url: str | list[str], split_id: str, clients: int, requests: int,
          inputs: dict[str, np.ndarray], config: SlicerConfig | None = None) -> tuple[LoadRow, list[dict]]:
    """``clients`` threads, each sending ``requests`` requests; returns the row and every
    reply. Several servers (a list): client i talks to server i mod N, as a load balancer
    that spreads connections would."""
    artifact = load_artifact(artifact_dir)
    urls = [server_url] if isinstance(server_url, str) else list(server_url)
    results: list[list] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        try:
            with EdgeClient(artifact, urls[i % len(urls)]) as c:
                c.infer(inputs, split=split_id, config=config)  # warm: session, connection
                barrier.wait()
                for _ in range(requests):
                    results[i].append(c.infer(inputs, split=split_id, config=config))
        except BaseException as exc:  # reported after the run; a lost request fails the count below
            errors.append(exc)
            try:
                barrier.abort()
            except threading.BrokenBarrierError:
                pass

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    replies = [r for per_client in results for r in per_client]
    if errors:
        raise errors[0]
    timings = [r.timings for r in replies]
    rt = np.array([t["round_trip_s"] for t in timings]) * 1e3
    info = artifact.split(split_id)
    row = LoadRow(split_id, info.edge_share, clients, clients * requests, len(replies), len(replies) / wall,
                  float(np.percentile(rt, 50)), float(np.percentile(rt, 99)),
                  _mean(timings, "server_compute_s") * 1e6, _mean(timings, "server_s") * 1e6,
                  _mean(timings, "batch_size"), _mean(timings, "bytes_sent"))
    return row, replies


def _mean(timings: list[dict], key: str) -> float:
    """The mean of what the server reported (nan where it reports none: Triton does not
    say its batch sizes or compute per request in a reply)."""
    values = [t[key] for t in timings if t.get(key) is not None]
    return float(np.mean(values)) if values else float("nan")


def run_load(artifact_dir, clients: list[int], requests: int, splits: list[str] | None = None,
             config: ServerConfig | None = None, progress=None, servers: int = 1, engine: str = "embedded"
             ) -> list[LoadRow]:
    """The scaling experiment over splits × client counts, on ``servers`` servers on
    loopback ports (``engine``: "embedded", or "triton": a real Triton on the generated
    repository, runtime.triton_server), the clients spread across them."""
    import contextlib
    import tempfile

    artifact = load_artifact(artifact_dir)
    chosen = splits or [s.id for s in sorted((s for s in artifact.splits if s.files), key=lambda s: s.position)]
    inputs = artifact.example_inputs()
    rows = []
    with contextlib.ExitStack() as stack:
        if engine == "triton":
            from slicer_compile.runtime.triton import write_repository
            from slicer_compile.runtime.triton_server import TritonServer, has_backend

            repository = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="slicer-triton-"))) / "repo"
            write_repository(artifact_dir, repository, server_backend="onnxruntime" if has_backend("onnxruntime")
                             else "python")
            urls = [stack.enter_context(TritonServer(repository)).http_url for _ in range(servers)]
        else:
            urls = [stack.enter_context(SplitServer(artifact_dir, port=0, config=config, splits=chosen)).url
                    for _ in range(servers)]
        for split_id in chosen:
            for n in clients:
                if progress:
                    progress(f"{split_id}, {n} clients, {servers} {engine} server(s)")
                rows.append(drive(artifact_dir, urls, split_id, n, requests, inputs)[0])
    return rows


def plot_load(rows: list[LoadRow], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for split_id in dict.fromkeys(r.split_id for r in rows):
        pts = [r for r in rows if r.split_id == split_id]
        label = f"{split_id} ({100 * pts[0].edge_flops_share:.0f}% on edge)"
        left.plot([r.clients for r in pts], [r.server_compute_us for r in pts], "o-", label=label)
        right.plot([r.clients for r in pts], [r.throughput_rps for r in pts], "o-", label=label)
    left.set_xscale("log", base=2)
    right.set_xscale("log", base=2)
    left.set_xlabel("clients")
    right.set_xlabel("clients")
    left.set_ylabel("server compute per request (µs)")
    right.set_ylabel("throughput (requests/s)")
    left.legend(fontsize=7)
    fig.suptitle("Server load vs clients: cloud-only and splits at increasing depth")
    fig.tight_layout()
    return save_png(fig, path)


def rows_as_dicts(rows: list[LoadRow]) -> list[dict]:
    return [asdict(r) for r in rows]
