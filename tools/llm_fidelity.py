#!/usr/bin/env python3
"""Fidelity of a split LLM on held-out text, per cut and per-token codec setting, and
of OPSC edge weights (llm.calibrate, what `slicer-compile llm --calib-text` stores):
greedy next-token agreement with the unsplit model, perplexity, and bits sent per
token (each token's hidden state coded alone, as the per-token split sends it).

    python tools/llm_fidelity.py [--model examples/tiny_lm] [--positions 1000]

The model is byte-level (examples/tiny_lm: trained by tools/make_examples.py tiny_lm);
the text is its heldout.txt, scored teacher-forced in windows of 128 tokens.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slicer_compile.llm.calibrate import calibrate_llm, text_tokens  # noqa: E402
from slicer_compile.llm.compile import compile_llm  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "examples" / "tiny_lm")
    parser.add_argument("--positions", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        artifact = compile_llm(args.model, device="jetson", out_dir=Path(tmp) / "fp32")
        spec, parts = artifact.spec, artifact.parts()
        ids = text_tokens(args.model / "heldout.txt", spec, args.model)
        result = calibrate_llm(spec, parts, ids, args.positions)
        ppl, float16_bits = result["perplexity"], spec.hidden_size * 16
        print(f"{args.model.name}: {spec.num_layers} layers, hidden {spec.hidden_size}; {result['positions']} "
              f"held-out positions; unsplit perplexity {ppl:.3f} per token")
        print("Bits per token: a version-1 payload (the KServe path) and a stream frame (the stream transport: "
              "the session header once); vs float16: the frame against the raw float16 hidden state")
        print("| cut | codec | payload bits/token | frame bits/token | frame vs float16 | token agreement | "
              "perplexity | Δ perplexity |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|")
        for cut, rows in result["cuts"].items():
            for name, r in rows.items():
                frame = r["frame_bits_per_token"]
                print(f"| {cut} | {name} | {r['bits_per_token']:.0f} | {frame:.0f} | {frame / float16_bits:.3f} | "
                      f"{r['token_agreement']:.4f} | {r['perplexity']:.3f} | {r['perplexity'] - ppl:+.3f} |")
        print()
        print("Hand-over with the KV cache (I_kv = 1): first half of each window on the edge, its layers' cache "
              "shipped through the codec, the second half scored on the server's whole model")
        print("| cut | KV codec | KV bits per hand-over token | token agreement after | perplexity after |")
        print("|---:|---|---:|---:|---:|")
        for cut, rows in result["handover"].items():
            for name, r in rows.items():
                print(f"| {cut} | {name} | {r['kv_bits_per_token']:.0f} | {r['token_agreement']:.4f} | "
                      f"{r['perplexity']:.3f} |")
        print()
        print("OPSC: the edge's layers quantised weight-only (the hidden state uncoded), cut at the deepest layer")
        print("| edge weights | edge layer bytes | token agreement | perplexity | Δ perplexity |")
        print("|---|---:|---:|---:|---:|")
        for weights in ("fp32", "int8", "int4"):
            built = artifact if weights == "fp32" else compile_llm(args.model, device="jetson",
                                                                   out_dir=Path(tmp) / weights, weights=weights)
            r = calibrate_llm(spec, parts, ids, args.positions, edge_parts=built.parts("edge"),
                              settings={"float32": None}, cuts_measured=[spec.num_layers])["cuts"][str(spec.num_layers)]["float32"]
            layer_bytes = built.cuts[-1]["edge_weight_bytes"] - built.cuts[0]["edge_weight_bytes"]
            print(f"| {weights}{' (groups of 32)' if weights != 'fp32' else ''} | {layer_bytes} | "
                  f"{r['token_agreement']:.4f} | {r['perplexity']:.3f} | {r['perplexity'] - ppl:+.3f} |", flush=True)


if __name__ == "__main__":
    main()
