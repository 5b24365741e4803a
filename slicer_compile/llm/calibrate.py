"""LLM calibration: how faithful each cut stays under each per-token codec setting, on
the user's text. Teacher-forced in windows: the edge runs its layers on a window, each
token's hidden state goes through the codec alone (as the per-token split sends it),
the server runs the rest — its KV cache built from what it received — and the head.
Scored against the unsplit model: greedy next-token agreement, perplexity, and the
bits sent per token.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from slicer_compile.codec import (
    DenseConfig,
    Float16Config,
    Int8Config,
    SlicerConfig,
    TabqConfig,
    ZstdConfig,
    decode,
    encode,
)
from slicer_compile.codec.stream import StreamDecoder, StreamEncoder
from slicer_compile.errors import ConfigError
from slicer_compile.llm.llama import LlamaSpec
from slicer_compile.llm.stack import split_stacks

WINDOW = 128
#: name -> codec config (None: the hidden state as it is, float32)
SETTINGS = {"float32": None, "float16": Float16Config(), "int8": Int8Config(), "zstd": ZstdConfig(),
            "tabq": TabqConfig(), "slicer-0.5": SlicerConfig(sparsity=0.5), "slicer-0.75": SlicerConfig(sparsity=0.75),
            "slicer-0.9": SlicerConfig(sparsity=0.9), "dense-6": DenseConfig(bits=6), "dense-4": DenseConfig(bits=4),
            "dense-3": DenseConfig(bits=3)}


def text_tokens(path: str | Path, spec: LlamaSpec, tokenizer_dir: str | Path | None = None) -> np.ndarray:
    """Token ids of a text file: its bytes for a byte-level model (vocabulary 256), else
    the model directory's tokenizer."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the calibration text {path}: {exc.strerror or exc}") from None
    if spec.vocab_size == 256:
        ids = np.frombuffer(data, np.uint8).astype(np.int64)
    else:
        if tokenizer_dir is None:
            raise ConfigError(f"a vocabulary of {spec.vocab_size} needs the model directory's tokenizer")
        try:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{tokenizer_dir}: no tokenizer to read the calibration text: "
                              f"{str(exc).splitlines()[0]}") from None
        ids = np.asarray(tokenizer(data.decode("utf-8", errors="replace"))["input_ids"], np.int64)
    if len(ids) < 2:
        raise ConfigError(f"the calibration text {path} has fewer than 2 tokens")
    return ids


def windows_of(ids: np.ndarray, positions: int) -> list[np.ndarray]:
    """Windows of WINDOW + 1 tokens covering ``positions`` next-token predictions."""
    out, start = [], 0
    while sum(len(w) - 1 for w in out) < positions and start + 1 < len(ids):
        out.append(ids[start: start + WINDOW + 1])
        start += WINDOW
    return out


def _per_token(hidden: np.ndarray, cfg) -> tuple[np.ndarray, int, int]:
    """Each token's hidden state through the codec as the stream transport sends it:
    frames of the stream form (codec.stream), whose float16 quantiser ranges are within
    a hair of a version-1 payload's (``bench wire``); (decoded, the bytes of the
    version-1 payload each frame stands for — the KServe path's —, frame bytes)."""
    if cfg is None:
        return hidden, hidden[0].nbytes, hidden[0].nbytes
    encoder = StreamEncoder(cfg, (1, 1, hidden.shape[2]))
    decoder = StreamDecoder(encoder.header)
    rows, payload_bytes, frame_bytes = [], 0, 0
    for t in range(hidden.shape[1]):
        frame = encoder.frame(np.ascontiguousarray(hidden[:, t:t + 1]))
        payload_bytes += len(decoder.payload(frame))
        frame_bytes += len(frame)
        rows.append(decoder.decode(frame))
    return np.concatenate(rows, axis=1), payload_bytes, frame_bytes


