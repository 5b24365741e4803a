#!/usr/bin/env python3
"""Per-token codec cost: one hidden vector (4096 float32 values by default) encoded and
decoded, as a per-token split does once per generated token; every codec of the menu
through the Python API, and SLICER through the C++ host coder where `slicer-compile
build-kernels --host-only` has built it, measured in one run.

    python tools/bench_token_codec.py [--elements 4096] [--repeat 2000] [--baseline-library OLD.so]

``--baseline-library``: another build of libslicer_host.so (say, of an earlier commit:
``git worktree add /tmp/old REV && slicer-compile build-kernels --host-only --source
/tmp/old --build-dir /tmp/old/build``) timed in the same run, through this wrapper.

Target (LLM issue, one CPU core): encode + decode <= 50 µs with the C++ host coder,
<= 200 µs through the Python API.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slicer_compile.codec import Float16Config, Int8Config, SlicerConfig, TabqConfig, ZstdConfig, decode, encode  # noqa: E402
from slicer_compile.codec.native import HostCoder, built_host_coder  # noqa: E402
from tools.bench_native import median_ms  # noqa: E402  (the same timing as the C++/numpy bench)


def median_us(fn, repeat: int) -> float:
    for _ in range(min(50, repeat)):  # warm caches and the allocator before timing
        fn()
    return 1e3 * median_ms(fn, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elements", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--baseline-library", type=Path, help="another libslicer_host.so to time beside this one")
    args = parser.parse_args()
    x = np.random.default_rng(0).standard_normal((1, 1, args.elements)).astype(np.float32)  # a dense hidden state
    rows = []
    for name, cfg in (("SLICER s=0.9", SlicerConfig(sparsity=0.9)), ("TS+TAB-Q", TabqConfig()),
                      ("float16", Float16Config()), ("int8", Int8Config()), ("zstd (float16)", ZstdConfig())):
        payload = encode(x, cfg)
        enc, dec = median_us(lambda: encode(x, cfg), args.repeat), median_us(lambda: decode(payload), args.repeat)
        rows.append((f"{name}, Python API (numpy)", len(payload), enc, dec))
    coders = [("C++ host coder", built_host_coder())]
    if args.baseline_library:
        coders.append((f"C++ host coder, baseline {args.baseline_library}", HostCoder(args.baseline_library)))
    coder = coders[0][1]
    for label, native in coders:
        if native is None:
            continue
        cfg = SlicerConfig(sparsity=0.9)
        payload = native.encode_slicer(x, cfg)
        # The size known, as a server knows its tensor's (RuntimeCoder): one decode pass.
        rows.append((f"SLICER s=0.9, {label}", len(payload),
                     median_us(lambda: native.encode_slicer(x, cfg), args.repeat),
                     median_us(lambda: native.decode_slicer(payload, expected_elements=x.size), args.repeat)))
    print(f"{args.elements} float32 values (one token's hidden state), {args.repeat} runs, median")
    print("| codec | payload B | encode µs | decode µs | encode + decode µs |")
    print("|---|---:|---:|---:|---:|")
    for name, nbytes, enc, dec in rows:
        print(f"| {name} | {nbytes} | {enc:.1f} | {dec:.1f} | {enc + dec:.1f} |")
    if coder is None:
        print("(the C++ host coder is not built: slicer-compile build-kernels --host-only)")


if __name__ == "__main__":
    main()
