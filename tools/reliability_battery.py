#!/usr/bin/env python3
"""The reliability battery (slicer_compile/runtime/reliability.py) against a served
example artifact; prints the table BENCHMARKS.md keeps.

    python tools/reliability_battery.py [--rounds 10] [--holders 40]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slicer_compile.compiler import compile_model  # noqa: E402
from slicer_compile.runtime.host import ServerConfig  # noqa: E402
from slicer_compile.runtime.reliability import render, run_battery  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--holders", type=int, default=40, help="stalled connections per kind per round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        artifact = compile_model(ROOT / "examples" / "digits_cnn.onnx", device="jetson", out_dir=Path(tmp) / "a",
                                 max_pairs=3)
        config = ServerConfig(client_timeout_s=2.0, request_timeout_s=2.0, max_request_bytes=1 << 20)
        result = run_battery(artifact.path, config, rounds=args.rounds, holders=args.holders)
    print(render(result))
    sys.exit(1 if result.unexpected or result.probes_right != result.probes_sent else 0)


if __name__ == "__main__":
    main()
