#!/usr/bin/env python3
"""End to end, one client: the split path (edge part, encode, HTTP, the server's decode
and server part, the reply) against running the whole model locally in ONNX Runtime,
measured in one run, rounds interleaved.

    python tools/bench_end_to_end.py [--requests 300] [--model examples/digits_cnn.onnx]

The server is `slicer-compile serve` in its own process (as a deployment has it: the
client does not share its interpreter); the client is `EdgeClient`, kept-alive. The
local baseline is the full model in an ONNX Runtime session configured as the
package configures every session where a user waits (optimised, no spinning). Target
(issue 22): split path <= 2x the local run for a small model.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slicer_compile.backends.onnxrt import OnnxrtRunner  # noqa: E402
from slicer_compile.compiler import compile_model  # noqa: E402
from slicer_compile.runtime.client import EdgeClient  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(artifact_dir: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "slicer_compile.cli", "serve", str(artifact_dir), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"the server exited: {server.stdout.read()}")
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the server did not start within 60 s")


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--model", type=Path, default=ROOT / "examples" / "digits_cnn.onnx")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        artifact = compile_model(args.model, device="jetson", out_dir=Path(tmp) / "a", max_pairs=4)
        spec = artifact.manifest["inputs"]
        rng = np.random.default_rng(0)
        sample = {i["name"]: rng.standard_normal([1] + list(i["shape"][1:])).astype(i["dtype"]) for i in spec}
        splits = [s for s in artifact.splits if s.files]
        port = free_port()
        server = start_server(artifact.path, port)
        rows = []
        try:
            with OnnxrtRunner((artifact.path / "model.onnx").read_bytes(), optimize=True) as local, \
                    EdgeClient(artifact.path, f"127.0.0.1:{port}") as client:
                for _ in range(20):  # warm both paths
                    local.infer(sample)
                    for split in splits:
                        client.infer(sample, split=split.id)
                for _ in range(3):  # interleaved rounds
                    times = []
                    for _ in range(args.requests):
                        start = time.perf_counter()
                        local.infer(sample)
                        times.append(time.perf_counter() - start)
                    local_ms = median_ms(times)
                    for split in splits:
                        times, parts = [], []
                        for _ in range(args.requests):
                            start = time.perf_counter()
                            result = client.infer(sample, split=split.id)
                            times.append(time.perf_counter() - start)
                            parts.append(result.timings)
                        rows.append((split.id, local_ms, median_ms(times),
                                     *(median_ms([p[k] for p in parts]) for k in ("edge_s", "encode_s", "round_trip_s")),
                                     statistics.median(p["payload_bytes"] for p in parts)))
        finally:
            server.terminate()
            server.wait(30)
    print(f"{args.model.name}, one client, {args.requests} requests per split per round, 3 rounds; "
          f"server: slicer-compile serve in its own process")
    print("| split | local ORT p50 ms | split path p50 ms | edge ms | encode ms | HTTP round trip ms | payload B "
          "| split / local |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for sid, local_ms, split_ms, edge_ms, encode_ms, rtt_ms, nbytes in rows:
        print(f"| {sid} | {local_ms:.3f} | {split_ms:.3f} | {edge_ms:.3f} | {encode_ms:.3f} | {rtt_ms:.3f} | "
              f"{nbytes:.0f} | {split_ms / local_ms:.2f}x |")


if __name__ == "__main__":
    main()
