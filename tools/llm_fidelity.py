#!/usr/bin/env python3
"""Fidelity of a split LLM on held-out text, per cut and per-token codec setting, and
of OPSC edge weights: greedy next-token agreement with the unsplit model, perplexity,
and bits sent per token (the hidden state of each token coded alone, as the per-token
split sends it).

    python tools/llm_fidelity.py [--model examples/tiny_lm] [--positions 1000]

The model is byte-level (examples/tiny_lm: trained by tools/make_examples.py tiny_lm);
the text is its heldout.txt. Positions are scored teacher-forced in windows of 128
tokens: the edge runs its layers on the window, each token's hidden state goes through
the codec on its own, the server runs the rest (its KV cache built from what it
received) and the head.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slicer_compile.codec import Float16Config, Int8Config, SlicerConfig, TabqConfig, ZstdConfig, decode, encode  # noqa: E402
from slicer_compile.llm.compile import compile_llm  # noqa: E402
from slicer_compile.llm.stack import split_stacks  # noqa: E402

WINDOW = 128
SETTINGS = [("none (float32)", None), ("float16", Float16Config()), ("int8", Int8Config()), ("zstd", ZstdConfig()),
            ("TS+TAB-Q", TabqConfig()), ("SLICER s=0.5", SlicerConfig(sparsity=0.5)),
            ("SLICER s=0.75", SlicerConfig(sparsity=0.75)), ("SLICER s=0.9", SlicerConfig(sparsity=0.9))]


def per_token(hidden: np.ndarray, cfg) -> tuple[np.ndarray, int]:
    """Each token's hidden vector [1, 1, H] through the codec alone; (decoded, bytes)."""
    if cfg is None:
        return hidden, hidden[0].nbytes
    rows, sent = [], 0
    for t in range(hidden.shape[1]):
        payload = encode(np.ascontiguousarray(hidden[:, t:t + 1]), cfg)
        sent += len(payload)
        rows.append(decode(payload))
    return np.concatenate(rows, axis=1), sent


def score(edge, server, windows, cfg, reference=None):
    """(argmax per position, log-prob of the true next token per position, bytes sent)."""
    argmax, logprob, sent = [], [], 0
    for window in windows:
        edge.reset()
        server.reset()
        hidden, nbytes = per_token(edge.forward(edge.embed(window[:-1])), cfg)
        sent += nbytes
        logits = server.logits(server.forward(hidden))[0].astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        argmax.append(logp.argmax(-1))
        logprob.append(logp[np.arange(len(window) - 1), window[1:]])
    return np.concatenate(argmax), np.concatenate(logprob), sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "examples" / "tiny_lm")
    parser.add_argument("--positions", type=int, default=1000)
    args = parser.parse_args()
    text = np.frombuffer((args.model / "heldout.txt").read_bytes(), np.uint8).astype(np.int64)
    count = math.ceil(args.positions / WINDOW)
    windows = [text[i * WINDOW: (i + 1) * WINDOW + 1] for i in range(count)]
    with tempfile.TemporaryDirectory() as tmp:
        artifact = compile_llm(args.model, device="jetson", out_dir=Path(tmp) / "fp32")
        spec, parts = artifact.spec, artifact.parts()
        exact_argmax, exact_logprob, _ = score(*split_stacks(spec, parts, spec.num_layers), windows, None)
        positions = len(exact_argmax)
        ppl = math.exp(-exact_logprob.mean())
        print(f"{args.model.name}: {spec.num_layers} layers, hidden {spec.hidden_size}; {positions} held-out "
              f"positions; unsplit perplexity {ppl:.3f} per byte")
        print("| cut | codec | bits/token | vs float16 | token agreement | perplexity | Δ perplexity |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        float16_bits = spec.hidden_size * 16
        for cut in range(1, spec.num_layers):
            edge, server = split_stacks(spec, parts, cut)
            for name, cfg in SETTINGS:
                argmax, logprob, sent = score(edge, server, windows, cfg)
                bits = 8 * sent / positions
                split_ppl = math.exp(-logprob.mean())
                print(f"| {cut} | {name} | {bits:.0f} | {bits / float16_bits:.3f} | "
                      f"{(argmax == exact_argmax).mean():.4f} | {split_ppl:.3f} | {split_ppl - ppl:+.3f} |", flush=True)
        print()
        print("OPSC: the edge's layers quantised weight-only (the hidden state uncoded), cut at the deepest layer")
        print("| edge weights | edge layer bytes | token agreement | perplexity | Δ perplexity |")
        print("|---|---:|---:|---:|---:|")
        full_bytes = artifact.cuts[-1]["edge_weight_bytes"] - artifact.cuts[0]["edge_weight_bytes"]
        print(f"| fp32 | {full_bytes} | 1.0000 | {ppl:.3f} | +0.000 |")
        for weights in ("int8", "int4"):
            quantised = compile_llm(args.model, device="jetson", out_dir=Path(tmp) / weights, weights=weights)
            edge, server = split_stacks(spec, parts, spec.num_layers, edge_parts=quantised.parts("edge"))
            argmax, logprob, _ = score(edge, server, windows, None)
            layer_bytes = quantised.cuts[-1]["edge_weight_bytes"] - quantised.cuts[0]["edge_weight_bytes"]
            q_ppl = math.exp(-logprob.mean())
            print(f"| {weights} (groups of 32) | {layer_bytes} | {(argmax == exact_argmax).mean():.4f} | "
                  f"{q_ppl:.3f} | {q_ppl - ppl:+.3f} |", flush=True)


if __name__ == "__main__":
    main()
