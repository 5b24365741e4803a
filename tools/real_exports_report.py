#!/usr/bin/env python3
"""What the compiler makes of models with the properties of third-party exports
(tests/export_models.py, plus the committed examples): for each, the cuts offered,
the side bytes they send, the calibration time and the fidelity metric chosen.

    python tools/real_exports_report.py [--samples 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slicer_compile.compiler import compile_model  # noqa: E402
from tests.export_models import catalogue  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    models = dict(catalogue())
    for name in ("digits_cnn", "transformer", "resnet_dag"):
        calib = ROOT / "examples" / f"{name.split('_')[0]}_calib.npz"
        arrays = dict(np.load(calib)) if calib.is_file() else None
        models[f"examples/{name}.onnx"] = (lambda p, n=name: ROOT / "examples" / f"{n}.onnx", arrays)
    print("| model | cuts offered | shapes | side bytes (max per cut) | calibration s | metric |")
    print("|---|---:|---|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (build, arrays)) in enumerate(models.items()):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            model = build(folder / "model.onnx")
            calib = None
            if arrays is not None:
                calib = folder / "calib.npz"
                np.savez(calib, **{k: v[: args.samples] if k != "labels" else v for k, v in arrays.items()})
            start = time.perf_counter()
            artifact = compile_model(model, device="jetson", out_dir=folder / "out", calib=calib,
                                     calib_samples=args.samples)
            seconds = time.perf_counter() - start
            notes = "; ".join(artifact.manifest.get("shape_notes", [])) or "as exported"
            metric = artifact.calibration.metric if artifact.calibration.measured else "not measured"
            print(f"| {name} | {len(artifact.splits)} | {notes} | {max(s.side_bytes for s in artifact.splits)} | "
                  f"{seconds:.1f} (whole compile) | {metric} |", flush=True)


if __name__ == "__main__":
    main()
