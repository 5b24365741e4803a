#!/usr/bin/env python3
"""Long decoder fuzz: python tools/fuzz_decoder.py --iterations 1000000 --seed 7

Exits non-zero (with the traceback) on the first exception other than
PayloadError; prints how many mutated payloads decoded and how many were rejected.
"""

import argparse
import time

from slicer_compile.codec.fuzz import fuzz_decoder

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--iterations", type=int, default=100_000)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
start = time.perf_counter()
outcomes = fuzz_decoder(args.iterations, args.seed)
print(f"{args.iterations} payloads in {time.perf_counter() - start:.1f} s: "
      f"{outcomes['decoded']} decoded, {outcomes['rejected']} rejected with PayloadError")
