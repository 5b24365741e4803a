#!/usr/bin/env python3
"""Failover, measured: a server killed with SIGKILL mid-run, and what it costs.

    python tools/bench_failover.py LLM_ARTIFACT SPLIT_ARTIFACT [--tokens 64] [--kill-at 20]
        [--clients 64] [--requests 200]

* LLM: one generation at half the layers with the calibrated per-token codec, on two
  servers; the first is killed after token ``--kill-at``. Reported: whether the tokens
  equal the unkilled run's, the resumed step's time (detection + resume on the second
  server) against a normal step and against a fresh prefill of the same prefix, and the
  bytes the client keeps per token (and so for a 2,048-token session, here and at 4096
  values per token with the same codec).
* One-shot: ``--clients`` clients × ``--requests`` requests of the split artifact's
  deepest split over two servers, the first killed halfway; requests lost (must be 0).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slicer_compile.codec import encode  # noqa: E402
from slicer_compile.llm.calibrate import SETTINGS  # noqa: E402
from slicer_compile.runtime.client import EdgeClient  # noqa: E402
from slicer_compile.runtime.llm.client import EdgeLLM  # noqa: E402
from tests.runtime.servers import ServerProcess  # noqa: E402


def llm_failover(artifact: Path, tokens: int, kill_at: int) -> None:
    first, second = ServerProcess(artifact), ServerProcess(artifact)
    try:
        with EdgeLLM(artifact, second.url) as alone:
            cut = alone.spec.num_layers // 2
            plan = alone.plan(tokens, cut=cut)
            prompt = list(b"def fibonacci(n):")
            unkilled = list(alone.generate(prompt, tokens, plan=plan))
            # A fresh prefill of the prefix the resume rebuilds: prompt + the tokens so far.
            prefix = prompt + [s.token for s in unkilled[:kill_at]]
            fresh = [next(iter(alone.generate(prefix, 1, plan=plan))).seconds for _ in range(5)]
        with EdgeLLM(artifact, [first.url, second.url], timeout_s=10) as llm:
            steps = []
            for step in llm.generate(prompt, tokens, plan=plan):
                steps.append(step)
                if len(steps) == kill_at:
                    first.kill()
        same = [s.token for s in steps] == [s.token for s in unkilled]
        resumed = [s for s in steps if s.resumed]
        normal = float(np.median([s.seconds for s in steps[1:] if not s.resumed]))
        kept = sum(s.payload_bytes for s in steps) / (len(prompt) + tokens)
        wide = len(encode(np.random.default_rng(0).standard_normal((1, 1, 4096)).astype(np.float32),
                          SETTINGS[plan.codec])) if SETTINGS[plan.codec] is not None else 4 * 4096
        print(f"LLM: {tokens} tokens at cut {cut}, codec {plan.codec}, first server killed after token {kill_at}")
        print(f"  tokens equal the unkilled run's: {same}; resumed steps: {len(resumed)}")
        print(f"  resumed step {resumed[0].seconds * 1e3:.2f} ms (detection + resume) against a normal step "
              f"{normal * 1e3:.2f} ms and a fresh prefill of the same {len(prefix)} tokens "
              f"{np.median(fresh) * 1e3:.2f} ms")
        print(f"  kept by the client: {kept:.0f} bytes/token -> {2048 * kept / 2**20:.2f} MiB for 2,048 tokens here; "
              f"{wide} bytes/token at 4096 values -> {2048 * wide / 2**20:.1f} MiB")
    finally:
        first.close()
        second.close()


def oneshot_failover(artifact: Path, clients: int, requests: int) -> None:
    from slicer_compile.artifact import load_artifact

    loaded = load_artifact(artifact)
    split = max((s for s in loaded.splits if s.files), key=lambda s: s.position).id
    shape = [d if isinstance(d, int) else 1 for d in loaded.manifest["inputs"][0]["shape"]]
    name = loaded.manifest["inputs"][0]["name"]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    first, second = ServerProcess(artifact), ServerProcess(artifact)
    answered, errors, lock = [0], [], threading.Lock()
    total = clients * requests

    def client(c: int) -> None:
        servers = f"{first.url},{second.url}" if c % 2 == 0 else f"{second.url},{first.url}"
        try:
            with EdgeClient(artifact, servers, timeout_s=30) as edge:
                for _ in range(requests):
                    edge.infer({name: x}, split=split)
                    with lock:
                        answered[0] += 1
                        if answered[0] == total // 2:
                            first.kill()
        except Exception as exc:  # noqa: BLE001 - counted, not raised: the point is how many
            with lock:
                errors.append(repr(exc))

    try:
        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        print(f"one-shot: {clients} clients x {requests} requests, split {split}, first of two servers killed "
              f"halfway: {answered[0]} of {total} answered, {total - answered[0]} lost, {elapsed:.1f} s"
              + (f"; errors: {errors[:3]}" if errors else ""))
    finally:
        first.close()
        second.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("llm_artifact", type=Path)
    parser.add_argument("split_artifact", type=Path)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--kill-at", type=int, default=20)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    llm_failover(args.llm_artifact, args.tokens, args.kill_at)
    oneshot_failover(args.split_artifact, args.clients, args.requests)


if __name__ == "__main__":
    main()
