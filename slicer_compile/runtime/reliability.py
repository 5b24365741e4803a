"""The reliability battery: attack requests against a live split server beside a prober of good requests, with the server's memory and threads sampled.

The server runs in its own process, as ``slicer-compile serve`` runs it. Each attack
is a few bytes or a held connection: payloads that claim 2^26 elements,
Content-Length quirks, malformed JSON, oversized bodies, stalled headers and bodies,
and more connections than the server allows. The prober sends one good request
after another on its own connection and checks every answer against the first.

``tools/reliability_battery.py`` runs it and prints the table BENCHMARKS.md keeps;
the slow test ``tests/runtime/test_reliability_battery.py`` runs a short one.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from slicer_compile.artifact import load_artifact
from slicer_compile.codec import SlicerConfig, encode
from slicer_compile.codec.crafted import HUGE, slicer_constant, tiny_but_huge
from slicer_compile.graph.codec_nodes import payload_name
from slicer_compile.runtime.host import ServerConfig
from slicer_compile.runtime.protocol import InferMessage, encode_message


@dataclass
class BatteryResult:
    attacks: Counter = field(default_factory=Counter)  # (attack, outcome) -> count
    probes_sent: int = 0
    probes_right: int = 0
    probe_failures: Counter = field(default_factory=Counter)
    rss_baseline: int = 0
    rss_peak: int = 0
    threads_peak: int = 0
    connections_held_peak: int = 0

    @property
    def unexpected(self) -> int:
        return sum(n for (_, outcome), n in self.attacks.items() if outcome.startswith("unexpected"))


def _proc_status(pid: int) -> tuple[int, int]:
    """(resident bytes, threads) of a process, from /proc."""
    text = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) * 1024
    return rss, int(re.search(r"Threads:\s+(\d+)", text).group(1))


_SERVE = """
import json, sys
from slicer_compile.runtime.server import ServerConfig, SplitServer
server = SplitServer(sys.argv[1], port=0, config=ServerConfig(**json.loads(sys.argv[2])))
print(server.url, flush=True)
server.serve_forever()
"""


def start_server(artifact_dir: Path, config: ServerConfig) -> tuple[subprocess.Popen, str, int]:
    """A server process (SplitServer, as ``slicer-compile serve`` runs it) on a free
    port; (process, host, port) once it listens."""
    process = subprocess.Popen([sys.executable, "-c", _SERVE, str(artifact_dir), json.dumps(asdict(config))],
                               stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip()
    if not line:
        raise RuntimeError(f"the server did not start (exit {process.wait()})")
    host, port = line.rsplit(":", 1)
    return process, host, int(port)


def _infer_body(artifact, split_id: str, payload: bytes) -> bytes:
    activation = artifact.split(split_id).activations[0]
    body, headers = encode_message(InferMessage({payload_name(activation.name): np.frombuffer(payload, np.uint8)},
                                                {"slicer_artifact_id": artifact.id}), request=True)
    return (f"POST /v2/models/{split_id}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            f"Inference-Header-Content-Length: {headers['Inference-Header-Content-Length']}\r\n\r\n").encode() + body


def _status_of(answer: bytes) -> str:
    parts = answer.split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 and parts[0].startswith(b"HTTP/") else "closed"


class _Attacker:
    def __init__(self, host: str, port: int, artifact, split_id: str, max_request_bytes: int):
        self.host, self.port, self.artifact, self.split_id = host, port, artifact, split_id
        self.max_request_bytes = max_request_bytes
        self.held = 0
        self._lock = threading.Lock()

    def _exchange(self, data: bytes, timeout: float = 60) -> str:
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.sendall(data)
            try:
                return _status_of(sock.makefile("rb").read(64))
            except OSError:
                return "reset"

    def requests(self) -> list[tuple[str, bytes, set[str]]]:
        """(attack, bytes, acceptable outcomes) of every one-shot attack."""
        head = f"POST /v2/models/{self.split_id}/infer HTTP/1.1\r\nHost: x\r\n"
        attacks = [(f"tiny-huge/{name}", _infer_body(self.artifact, self.split_id, payload), {"400"})
                   for name, payload in tiny_but_huge().items()]
        attacks.append(("valid-2^26-slicer", _infer_body(self.artifact, self.split_id, slicer_constant(HUGE)), {"400"}))
        for quirk in ("-1", "1_0", "+10", "10\r\nContent-Length: 20"):
            attacks.append((f"content-length {quirk.split(chr(13))[0]}{' x2' if chr(13) in quirk else ''}",
                            (head + f"Content-Length: {quirk}\r\n\r\n").encode() + b"x" * 10, {"400"}))
        for name, json_header in (("parameters-list", b'{"inputs":[{"name":"a","datatype":"UINT8","shape":[1],'
                                                      b'"data":[1],"parameters":[1,2]}]}'),
                                  ("json-100000-deep", b'{"inputs":' + b"[" * 100_000 + b"]" * 100_000 + b"}")):
            attacks.append((name, (head + f"Content-Length: {len(json_header)}\r\n\r\n").encode() + json_header,
                            {"400", "413"}))
        oversized = self.max_request_bytes + 1
        attacks.append(("oversized", (head + f"Content-Length: {oversized}\r\n\r\n").encode(), {"413"}))
        return attacks

    def one_shot(self, result: BatteryResult, lock: threading.Lock) -> None:
        for attack, data, expected in self.requests():
            try:
                outcome = self._exchange(data)
            except OSError as exc:
                outcome = f"connect-{type(exc).__name__}"
            label = outcome if outcome in expected else f"unexpected {outcome}"
            with lock:
                result.attacks[(attack, label)] += 1

    def hold(self, kind: str, count: int, result: BatteryResult, lock: threading.Lock) -> None:
        """Open ``count`` connections that stall (headers, body) or idle; wait until the
        server closes each (a stalled one must be dropped, with 408 for a body)."""
        sockets = []
        for _ in range(count):
            try:
                sock = socket.create_connection((self.host, self.port), timeout=120)
            except OSError:
                with lock:
                    result.attacks[(f"held-{kind}", "refused at connect")] += 1
                continue
            if kind == "headers":
                sock.sendall(f"POST /v2/models/{self.split_id}/infer HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode())
            elif kind == "body":
                sock.sendall(f"POST /v2/models/{self.split_id}/infer HTTP/1.1\r\nHost: x\r\n"
                             f"Content-Length: {self.max_request_bytes}\r\n\r\n".encode()
                             + b"\0" * (self.max_request_bytes // 2))
            sockets.append(sock)
        with self._lock:
            self.held += len(sockets)
            with lock:
                result.connections_held_peak = max(result.connections_held_peak, self.held)
        for sock in sockets:
            try:
                outcome = _status_of(sock.makefile("rb").read(64))
            except OSError:
                outcome = "reset"
            finally:
                sock.close()
            expected = {"headers": {"closed"}, "body": {"408"}, "idle": {"closed"}}[kind]
            with lock:
                result.attacks[(f"held-{kind}", outcome if outcome in expected else f"unexpected {outcome}")] += 1
        with self._lock:
            self.held -= len(sockets)


def run_battery(artifact_dir: str | Path, config: ServerConfig, rounds: int = 3, holders: int = 16) -> BatteryResult:
    """Serve ``artifact_dir`` with ``config``, attack it for ``rounds`` rounds beside a
    prober; the counts."""
    from slicer_compile.runtime.client import EdgeClient

    artifact = load_artifact(artifact_dir)
    split_id = max((s for s in artifact.splits if s.files and s.activations), key=lambda s: s.position).id
    process, host, port = start_server(Path(artifact_dir), config)
    result, lock = BatteryResult(), threading.Lock()
    done = threading.Event()
    try:
        result.rss_baseline, _ = _proc_status(process.pid)
        x = artifact.example_inputs(seed=1)
        client = EdgeClient(artifact, f"{host}:{port}")
        knobs = SlicerConfig(sparsity=0.75)
        reference = client.infer(x, split=split_id, config=knobs).outputs

        def sample() -> None:
            while not done.is_set():
                rss, threads = _proc_status(process.pid)
                with lock:
                    result.rss_peak, result.threads_peak = max(result.rss_peak, rss), max(result.threads_peak, threads)
                done.wait(0.02)

        def probe() -> None:
            while not done.is_set():
                try:
                    outputs = client.infer(x, split=split_id, config=knobs).outputs
                    right = all(np.allclose(outputs[n], reference[n], rtol=1e-4, atol=1e-5) for n in reference)
                    with lock:
                        result.probes_sent += 1
                        result.probes_right += right
                        if not right:
                            result.probe_failures["wrong answer"] += 1
                except Exception as exc:  # noqa: BLE001 (a probe failure is counted, by kind)
                    with lock:
                        result.probes_sent += 1
                        result.probe_failures[type(exc).__name__ + ": " + str(exc)[:60]] += 1

        attacker = _Attacker(host, port, artifact, split_id, config.max_request_bytes)
        background = [threading.Thread(target=sample, daemon=True), threading.Thread(target=probe, daemon=True)]
        for thread in background:
            thread.start()
        for _ in range(rounds):
            workers = [threading.Thread(target=attacker.one_shot, args=(result, lock)) for _ in range(4)]
            workers += [threading.Thread(target=attacker.hold, args=(kind, holders, result, lock))
                        for kind in ("headers", "body", "idle")]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        done.set()
        for thread in background:
            thread.join()
        client.close()
    finally:
        done.set()
        process.terminate()
        process.wait(timeout=120)
    return result


def render(result: BatteryResult) -> str:
    """The battery as the Markdown table BENCHMARKS.md keeps."""
    lines = ["| attack | outcome | count |", "|---|---|---|"]
    lines += [f"| {attack} | {outcome} | {n} |" for (attack, outcome), n in sorted(result.attacks.items())]
    lost = result.probes_sent - result.probes_right
    lines += ["", f"good requests: {result.probes_sent} sent, {result.probes_right} answered right, {lost} lost "
                  f"({dict(result.probe_failures) or 'no failures'})",
              f"attack cases: {sum(result.attacks.values())}, unexpected outcomes: {result.unexpected}",
              f"connections held at once by attackers (peak): {result.connections_held_peak}",
              f"server RSS: {result.rss_baseline / 2**20:.0f} MiB at rest, {result.rss_peak / 2**20:.0f} MiB peak "
              f"(+{(result.rss_peak - result.rss_baseline) / 2**20:.0f} MiB); threads peak {result.threads_peak}",
              f"machine: {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d')}"]
    return "\n".join(lines)
