"""The edge side of a split LLM: :class:`EdgeLLM` generates through a server
(runtime.llm.server), token by token, in the mode the selector picks for the
conditions, or the one asked for.

* per-token split at cut ℓ: the edge runs the embedding and layers 1..ℓ on each new
  token (its KV cache stays here), sends the token's hidden state through the
  per-token codec, and the server answers the next token. ℓ = 0 is cloud-only: the
  token ids go, nothing runs here.
* hand-over (SLICER Eq. 5-6, early exit): the edge generates ``w`` tokens alone with
  its own, possibly quantised (OPSC), copy of the whole model, then hands over at
  layer ℓ: the token ids, and with ``I_kv = 1`` the hidden states and the KV cache of
  layers 1..ℓ through the hand-over codec; the server generates the rest.

Every yielded :class:`TokenStep` says where the token came from, how long it took and
what crossed the link for it (request bodies, and the codec payloads inside them).
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from slicer_compile.codec.native import RuntimeCoder
from slicer_compile.codec.stream import StreamEncoder
from slicer_compile.errors import ConfigError
from slicer_compile.llm.artifact import LlmArtifact, load_llm_artifact
from slicer_compile.llm.calibrate import KV_SETTINGS, SETTINGS, cheapest_within
from slicer_compile.llm.stack import LayerStack
from slicer_compile.runtime.llm.stream import StreamTransport
from slicer_compile.runtime.protocol import InferMessage
from slicer_compile.runtime.transport import (
    ClientAccess,
    Failover,
    HttpTransport,
    parse_server_address,
    server_addresses,
)

#: The per-token codec where calibration measured none within the budget (or none ran).
DEFAULT_CODEC = "float16"


@dataclass(frozen=True)
class TokenStep:
    token: int
    mode: str  # "edge" (generated here), "split" (answered per token), "server" (after a hand-over)
    seconds: float  # this token's share of the wall time, at the client
    sent_bytes: int  # request body bytes for it (0 for a token made here)
    payload_bytes: int  # the codec payloads inside those bytes
    resumed: bool = False  # its server was lost: the sequence was rebuilt on the next one for it


@dataclass(frozen=True)
class Plan:
    """How a generation runs: ``edge_tokens`` made here first (0: per-token split from
    the start), the layer boundary ``cut``, and whether a hand-over ships the KV cache."""

    edge_tokens: int
    cut: int
    kv_cache: bool
    codec: str
    kv_codec: str
    reason: str




class EdgeLLM:
    """Generates with an LLM artifact split between this machine and a server."""

    def __init__(self, artifact: str | Path | LlmArtifact, servers: str | Sequence[str], timeout_s: float = 60.0,
                 access: ClientAccess | None = None, coder: str = "auto", max_kept_bytes: int | None = None,
                 transport: str = "http"):
        """``servers``: one address, or several to fail over to in turn ("A,B", a list, or
        "@FILE": a discovery file, one address per line);
        ``timeout_s``: the per-step deadline past which a server counts as lost;
        ``max_kept_bytes``: the most a sequence keeps of what it sent (None: no cap),
        beyond which a resume sends the token ids and the next server recomputes;
        ``transport``: "http", a KServe v2 request per step, or "stream", per-token
        splits over one WebSocket with the codec's stream form (runtime.llm.stream),
        the header once and a compact frame per token (a hand-over goes over HTTP)."""
        if transport not in ("http", "stream"):
            raise ConfigError(f"transport must be 'http' or 'stream', got {transport!r}")
        if transport == "stream" and max_kept_bytes is not None:
            raise ConfigError("the stream transport keeps every frame it sent to resume elsewhere: "
                              "a cap on what is kept applies to the http transport only")
        self.artifact = artifact if isinstance(artifact, LlmArtifact) else load_llm_artifact(artifact)
        self.spec = self.artifact.spec
        self.servers = server_addresses(servers)
        self.transport = transport
        self._servers = Failover([HttpTransport(*parse_server_address(a), timeout_s, tls=a.startswith("https://"),
                                                access=access) for a in self.servers])
        self._streams = Failover([StreamTransport(*parse_server_address(a), timeout_s, tls=a.startswith("https://"),
                                                  access=access) for a in self.servers])
        self.max_kept_bytes = max_kept_bytes
        self._coder = RuntimeCoder(coder)
        self._edge_parts = self.artifact.parts("edge")
        self._stacks: dict[int, tuple[LayerStack, LayerStack]] = {}

    # --- planning -------------------------------------------------------------------

    def plan(self, max_tokens: int, conditions=None, cut: int | None = None, codec: str | None = None) -> Plan:
        """The mode for ``conditions`` (select.Conditions: SLICER Eq. 5-6 with early exit
        on the artifact's AR table), else a per-token split at ``cut`` (default: half the
        layers on the edge), with the fewest calibrated bits within the accuracy budget."""
        spec, calibration = self.spec, self.artifact.manifest.get("calibration")
        budget = getattr(conditions, "accuracy_budget", 0.01)
        if conditions is not None:
            from slicer_compile.llm.selection import ar_table
            from slicer_compile.select.autoregressive import select_autoregressive

            decision = select_autoregressive(
                ar_table(self.artifact, accuracy_budget=budget), max_tokens, conditions.deadline_s,
                conditions.bandwidth_hz, epsilon=conditions.epsilon, snr_db=conditions.snr_db, snr=conditions.snr,
                rate_bps=conditions.rate_bps, memory_bytes=conditions.memory_bytes)
            if not decision.feasible:
                raise ConfigError(f"no split fits these conditions: {decision.reason}")
            edge_tokens, cut, kv, reason = decision.tokens, decision.layer, decision.kv_cache, decision.reason
        else:
            edge_tokens, kv = 0, False
            cut = spec.num_layers // 2 if cut is None else cut
            reason = f"per-token split at layer {cut}" + (" (cloud only)" if cut == 0 else "")
        if not 0 <= cut <= spec.num_layers:
            raise ConfigError(f"cut must be a layer boundary 0..{spec.num_layers}, got {cut}")
        # The stream transport sends frames: the cheapest setting is the one with the fewest frame bits.
        chosen = cheapest_within(calibration, cut, budget,
                                 bits="frame_bits_per_token" if self.transport == "stream" else "bits_per_token")
        codec = codec or (chosen[0] if chosen else DEFAULT_CODEC)
        kv_chosen = cheapest_within(calibration, cut, budget, "handover", "kv_bits_per_token")
        for name, table in ((codec, SETTINGS), ((kv_chosen or ("float32",))[0], KV_SETTINGS)):
            if name not in table:
                raise ConfigError(f"unknown per-token codec {name!r} (one of {', '.join(table)})")
        return Plan(edge_tokens, cut, kv, codec, (kv_chosen or ("float32",))[0], reason)

    # --- generating -----------------------------------------------------------------

    def generate(self, prompt: str | bytes | Sequence[int], max_tokens: int, conditions=None,
                 cut: int | None = None, codec: str | None = None, plan: Plan | None = None) -> Iterator[TokenStep]:
        """Greedy tokens after ``prompt`` (token ids; text or bytes for a byte-level
        model), ``max_tokens`` of them, as they come; ``plan`` (see :meth:`plan`) fixes
        the mode instead of the conditions or the cut."""
        ids = self._prompt_ids(prompt)
        if not 1 <= max_tokens or len(ids) + max_tokens > int(self.artifact.manifest["max_tokens"]) + 1:
            raise ConfigError(f"{len(ids)} prompt tokens + {max_tokens} new ones exceed the artifact's "
                              f"W̄ = {self.artifact.manifest['max_tokens']}")
        plan = plan or self.plan(max_tokens, conditions, cut, codec)
        # An integer (Triton's sequence batcher takes uint64 correlation ids, not 0), random
        # so that clients that know nothing of each other do not collide on a server.
        sequence_id = secrets.randbits(62) + 1
        if plan.edge_tokens == 0 and self.transport == "stream":
            yield from self._split_stream(ids, max_tokens, plan, sequence_id)
        elif plan.edge_tokens == 0:
            yield from self._split(ids, max_tokens, plan, sequence_id)
        else:
            yield from self._handover(ids, max_tokens, plan, sequence_id)

    def _prompt_ids(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            prompt = prompt.encode()
        if isinstance(prompt, bytes):
            if self.spec.vocab_size != 256:
                raise ConfigError(f"a text prompt needs a byte-level model; this one has {self.spec.vocab_size} "
                                  "tokens: give token ids")
            return list(prompt)
        ids = [int(t) for t in prompt]
        if not ids or min(ids) < 0 or max(ids) >= self.spec.vocab_size:
            raise ConfigError(f"prompt token ids must be 1 or more in 0..{self.spec.vocab_size - 1}")
        return ids

    def _edge_stacks(self, cut: int) -> tuple[LayerStack, LayerStack]:
        """(embedding + layers 1..cut, layers cut+1..L + head) of the edge's copy of the model."""
        if cut not in self._stacks:
            parts = self._edge_parts
            self._stacks[cut] = (LayerStack(self.spec, parts.layers[:cut], embed=parts.embed),
                                 LayerStack(self.spec, parts.layers[cut:], head=parts.head))
        return self._stacks[cut]

    def _hidden_tensors(self, hidden: np.ndarray, codec: str) -> tuple[dict, int]:
        """The request tensors of hidden states [1, S, H]: raw, or a payload per token."""
        cfg = SETTINGS[codec]
        if cfg is None:
            return {"hidden": hidden}, hidden.nbytes
        payloads = [self._coder.encode(np.ascontiguousarray(hidden[:, t:t + 1]), cfg) for t in range(hidden.shape[1])]
        return _payload_tensors(payloads, "hidden_payloads", "payload_lengths"), sum(map(len, payloads))

    @property
    def failovers(self) -> int:
        """How many times a step moved on to the next server (either transport)."""
        return self._servers.failovers + self._streams.failovers

    def _send(self, tensors: dict, parameters: dict, resume=None) -> tuple[list[int], int, bool]:
        """(tokens, request bytes, whether it was resumed elsewhere). Where the server is
        lost (unreachable, past the deadline, failing: not a refusal), the next one takes
        over: ``resume()`` gives the request that rebuilds the sequence there (None: the
        same request again, for a step that starts its own sequence)."""
        request = [tensors, parameters]

        def switched():
            if resume is not None:
                request[:] = resume()

        (reply, sent), moved = self._servers.call(
            lambda transport: transport.infer(self.artifact.id, InferMessage(*request)), switched)
        return [int(t) for t in reply.tensors["tokens"]], sent, moved

    def _split(self, ids: list[int], max_tokens: int, plan: Plan, sequence_id: str) -> Iterator[TokenStep]:
        edge, _ = self._edge_stacks(plan.cut)
        edge.reset()
        new = np.array(ids)
        kept = _Kept(self.max_kept_bytes)  # what a resume on another server needs
        for i in range(max_tokens):
            start = time.perf_counter()
            parameters = {"sequence_id": sequence_id, "sequence_start": i == 0, "sequence_end": i == max_tokens - 1,
                          "step_index": i, "cut": plan.cut}
            if plan.cut == 0:  # cloud only: the ids go
                tensors, payload = {"input_ids": new.reshape(1, -1).astype(np.int64)}, new.size * 8
            else:
                tensors, payload = self._hidden_tensors(edge.forward(edge.embed(new)), plan.codec)
            kept.add(new.tolist(), tensors)

            def resume(kept=kept, parameters=parameters):
                return kept.resume_request(), {**parameters, "sequence_start": True}

            (token,), sent, resumed = self._send(tensors, parameters, resume if i else None)
            yield TokenStep(token, "split", time.perf_counter() - start, sent, payload, resumed)
            new = np.array([token])

    def _split_stream(self, ids: list[int], max_tokens: int, plan: Plan, sequence_id: str) -> Iterator[TokenStep]:
        """The per-token split over the stream transport. Every frame sent is kept (a
        frame is the token's compressed hidden state, tens of bytes to a few KB): a server
        lost mid-sequence is replaced by the next, started with all of them as its
        prefill at the step where the sequence stood."""
        edge, _ = self._edge_stacks(plan.cut)
        edge.reset()
        cfg = SETTINGS[plan.codec] if plan.cut else None
        encoder = StreamEncoder(cfg, (1, 1, self.spec.hidden_size)) if cfg is not None else None
        header = base64.b64encode(encoder.header).decode() if encoder else None
        sent: list[bytes] = []  # every message so far: what a resume replays
        new = np.array(ids)
        for i in range(max_tokens):
            start = time.perf_counter()
            if plan.cut == 0:
                frames = [new.astype("<i4").tobytes()]
            else:
                hidden = edge.forward(edge.embed(new))
                frames = [encoder.frame(np.ascontiguousarray(hidden[:, t:t + 1])) if encoder
                          else hidden[0, t].astype("<f4").tobytes() for t in range(hidden.shape[1])]
            sent += frames

            def send(stream, i=i, frames=frames, sent=sent):
                if stream.sequence_id != sequence_id:  # its first step here: the prompt, or all so far
                    stream.start(self.artifact.id, {"sequence_id": sequence_id, "cut": plan.cut, "header": header,
                                                    "prefill": len(sent), "step_index": i, "max_steps": max_tokens})
                    return stream.step(sent)
                return stream.step(frames)

            (token,), resumed = self._streams.call(send)
            nbytes = sum(map(len, frames))
            yield TokenStep(token, "split", time.perf_counter() - start, nbytes + _ws_overhead(frames), nbytes,
                            resumed and i > 0)
            new = np.array([token])

    def _handover(self, ids: list[int], max_tokens: int, plan: Plan, sequence_id: str) -> Iterator[TokenStep]:
        low, high = self._edge_stacks(plan.cut)
        low.reset()
        high.reset()
        tokens, hidden_rows, new = list(ids), [], np.array(ids)
        for _ in range(min(plan.edge_tokens, max_tokens)):  # generated here, layers 1..L of the edge's copy
            start = time.perf_counter()
            hidden = low.forward(low.embed(new))
            hidden_rows.append(hidden)
            token = int(np.argmax(high.logits(high.forward(hidden))[0, -1]))
            tokens.append(token)
            new = np.array([token])
            yield TokenStep(token, "edge", time.perf_counter() - start, 0, 0)
        rest = max_tokens - plan.edge_tokens
        if rest <= 0:
            return
        start = time.perf_counter()
        tensors, payload = {"input_ids": np.array([tokens], np.int64)}, 0
        if plan.kv_cache and plan.cut:
            hidden_rows.append(low.forward(low.embed(new)))  # the last token through layers 1..ℓ too
            hidden = np.concatenate(hidden_rows, axis=1)
            if plan.cut < self.spec.num_layers:
                hidden_tensors, payload = self._hidden_tensors(hidden, plan.codec)
                tensors.update(hidden_tensors)
            kv_tensors, kv_bytes = self._kv_tensors(low.caches, plan.kv_codec)
            tensors.update(kv_tensors)
            payload += kv_bytes
        parameters = {"sequence_id": sequence_id, "sequence_start": True, "sequence_end": True, "mode": "handover",
                      "cut": plan.cut, "max_new_tokens": rest}
        generated, sent, resumed = self._send(tensors, parameters)  # lost: the same request to the next
        share = (time.perf_counter() - start) / len(generated)
        for i, token in enumerate(generated):
            yield TokenStep(token, "server", share, sent if i == 0 else 0, payload if i == 0 else 0, resumed)

    def _kv_tensors(self, caches, codec: str) -> tuple[dict, int]:
        cfg = KV_SETTINGS[codec]
        if cfg is None:
            raw = np.stack([np.stack([k, v]) for k, v in caches]).astype(np.float32)
            return {"kv": raw}, raw.nbytes
        payloads = [self._coder.encode(np.ascontiguousarray(t), cfg) for k, v in caches for t in (k, v)]
        return _payload_tensors(payloads, "kv_payloads", "kv_lengths"), sum(map(len, payloads))

    def close(self) -> None:
        for low, high in self._stacks.values():
            low.close()
            high.close()
        self._stacks.clear()
        self._servers.close()
        self._streams.close()

    def __enter__(self) -> "EdgeLLM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Kept:
    """What a per-token sequence sent, kept to rebuild it on another server: each step's
    hidden-state tensors (the encoded payloads as they went: no edge work again) and the
    token ids fed. Past ``cap`` bytes the tensors are dropped and a resume sends the
    ids, from which the next server recomputes layers 1..ℓ."""

    def __init__(self, cap: int | None):
        self.cap, self.ids, self.steps, self.nbytes = cap, [], [], 0

    def add(self, ids: list[int], tensors: dict) -> None:
        self.ids += ids
        if self.steps is not None:
            self.steps.append(tensors)
            self.nbytes += sum(t.nbytes for t in tensors.values())
            if self.cap is not None and self.nbytes > self.cap:
                self.steps, self.nbytes = None, 0

    def resume_request(self) -> dict:
        """The tensors of a start that rebuilds the sequence up to the latest step."""
        if self.steps is None or "input_ids" in self.steps[0]:  # capped, or cloud only
            return {"input_ids": np.array([self.ids], np.int64)}
        if "hidden" in self.steps[0]:
            return {"hidden": np.concatenate([t["hidden"] for t in self.steps], axis=1)}
        return {"hidden_payloads": np.concatenate([t["hidden_payloads"] for t in self.steps]),
                "payload_lengths": np.concatenate([t["payload_lengths"] for t in self.steps])}


def _ws_overhead(frames: list[bytes]) -> int:
    """WebSocket framing of client messages (RFC 6455: 2 bytes, the length's extension,
    the 4-byte mask)."""
    return sum(6 + (2 if len(f) > 125 else 0) + (6 if len(f) > 65535 else 0) for f in frames)


def _payload_tensors(payloads: list[bytes], data: str, lengths: str) -> dict:
    return {data: np.frombuffer(b"".join(payloads), np.uint8),
            lengths: np.array([len(p) for p in payloads], np.int64)}
