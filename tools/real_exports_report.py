#!/usr/bin/env python3
"""What the compiler makes of models with the properties of third-party exports
(tests/export_models.py, plus the committed examples): for each, the cuts offered,
the side bytes they send, the calibration time and the fidelity metric chosen.

    python tools/real_exports_report.py [--samples 8]
    python tools/real_exports_report.py --padding     # padding-aware coding, the transformer example
    python tools/real_exports_report.py --centring    # channel offsets coded out, the affine model
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


def padding_report(samples: int) -> None:
    """The transformer example's padded calibration batch, at its deepest masked split:
    the share of kept values that land on padding, and the bytes, with and without
    padding-aware coding (s = 0.9)."""
    from slicer_compile.backends.onnxrt import OnnxrtRunner
    from slicer_compile.codec import SlicerConfig, decode, encode
    from slicer_compile.codec.padding import masked, padded_config
    from slicer_compile.runtime.parts import part_without_codec

    data = np.load(ROOT / "examples" / "transformer_calib.npz")
    with tempfile.TemporaryDirectory() as tmp:
        artifact = compile_model(ROOT / "examples" / "transformer.onnx", device="jetson", out_dir=Path(tmp) / "a")
        split = max((s for s in artifact.splits if s.files and any(t.mask for t in s.activations)),
                    key=lambda s: s.position)
        activation = next(t for t in split.activations if t.mask)
        cfg = SlicerConfig(sparsity=0.9)
        on_padding = kept = plain_bytes = aware_bytes = 0
        with OnnxrtRunner(part_without_codec(artifact, split.id, "edge")) as edge:
            for i in range(samples):
                feeds = {k: data[k][i: i + 1] for k in edge.input_names}
                hidden, mask = edge.infer(feeds)[activation.name], feeds[activation.mask]
                plain = encode(hidden, cfg)
                aware = encode(masked(hidden, mask), padded_config(cfg, mask))
                decoded = decode(plain)
                kept += np.count_nonzero(decoded)
                on_padding += np.count_nonzero(decoded[0, mask[0] == 0])
                plain_bytes, aware_bytes = plain_bytes + len(plain), aware_bytes + len(aware)
    padding = 1 - data["attention_mask"][:samples].mean()
    print(f"transformer {split.id} ({activation.name}), {samples} samples, {100 * padding:.0f}% padding, s = 0.9: "
          f"plain coding keeps {100 * on_padding / kept:.0f}% of its values on padding and sends {plain_bytes} B; "
          f"padding-aware keeps none there and sends {aware_bytes} B ({aware_bytes / plain_bytes:.2f}x)")


def centring_report(samples: int) -> None:
    """The per-channel-offset model: the fidelity of each single-tensor cut at s = 0.9
    and 0.95, compiled with and without centring (codec.centring)."""
    from tests.export_models import affine_offset_model

    with tempfile.TemporaryDirectory() as tmp:
        model = affine_offset_model(Path(tmp) / "m.onnx")
        calib = Path(tmp) / "c.npz"
        np.savez(calib, x=np.random.default_rng(1).standard_normal((samples, 3, 16, 16)).astype(np.float32))
        built = {c: compile_model(model, device="jetson", out_dir=Path(tmp) / f"a{c}", calib=calib, centring=c,
                                  max_pairs=20, calib_samples=samples) for c in (False, True)}
        print(f"affine-offset model, {samples} samples, {built[True].calibration.metric}")
        print("| tensor | centred | plain s=0.9 | plain s=0.95 | centring s=0.9 | centring s=0.95 |")
        print("|---|---|---:|---:|---:|---:|")
        for plain, centred in zip(built[False].splits, built[True].splits):
            if len(plain.activations) != 1:
                continue
            (tensor,) = centred.activations
            print(f"| {tensor.name} | {'yes' if tensor.centre is not None else 'no'} | "
                  f"{plain.fidelity_at(0.9):.3f} | {plain.fidelity_at(0.95):.3f} | "
                  f"{centred.fidelity_at(0.9):.3f} | {centred.fidelity_at(0.95):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--padding", action="store_true", help="only the padding-aware coding figures")
    parser.add_argument("--centring", action="store_true", help="only the channel-offset figures")
    args = parser.parse_args()
    if args.padding:
        padding_report(32)
        return
    if args.centring:
        centring_report(32)
        return
    models = dict(catalogue())
    for name in ("digits_cnn", "transformer", "resnet_dag"):
        calib = ROOT / "examples" / f"{name.split('_')[0]}_calib.npz"
        arrays = dict(np.load(calib)) if calib.is_file() else None
        models[f"examples/{name}.onnx"] = (lambda p, n=name: ROOT / "examples" / f"{n}.onnx", arrays)
    print("| model | cuts offered | shapes | side bytes (max per cut) | compile s, calibration included | metric "
          "| centred tensors |")
    print("|---|---:|---|---:|---:|---|---|")
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
            centred = ", ".join(artifact.manifest["calibration"].get("centred", [])) or "none"
            print(f"| {name} | {len(artifact.splits)} | {notes} | {max(s.side_bytes for s in artifact.splits)} | "
                  f"{seconds:.1f} | {metric} | {centred} |", flush=True)


if __name__ == "__main__":
    main()
