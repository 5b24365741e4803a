#!/usr/bin/env python3
"""Set up a real Triton Inference Server for the tests and `serve --engine triton`:
download the nvidia-pytriton wheel from PyPI (or take --wheel), unpack its tritonserver
and Python backend into the cache (runtime.triton_server), and make the backend's
environment. Where that cannot be done here it says why and exits 0: the tests that
need Triton then skip with the same reason.

    python tools/setup_triton.py [--wheel nvidia_pytriton-0.7.0-....whl] [--strict]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slicer_compile.runtime.triton_server import TritonUnavailable, setup  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="A downloaded nvidia-pytriton wheel (default: pip download).")
    parser.add_argument("--strict", action="store_true", help="Exit 1 where Triton cannot be set up.")
    args = parser.parse_args()
    try:
        home = setup(wheel=args.wheel, progress=lambda what: print(f"setup_triton: {what}", flush=True))
    except TritonUnavailable as exc:
        print(f"setup_triton: no Triton here ({exc}); the tests that need it will skip", file=sys.stderr)
        return 1 if args.strict else 0
    print(f"setup_triton: Triton ready in {home}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
