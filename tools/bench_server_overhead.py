#!/usr/bin/env python3
"""The embedded server's overhead per request against a plain HTTP echo of the same
bytes on the same stack (aiohttp), measured in one run, one client, kept-alive.

    python tools/bench_server_overhead.py [--requests 400]

The request is a real KServe v2 infer request for the deepest split of the digits
example. Overhead = round trip - the server part's compute (which the server reports
in its reply); the echo server answers the same body back unread. Target (issue 22):
overhead <= 2x the echo's round trip.

Servers, in one run: the default ("now": a lone request runs on the thread that
decoded it, with the C++ decoder where `slicer-compile build-kernels --host-only` has
built it; small lone requests answered on the event loop itself), the same with the
numpy decoder, one that answers on a worker thread, one that always hands the request
to the batcher thread (run_alone_inline=False, numpy: the server before this change), and one
whose batches also always wait out the queue delay (wait_only_when_busy=False).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slicer_compile.codec import SlicerConfig, encode  # noqa: E402
from slicer_compile.compiler import compile_model  # noqa: E402
from slicer_compile.runtime.protocol import HEADER_LENGTH, InferMessage, decode_message, encode_message  # noqa: E402
from slicer_compile.runtime.server import ServerConfig, SplitServer  # noqa: E402


def echo_server() -> tuple[str, int, asyncio.AbstractEventLoop]:
    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/octet-stream")

    loop = asyncio.new_event_loop()
    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    threading.Thread(target=loop.run_forever, daemon=True).start()
    host, port = runner.addresses[0][:2]
    return host, port, loop


def round_trips(host: str, port: int, path: str, body: bytes, headers: dict, count: int) -> tuple[list[float], list]:
    connection = http.client.HTTPConnection(host, port)
    times, replies = [], []
    for _ in range(count):
        start = time.perf_counter()
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        times.append(time.perf_counter() - start)
        replies.append((response.status, response.getheader(HEADER_LENGTH), data))
    connection.close()
    return times, replies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        artifact = compile_model(ROOT / "examples" / "digits_cnn.onnx", device="jetson", out_dir=Path(tmp) / "a",
                                 max_pairs=3)
        split = max((s for s in artifact.splits if s.files and s.activations), key=lambda s: s.position)
        activation = split.activations[0]
        payload = encode(np.random.default_rng(0).standard_normal(activation.shape).astype(np.float32),
                         SlicerConfig(sparsity=0.75))
        body, headers = encode_message(InferMessage({f"{activation.name}.payload": np.frombuffer(payload, np.uint8)},
                                                    {"slicer_artifact_id": artifact.id, "binary_data_output": True}),
                                       request=True)
        host, port, _ = echo_server()
        from slicer_compile.codec.native import built_host_coder

        native = built_host_coder() is not None
        configs = {f"now ({'C++' if native else 'numpy'} decoder)": ServerConfig(),
                   "now, numpy decoder": ServerConfig(decoder="numpy"),
                   "on a worker, not the loop": ServerConfig(inline_max_bytes=0),
                   "via the batcher thread": ServerConfig(decoder="numpy", run_alone_inline=False),
                   "always waits": ServerConfig(decoder="numpy", run_alone_inline=False, wait_only_when_busy=False)}
        if not native:
            del configs["now, numpy decoder"]
        servers = {name: SplitServer(artifact.path, port=0, config=config).start() for name, config in configs.items()}
        try:
            rows = []
            for _ in range(3):  # interleaved rounds: all see the same machine state
                echo_p50 = statistics.median(round_trips(host, port, "/echo", body, headers, args.requests)[0])
                for name, server in servers.items():
                    shost, sport = server.url.rsplit(":", 1)
                    times, replies = round_trips(shost, int(sport), f"/v2/models/{split.id}/infer", body, headers,
                                                 args.requests)
                    compute = [decode_message(d, int(h) if h else None, request=False).parameters["server_compute_us"]
                               * 1e-6 for status, h, d in replies if status == 200]
                    assert len(compute) == args.requests, "a request failed"
                    overhead = statistics.median(times) - statistics.median(compute)
                    rows.append((name, echo_p50, statistics.median(times), statistics.median(compute), overhead))
        finally:
            for server in servers.values():
                server.stop()
    print(f"request: {len(body)} bytes, split {split.id}; {args.requests} requests per round, one client, 3 rounds")
    print("| server | echo p50 ms | split p50 ms | server compute p50 ms | overhead ms | overhead / echo |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, echo_p50, split_p50, compute, overhead in rows:
        print(f"| {name} | {echo_p50 * 1e3:.3f} | {split_p50 * 1e3:.3f} | {compute * 1e3:.3f} | {overhead * 1e3:.3f} | "
              f"{overhead / echo_p50:.2f}x |")


if __name__ == "__main__":
    main()