def score(edge, server, windows: Sequence[np.ndarray], cfg=None) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(greedy next token, log-probability of the true next token, payload bytes sent,
    frame bytes sent), per position."""
    argmax, logprob, sent, framed = [], [], 0, 0
    for window in windows:
        edge.reset()
        server.reset()
        hidden, nbytes, frame_bytes = _per_token(edge.forward(edge.embed(window[:-1])), cfg)
        sent += nbytes
        framed += frame_bytes
        logits = server.logits(server.forward(hidden))[0].astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        argmax.append(logp.argmax(-1))
        logprob.append(logp[np.arange(len(window) - 1), window[1:]])
    return np.concatenate(argmax), np.concatenate(logprob), sent, framed


def calibrate_llm(spec: LlamaSpec, parts, ids: np.ndarray, positions: int = 1000, edge_parts=None,
                  settings: dict = SETTINGS, progress: Callable[[int, int], None] | None = None,
                  cuts_measured: Sequence[int] | None = None) -> dict:
    """The manifest's ``calibration`` section: per cut (default ℓ = 1..L-1, where a
    hidden state crosses between layers) and codec setting, the token agreement with
    the unsplit model, the perplexity and the bits per token (with ``edge_parts``, the
    edge's quantised layers run the edge side)."""
    windows = windows_of(ids, positions)
    exact, exact_logprob, _, _ = score(*split_stacks(spec, parts, spec.num_layers), windows)
    cuts = {}
    measured = list(cuts_measured) if cuts_measured is not None else list(range(1, spec.num_layers))
    total = len(measured) * len(settings)
    for cut in measured:
        edge, server = split_stacks(spec, parts, cut, edge_parts=edge_parts)
        rows = {}
        for name, cfg in settings.items():
            argmax, logprob, sent, framed = score(edge, server, windows, cfg)
            rows[name] = {"token_agreement": round(float((argmax == exact).mean()), 6),
                          "perplexity": round(math.exp(-float(logprob.mean())), 6),
                          "bits_per_token": round(8 * sent / len(exact), 3),
                          "frame_bits_per_token": round(8 * framed / len(exact), 3)}
            if progress:
                progress(len(cuts) * len(settings) + len(rows), total)
        cuts[str(cut)] = rows
        edge.close()
        server.close()
    return {"status": "measured", "metric": "token_agreement", "positions": int(len(exact)),
            "perplexity": round(math.exp(-float(exact_logprob.mean())), 6), "settings": list(settings), "cuts": cuts,
            "handover": {str(cut): calibrate_handover(spec, parts, ids, cut, max(1, positions // 2)) for cut in measured
                         if cut < spec.num_layers}}


#: KV-cache settings at a hand-over (each layer's key and value coded as one tensor)
KV_SETTINGS = {"float32": None, "float16": Float16Config(), "int8": Int8Config(), "tabq": TabqConfig(),
               "slicer-0.5": SlicerConfig(sparsity=0.5), "slicer-0.75": SlicerConfig(sparsity=0.75),
               "dense-4": DenseConfig(bits=4)}


def _coded_cache(cache: np.ndarray, cfg) -> tuple[np.ndarray, int]:
    if cfg is None:
        return cache, cache.nbytes
    payload = encode(np.ascontiguousarray(cache), cfg)
    return decode(payload), len(payload)


def calibrate_handover(spec: LlamaSpec, parts, ids: np.ndarray, cut: int, positions: int = 512,
                       settings: dict = KV_SETTINGS) -> dict:
    """SLICER's hand-over (Eq. 5) with the KV cache shipped (I_kv = 1): per window, the
    edge runs layers 1..cut on the first half of the tokens; their hidden states cross
    as they are, and the KV cache of layers 1..cut through each ``settings`` codec; the
    server builds layers cut+1..L from the hidden states, takes the shipped cache for
    1..cut, and carries on over the second half with the whole model. Scored on the
    second half against the unsplit model: token agreement, perplexity, and the KV bits
    shipped per hand-over token."""
    from slicer_compile.llm.stack import LayerStack

    windows = windows_of(ids, 2 * positions)
    full = LayerStack(spec, parts.layers, embed=parts.embed, head=parts.head)
    edge = LayerStack(spec, parts.layers[:cut], embed=parts.embed)
    rest = LayerStack(spec, parts.layers[cut:])
    results = {}
    for name, cfg in settings.items():
        agree, logprobs, shipped, handed = [], [], 0, 0
        for window in windows:
            tokens, half = window[:-1], (len(window) - 1) // 2
            full.reset()
            reference = full.logits(full.forward(full.embed(tokens)))[0, half:]
            edge.reset()
            rest.reset()
            rest.forward(edge.forward(edge.embed(tokens[:half])))
            full.reset()
            caches = []
            for key, value in edge.caches:
                (k, kb), (v, vb) = _coded_cache(key, cfg), _coded_cache(value, cfg)
                caches.append((k, v))
                shipped += kb + vb
            full.caches = caches + list(rest.caches)
            handed += half
            logits = full.logits(full.forward(full.embed(tokens[half:])))[0].astype(np.float64)
            agree.append(logits.argmax(-1) == reference.argmax(-1))
            logits -= logits.max(-1, keepdims=True)
            logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            logprobs.append(logp[np.arange(len(tokens) - half), window[half + 1:]])
        results[name] = {"token_agreement": round(float(np.concatenate(agree).mean()), 6),
                         "perplexity": round(math.exp(-float(np.concatenate(logprobs).mean())), 6),
                         "kv_bits_per_token": round(8 * shipped / handed, 3)}
    for stack in (full, edge, rest):
        stack.close()
    return results


def cheapest_within(calibration: dict, cut: int, accuracy_budget: float, table: str = "cuts",
                    bits: str = "bits_per_token") -> tuple[str, float] | None:
    """The setting with the fewest bits per token at ``cut`` whose agreement stays within
    ``accuracy_budget``; (name, bits), None where the cut was not measured. ``table``:
    "cuts" (the per-token hidden state) or "handover" (the KV cache shipped, ``bits`` =
    "kv_bits_per_token")."""
    rows = (calibration or {}).get(table, {}).get(str(cut))
    if not rows:
        return None
    # An artifact calibrated before the stream form has no frame bits: its payload bits.
    within = [(r.get(bits, r.get("bits_per_token")), name) for name, r in rows.items()
              if r["token_agreement"] >= 1 - accuracy_budget - 1e-12]
    if not within:
        return None
    bits, name = min(within)
    return name, bits
