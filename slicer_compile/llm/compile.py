"""`slicer-compile llm`: a decoder-only LLM compiled for token-by-token split execution.

The artifact holds the parts (``parts/embed.onnx``, ``parts/layer_NNN.onnx``,
``parts/head.onnx``: see llm.export; with ``weights`` int8/int4, the edge's copies of
the layers ``parts/edge_layer_NNN.onnx``, quantised weight-only: llm.opsc) and a
manifest whose cut table gives, per layer boundary ℓ = 0..L: edge and server time per
generated token, the hidden-state bytes that cross per token, the KV-cache bytes each
side keeps per token, and edge memory at ``max_tokens`` tokens (weights + KV cache
grown to W̄, Sung et al. Eq. 2). With a calibration text, the fidelity of each cut
under each per-token codec and of each hand-over (llm.calibrate).

Time per token is the roofline of each part's decode step at half the token budget of
context (FLOPs: two per weight, plus attention over the cache; bytes: the weights and
the cache read), on the edge and the server device models; on ``--device cpu`` the
edge column is measured with ONNX Runtime instead.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from slicer_compile import __version__
from slicer_compile.artifact import is_artifact_dir
from slicer_compile.errors import ConfigError, ModelError
from slicer_compile.llm.artifact import load_llm_artifact
from slicer_compile.llm.export import EMBED, HEAD, HIDDEN, INPUT_IDS, LlmParts, export_parts
from slicer_compile.llm.layout import LLM_KIND, LLM_SCHEMA_VERSION, MANIFEST, PARTS, edge_layer_name, layer_name
from slicer_compile.llm.llama import LlamaSpec
from slicer_compile.llm.opsc import WEIGHT_PRECISIONS, check_weights, quantise_weights
from slicer_compile.llm.report import write_llm_report
from slicer_compile.profile.devices import LOCAL_CPU, DeviceSpec, get_device
from slicer_compile.storage import StagedDirectory, write_bytes_atomically, write_text_atomically

DEFAULT_SERVER = "a100"


@dataclass(frozen=True)
class PartCost:
    """One part's decode step for one token with ``context`` tokens cached."""

    weight_bytes: int
    flops: float
    bytes_moved: float


@dataclass(frozen=True)
class LoadedLlm:
    """A decoder-only LLM as the compiler takes it: its shape, its parts, where it came
    from and where its tokenizer is (None: none known)."""

    spec: LlamaSpec
    parts: LlmParts
    source: str
    tokenizer_dir: Path | None


def load_llm(model) -> LoadedLlm:
    """The parts of a decoder-only LLM: from an ONNX export with its KV cache
    (llm.onnx_import; its tokenizer, if any, beside it), or from a ``transformers``
    causal LM (an object, a config: random weights, or a local model directory)."""
    if isinstance(model, (str, Path)) and Path(model).suffix == ".onnx":
        from slicer_compile.llm.onnx_import import read_onnx_llm

        spec, parts = read_onnx_llm(model)
        return LoadedLlm(spec, parts, str(model), Path(model).parent)
    loaded, source = _load_transformers(model)
    spec = LlamaSpec.from_config(loaded.config)
    return LoadedLlm(spec, export_parts(loaded, spec), source,
                     Path(model) if isinstance(model, (str, Path)) else None)


def _load_transformers(model):
    """A ``transformers`` causal LM and a description of its source."""
    try:
        import transformers
    except ImportError:
        raise ConfigError("compiling an LLM needs transformers and torch: pip install -e '.[torch]'") from None
    # Its own progress bars and notices would interleave with ours on stderr.
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    if isinstance(model, transformers.PreTrainedModel):
        return model, f"<{type(model).__name__}>"
    if isinstance(model, transformers.PretrainedConfig):
        LlamaSpec.from_config(model)  # refuse before building
        import torch

        torch.manual_seed(0)
        return transformers.AutoModelForCausalLM.from_config(model), f"<{type(model).__name__}, random weights>"
    path = Path(model)
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} is neither an ONNX file nor a transformers model directory (no config.json)")
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}/config.json: {str(exc).splitlines()[0]}") from None
    LlamaSpec.from_config(config)
    try:
        loaded = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True).float()
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load the weights: {str(exc).splitlines()[0]}") from None
    return loaded, str(path)


def initializer_bytes(blob: bytes) -> int:
    """The bytes of a part's weights as stored (quantised ones packed, with their scales)."""
    import onnx

    model = onnx.load_from_string(blob)
    return sum(int(np.prod(t.dims)) * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
               for t in model.graph.initializer)


