#!/usr/bin/env python3
"""The C++ host coders (cuda/src/) against the numpy reference, same run: the whole
host encoder and decoder; the two host halves of the GPU path that keeps the O(k)
coding on the host (slicer_encode_from_kept after the device selection,
slicer_decode_sparse_host before the device scatter), which bound that path's
latency from below; and the data-parallel stages of the all-device path run by the
host executor (their CPU check, not a fast path).

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

from slicer_compile.codec import SlicerConfig, decode, encode  # noqa: E402
from slicer_compile.codec.slicer import select_kept  # noqa: E402
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
        payload = encode(x, cfg)
        assert coder.encode_slicer(x, cfg) == payload
        kept = select_kept(x, cfg.kept_count(x.size), cfg.lam)
        values = x[kept]
        assert coder.encode_from_kept(kept, values, x.shape, x.dtype, cfg) == payload
        assert coder.encode_from_kept_parallel(kept, values, x.shape, x.dtype, cfg) == payload
        rows = [
            ("encode, numpy", median_ms(lambda: encode(x, cfg))),
            ("encode, C++ host", median_ms(lambda: coder.encode_slicer(x, cfg))),
            ("encode after selection, C++ host (GPU path's host half)",
             median_ms(lambda: coder.encode_from_kept(kept, values, x.shape, x.dtype, cfg))),
            ("encode after selection, data-parallel stages on the host executor",
             median_ms(lambda: coder.encode_from_kept_parallel(kept, values, x.shape, x.dtype, cfg))),
            ("decode, numpy", median_ms(lambda: decode(payload))),
            ("decode, C++ host", median_ms(lambda: coder.decode_slicer(payload))),
            ("decode parse, C++ host (GPU path's host half)", median_ms(lambda: coder.decode_sparse(payload))),
            ("decode, data-parallel stages on the host executor",
             median_ms(lambda: coder.decode_parallel(payload, max_elements=args.elements))),
        ]
    print(f"{args.elements} elements, s={args.sparsity}, k={kept.size}, payload {len(payload)} bytes")
    for what, ms in rows:
        print(f"  {what:68s} {ms:8.3f} ms  {args.elements / ms / 1e3:7.0f} Melem/s")


if __name__ == "__main__":
    main()
