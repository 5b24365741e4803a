#!/usr/bin/env python3
"""The C++ host encoder (cuda/src/slicer_host.cpp) against the numpy reference, same run.

    python tools/bench_native.py [--elements 1048576] [--sparsity 0.9]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slicer_compile.codec import SlicerConfig, encode  # noqa: E402
from slicer_compile.codec.native import HostCoder, build_kernels  # noqa: E402


def median_ms(fn, repeat=15):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1 << 20)
    parser.add_argument("--sparsity", type=float, default=0.9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        coder = HostCoder(build_kernels(Path(tmp), cuda=False)["host"])
        x = np.random.default_rng(0).standard_normal(args.elements).astype(np.float32)
        cfg = SlicerConfig(sparsity=args.sparsity)
        assert coder.encode_slicer(x, cfg) == encode(x, cfg)
        numpy_ms = median_ms(lambda: encode(x, cfg))
        native_ms = median_ms(lambda: coder.encode_slicer(x, cfg))
    print(f"{args.elements} elements, s={args.sparsity}: numpy {numpy_ms:.2f} ms "
          f"({args.elements / numpy_ms / 1e3:.0f} Melem/s), C++ host {native_ms:.2f} ms "
          f"({args.elements / native_ms / 1e3:.0f} Melem/s); C++/numpy time ratio {native_ms / numpy_ms:.2f}")


if __name__ == "__main__":
    main()