def part_costs(spec: LlamaSpec, parts: LlmParts, context: int, edge_layers: tuple[bytes, ...] = ()
               ) -> dict[str, PartCost]:
    """Per part (``embed``, ``layer_NNN``, ``edge_layer_NNN``, ``head``), the cost of one
    decode step (a quantised weight moves its packed bytes and scales)."""
    weights = initializer_bytes
    costs = {EMBED: PartCost(weights(parts.embed), 0.0, float(spec.hidden_size * 4 * 2))}
    kv = spec.kv_bytes_per_token_per_layer
    attention_flops = 4.0 * spec.num_heads * spec.head_dim * context  # scores and mixing over the cache
    fp32_weights = {}
    for i, blob in enumerate(parts.layers):
        w = fp32_weights[i] = weights(blob)
        costs[layer_name(i)] = PartCost(w, 2.0 * w / 4 + attention_flops, float(w + kv * context))
    for i, blob in enumerate(edge_layers):
        w = weights(blob)
        costs[edge_layer_name(i)] = PartCost(w, 2.0 * fp32_weights[i] / 4 + attention_flops, float(w + kv * context))
    w = weights(parts.head)
    costs[HEAD] = PartCost(w, 2.0 * w / 4, float(w))
    return costs


def _measured_step_s(spec: LlamaSpec, parts: LlmParts, context: int, runs: int, edge_layers: tuple[bytes, ...] = ()
                     ) -> dict[str, float]:
    """Median time of each part's decode step here, in ONNX Runtime."""
    from slicer_compile.backends.onnxrt import OnnxrtRunner
    from slicer_compile.llm.stack import layer_feeds, part_inputs

    cache = np.zeros((1, spec.num_kv_heads, context, spec.head_dim), np.float32)
    hidden = np.zeros((1, 1, spec.hidden_size), np.float32)
    jobs = [(EMBED, parts.embed, {INPUT_IDS: np.zeros((1, 1), np.int64)})]
    def feeds_of(blob):
        return layer_feeds(part_inputs(blob), hidden, cache, cache)

    jobs += [(layer_name(i), blob, feeds_of(blob)) for i, blob in enumerate(parts.layers)]
    jobs += [(edge_layer_name(i), blob, feeds_of(blob)) for i, blob in enumerate(edge_layers)]
    jobs.append((HEAD, parts.head, {HIDDEN: hidden}))
    out = {}
    for name, blob, feeds in jobs:
        with OnnxrtRunner(blob, name=name, optimize=True) as runner:
            runner.infer(feeds)
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                runner.infer(feeds)
                times.append(time.perf_counter() - start)
        out[name] = float(np.median(times))
    return out


def cut_table(spec: LlamaSpec, costs: dict[str, PartCost], edge_s: dict[str, float], server_s: dict[str, float],
              max_tokens: int, quantised: bool = False) -> list[dict]:
    """One row per layer boundary ℓ = 0 (cloud only: the embedding on the edge) .. L."""
    layers = [layer_name(i) for i in range(spec.num_layers)]
    edge_layers = [edge_layer_name(i) for i in range(spec.num_layers)] if quantised else layers
    kv = spec.kv_bytes_per_token_per_layer
    rows = []
    for cut in range(spec.num_layers + 1):
        edge_parts, server_parts = [EMBED, *edge_layers[:cut]], [*layers[cut:], HEAD]
        rows.append({
            "cut": cut,
            "edge_layers": cut,
            "edge_ms_per_token": round(1e3 * sum(edge_s[p] for p in edge_parts), 6),
            "server_ms_per_token": round(1e3 * sum(server_s[p] for p in server_parts), 6),
            "hidden_bytes_per_token": spec.hidden_bytes_per_token,
            "edge_kv_bytes_per_token": cut * kv,
            "server_kv_bytes_per_token": (spec.num_layers - cut) * kv,
            "edge_weight_bytes": sum(costs[p].weight_bytes for p in edge_parts),
            "edge_memory_bytes_at_max_tokens": sum(costs[p].weight_bytes for p in edge_parts) + cut * kv * max_tokens,
        })
    return rows


def compile_llm(model, device: str = LOCAL_CPU, out_dir: str | Path = "out_lm", max_tokens: int = 256,
                server_device: str = DEFAULT_SERVER, overwrite: bool = False, runs: int = 20,
                weights: str = "fp32", group_size: int = 32, calib_text: str | Path | None = None,
                calib_positions: int = 1000, memory_bytes: float | None = None, accuracy_budget: float = 0.01,
                progress: Callable[[str, int, int], None] = lambda *a: None):
    """Compile a decoder-only LLM into per-layer parts and a cut table; returns the
    loaded :class:`llm.artifact.LlmArtifact`. ``weights``: the edge's layer weights
    (fp32, or int8/int4 weight-only in blocks of ``group_size``: OPSC). ``calib_text``:
    a text file to measure each cut under each per-token codec on (llm.calibrate), the
    edge's quantised layers included; the selector then keeps within the accuracy budget.
    ``weights="auto"`` chooses the precision by Sung et al.'s Eq. 8 (:func:`choose_weights`)
    for ``memory_bytes`` and ``accuracy_budget``; with any ``weights``, a ``memory_bytes``
    that fits no layer on the edge is refused.

    Raises:
        ModelError: not a supported decoder-only LLM (one line naming what is not).
        ConfigError: no torch/transformers, a bad device or token budget.
        ArtifactError: the output directory (as for ``compile``).
    """
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be at least 1, got {max_tokens}")
    if weights != AUTO:
        check_weights(weights, group_size)
    elif memory_bytes is None:
        raise ConfigError("choosing the edge weights (auto) needs the edge's memory budget (--memory)")
    started = time.perf_counter()
    edge_spec, server_spec = get_device(device), get_device(server_device)
    # The output directory is checked before any work (a refusal costs nothing), and a
    # failure anywhere below leaves nothing behind.
    with StagedDirectory(out_dir, overwrite=overwrite, owned=is_artifact_dir, what="LLM artifact",
                         inputs=[p for p in (model, calib_text) if isinstance(p, (str, Path))]) as staging:
        progress("reading the model into parts", 0, 1)
        loaded = load_llm(model)
        spec, parts, source = loaded.spec, loaded.parts, loaded.source
        progress("reading the model into parts", 1, 1)
        ids = None
        if calib_text is not None:
            from slicer_compile.llm.calibrate import text_tokens

            ids = text_tokens(calib_text, spec, loaded.tokenizer_dir)
            if int(ids.max()) >= spec.vocab_size:
                raise ConfigError(f"the calibration text has token ids beyond the vocabulary of {spec.vocab_size}")
        plan = None
        if memory_bytes is not None:
            plan = choose_weights(spec, parts, memory_bytes, accuracy_budget, max_tokens, group_size, ids,
                                  [weights] if weights != AUTO else list(WEIGHT_PRECISIONS), calib_positions)
            weights = plan["chosen"]["weights"]
        edge_layers = ()
        if weights != "fp32":
            edge_layers = tuple(quantise_weights(blob, weights, group_size) for blob in parts.layers)
        calibration = {"status": "none", "reason": "compiled without --calib-text: fidelity is unknown"}
        if ids is not None:
            from slicer_compile.llm.calibrate import calibrate_llm

            edge_parts = LlmParts(parts.embed, edge_layers, parts.head) if edge_layers else None
            calibration = calibrate_llm(spec, parts, ids, calib_positions, edge_parts=edge_parts,
                                        progress=lambda d, t: progress("calibrating cuts x codecs", d, t))
        context = max(1, max_tokens // 2)
        costs = part_costs(spec, parts, context, edge_layers)
        server_s = _roofline(server_spec, costs)
        if device == LOCAL_CPU:
            edge_s, latency_source = _measured_step_s(spec, parts, context, runs, edge_layers), \
                f"measured with ONNX Runtime ({runs} runs, median) at {context} tokens of context"
        else:
            edge_s, latency_source = _roofline(edge_spec, costs), \
                f"roofline model per part at {context} tokens of context"
        names = [EMBED, *(layer_name(i) for i in range(spec.num_layers)), HEAD,
                 *(edge_layer_name(i) for i in range(len(edge_layers)))]
        blobs = [parts.embed, *parts.layers, parts.head, *edge_layers]
        files = {name: f"{PARTS}/{name}.onnx" for name in names}
        digests = {name: hashlib.sha256(blob).hexdigest() for name, blob in zip(names, blobs)}
        artifact_id = hashlib.sha256("".join(digests.values()).encode() + repr((device, max_tokens, weights, group_size)).encode()).hexdigest()[:16]
        manifest = {
            "schema_version": LLM_SCHEMA_VERSION,
            "kind": LLM_KIND,
            "tool_version": __version__,
            "artifact_id": artifact_id,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": source,
            "architecture": spec.as_dict(),
            "max_tokens": max_tokens,
            "device": {**edge_spec.as_dict(), "latency_source": latency_source},
            "server_device": {**server_spec.as_dict(), "latency_source": f"roofline model per part at {context} tokens"},
            "weights": {"edge": weights, "server": "fp32", "group_size": group_size if weights != "fp32" else None},
            "parts": files,
            "digests": digests,
            "part_costs": {n: {"weight_bytes": c.weight_bytes, "flops_per_token": c.flops,
                               "bytes_per_token": c.bytes_moved} for n, c in costs.items()},
            "cuts": cut_table(spec, costs, edge_s, server_s, max_tokens, quantised=bool(edge_layers)),
            "calibration": calibration,
            "opsc": plan,
            # one token generated by the edge alone: embedding, every (edge) layer, the head
            "edge_full_step_ms": round(1e3 * (edge_s[EMBED] + edge_s[HEAD] + sum(
                edge_s[(edge_layer_name if edge_layers else layer_name)(i)] for i in range(spec.num_layers))), 6),
            "compile_seconds": None,
        }
        (staging / PARTS).mkdir()
        for name, blob in zip(names, blobs):
            write_bytes_atomically(staging / files[name], blob)
        manifest["compile_seconds"] = round(time.perf_counter() - started, 3)
        write_text_atomically(staging / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        write_llm_report(load_llm_artifact(staging))
    return load_llm_artifact(out_dir)


AUTO = "auto"


def choose_weights(spec: LlamaSpec, parts: LlmParts, memory_bytes: float, accuracy_budget: float, max_tokens: int,
                   group_size: int, ids: np.ndarray | None, candidates: list[str], positions: int = 1000) -> dict:
    """Sung et al. Eq. 8 over the edge's weight precisions: the deepest cut ℓ whose edge
    memory at W̄ (weights as stored + the KV cache of ℓ layers grown to W̄) fits
    ``memory_bytes``, among the precisions whose greedy token agreement with the
    full-precision model (all layers on the edge, on ``ids``) stays within
    ``accuracy_budget``; ties go to the higher precision. Without text, fidelity is
    unknown and only memory decides. Raises ConfigError where no precision fits a layer.
    """
    from slicer_compile.llm.calibrate import calibrate_llm

    kv = spec.kv_bytes_per_token_per_layer * max_tokens
    embed = initializer_bytes(parts.embed)
    rows = []
    for weights in candidates:
        layers = parts.layers if weights == "fp32" else tuple(quantise_weights(b, weights, group_size)
                                                              for b in parts.layers)
        used, deepest = embed, 0
        for blob in layers:
            used += initializer_bytes(blob) + kv
            if used > memory_bytes:
                break
            deepest += 1
        agreement = None
        if ids is not None and deepest:
            edge = LlmParts(parts.embed, layers, parts.head)
            agreement = calibrate_llm(spec, parts, ids, positions, edge_parts=edge, settings={"float32": None},
                                      cuts_measured=[spec.num_layers])["cuts"][str(spec.num_layers)]["float32"][
                "token_agreement"]
        first_layer = embed + initializer_bytes(layers[0]) + kv
        rows.append({"weights": weights, "deepest_cut": deepest, "token_agreement": agreement,
                     "first_layer_bytes": first_layer})
    allowed = [r for r in rows if r["deepest_cut"] and (r["token_agreement"] is None
                                                        or r["token_agreement"] >= 1 - accuracy_budget - 1e-12)]
    if not allowed:
        need = min(r["first_layer_bytes"] for r in rows)
        fitting = [r for r in rows if r["deepest_cut"]]
        why = (f"no precision keeps the token agreement within {accuracy_budget:g} "
               "(" + ", ".join(f"{r['weights']}: {r['token_agreement']:.4f}" for r in fitting) + ")" if fitting else
               f"one layer on the edge needs {need / 2**20:.2f} MiB at W̄ = {max_tokens} (embedding, its weights "
               f"and KV cache)")
        raise ConfigError(f"--memory {memory_bytes / 2**20:.2f} MiB fits no edge configuration: {why}")
    best = max(allowed, key=lambda r: (r["deepest_cut"], -candidates.index(r["weights"])))
    return {"memory_bytes": memory_bytes, "accuracy_budget": accuracy_budget, "candidates": rows,
            "chosen": {"weights": best["weights"], "cut": best["deepest_cut"]},
            "reason": f"the deepest cut that fits {memory_bytes / 2**20:.2f} MiB at W̄ = {max_tokens}"
                      + ("" if ids is not None else " (fidelity not measured: no --calib-text)")}


def _roofline(spec: DeviceSpec, costs: dict[str, PartCost]) -> dict[str, float]:
    names = list(costs)
    latency = spec.node_latency_s([costs[n].flops for n in names], [costs[n].bytes_moved for n in names])
    return dict(zip(names, (float(v) for v in latency)))
