"""The server side of a split LLM, free of any transport: sessions keyed by a sequence
id with start and end flags (Triton's sequence-batcher semantics), each holding the KV
cache of the layers the server runs for it; the steps of many sessions batched; the
sessions evicted on idle time and on a memory cap, each evicted client told why.

Two modes, chosen by the client when its session starts:

* **per-token split at cut ℓ**: each step brings the new tokens' hidden states after
  layer ℓ (one codec payload per token, or raw float32); the server runs layers
  ℓ+1..L against the session's caches and the head, and answers the next token
  (greedy). The edge keeps the caches of layers 1..ℓ; only hidden states cross.
* **hand-over at ℓ** (SLICER Eq. 5-6, Sung et al. Alg. 2): one step brings the token
  ids so far, their hidden states after layer ℓ and, with ``I_kv = 1``, the edge's KV
  cache of layers 1..ℓ; without it the server recomputes those layers from the ids.
  The server then generates the rest alone and answers every token at once.

Batching (continuous, across clients): the steps waiting at once, the server's own
hand-over generations included, are grouped by (first layer, new tokens) and each group
runs as one batch through every layer. Sequences of different lengths share a batch:
their caches are padded on the left to the longest, the padding masked out by the layer
parts' ``attention_mask``, each new token at its own ``position_ids``; parts without
those inputs (an artifact compiled before them) batch only sequences of one length, and
an export whose batch axis is fixed at 1 runs every sequence alone.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from slicer_compile.codec import DecodeLimits, PayloadError, decode
from slicer_compile.codec.native import RuntimeCoder
from slicer_compile.codec.wire import read_header
from slicer_compile.llm.artifact import load_llm_artifact
from slicer_compile.llm.stack import PartRunners
from slicer_compile.runtime.host import HostError

#: Evictions remembered (so that the evicted client hears why, not "unknown session").
_EVICTIONS_REMEMBERED = 4096


@dataclass
class LlmServerConfig:
    """What an LLM server holds and for how long."""

    max_sessions: int = 256
    #: a session with no step for this long is evicted (its client has gone)
    idle_timeout_s: float = 300.0
    #: KV-cache bytes held across sessions; past it the least recently used are evicted
    max_kv_bytes: int = 1 << 30
    #: sequences per batch at most
    max_batch: int = 64
    #: ONNX Runtime intra-op threads per part (0: one per core)
    threads: int = 0
    #: "auto" | "numpy" | "native": the decoder of SLICER token payloads (codec.native)
    decoder: str = "auto"
    #: the time source of idle eviction (tests pass their own clock: nothing sleeps)
    clock: Callable[[], float] = time.monotonic


@dataclass
class Step:
    """One request of a session. ``hidden``: the new tokens' hidden states after the
    session's cut, [1, S, H] float32 (already decoded); ``token_ids``: the tokens so far
    (a hand-over) or the new ones; ``kv``: at a hand-over, the edge's caches of layers
    1..ℓ (None: recompute them)."""

    sequence_id: str
    start: bool = False
    end: bool = False
    cut: int | None = None
    hidden: np.ndarray | None = None
    token_ids: np.ndarray | None = None
    handover: bool = False
    kv: list[tuple[np.ndarray, np.ndarray]] | None = None
    max_new_tokens: int = 1
    #: the step's number in its sequence (0 first); a step sent again with the number of
    #: the last one gets that answer again, never a second token. A start may carry a
    #: later number: a sequence resumed on this server after another failed.
    index: int | None = None


@dataclass
class StepResult:
    tokens: list[int]
    compute_s: float
    batch_sizes: list[int]
    session_kv_bytes: int


@dataclass
class _Session:
    sequence_id: str
    cut: int  # the first layer the server runs for this session
    caches: list[tuple[np.ndarray, np.ndarray]]
    length: int  # tokens in the caches
    last_used: float
    # a hand-over: the server generates alone; these fill as it does
    remaining: int = 0
    generated: list[int] = field(default_factory=list)
    accepted: int = 0  # steps accepted (numbered 0..accepted-1)
    last: Future | None = None  # the answer to the last accepted step

    @property
    def kv_bytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.caches)


@dataclass
class _Job:
    """A step waiting for the batcher: its session, its input, where its answer goes."""

    session: _Session
    hidden: np.ndarray | None  # [1, S, H] after layer session.cut, or None: embed token_ids
    token_ids: np.ndarray | None
    future: Future
    end: bool = False
    compute_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)
    handover: Step | None = None  # a hand-over's first step, checked, to build the caches from
    recompute: bool = False  # token ids to run through layers 1..cut here first (a resume from ids)


class LlmHost:
    """Runs the server side of an LLM artifact for many sessions (see module docstring)."""

    def __init__(self, artifact_dir: str | Path, config: LlmServerConfig | None = None):
        self.config = config or LlmServerConfig()
        self.artifact = load_llm_artifact(artifact_dir)
        self.spec = self.artifact.spec
        self.max_tokens = int(self.artifact.manifest["max_tokens"])
        self.runners = PartRunners(self.spec, self.artifact.parts("server"), self.config.threads)
        self.max_batch = min(self.config.max_batch, self.runners.max_batch or self.config.max_batch)
        self._coder = RuntimeCoder(self.config.decoder)
        self._sessions: dict[str, _Session] = {}
        self._evicted: OrderedDict[str, str] = OrderedDict()
        # ended sequences' last (number of steps, answer): a lost reply to an end step is asked for again
        self._ended: OrderedDict[str, tuple[int, Future]] = OrderedDict()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: list[_Job] = []
        self._generating: dict[str, _Job] = {}  # hand-overs the server is finishing alone
        self._stopping = False
        self._held = 0
        self.stats = _Stats()
        self._batcher = threading.Thread(target=self._run, name="llm-batcher", daemon=True)
        self._batcher.start()

    # --- requests -------------------------------------------------------------------

    def step(self, step: Step, timeout_s: float | None = None) -> StepResult:
        """Run one step of a session; raises HostError (status, reason) where refused."""
        return self.submit(step).result(timeout_s)

    def submit(self, step: Step) -> Future:
        """Queue one step; its Future holds the StepResult or the HostError. Every
        accepted step is answered exactly once (also when the server stops)."""
        future: Future = Future()
        with self._lock:
            if self._stopping:
                raise HostError(503, "shutting_down", "the server is shutting down")
            self._evict_idle()
            again = self._answered_before(step)
            if again is not None:
                return again
            session = self._session_for(step)
            job = self._job_for(step, session, future)
            session.last_used = self.config.clock()
            session.accepted = (step.index or 0) + 1 if step.start else session.accepted + 1
            session.last = future
            self._queue.append(job)
            self._wake.notify()
        return future

    def _answered_before(self, step: Step) -> Future | None:
        """Under the lock: the answer of a step sent again (its number is the last one
        accepted: a client that lost the reply); ``HostError`` for a number out of turn."""
        if step.index is None:
            return None
        session = self._sessions.get(step.sequence_id)
        if session is not None:
            accepted, answer = session.accepted, session.last
        elif not step.start and step.sequence_id in self._ended:
            accepted, answer = self._ended[step.sequence_id]
        else:
            return None
        if step.index == accepted - 1 and answer is not None:
            return answer
        if step.index != accepted and not step.start:
            raise HostError(409, "out_of_turn", f"step {step.index} of sequence {step.sequence_id!r} is out of turn: "
                            f"{accepted} steps were accepted, the next is step {accepted}")
        return None

    def _session_for(self, step: Step) -> _Session:
        sid = step.sequence_id
        if not isinstance(sid, str) or not sid or len(sid) > 256:
            raise HostError(400, "bad_sequence_id", "a sequence id is a non-empty string of at most 256 characters")
        if step.start:
            if sid in self._sessions:
                raise HostError(409, "session_exists", f"sequence {sid!r} already started: end it first")
            if len(self._sessions) >= self.config.max_sessions:
                raise HostError(503, "too_many_sessions", f"the server holds {len(self._sessions)} sessions, "
                                f"its limit (--max-sessions {self.config.max_sessions})")
            self._evicted.pop(sid, None)
            cut = step.cut
            if not isinstance(cut, int) or not 0 <= cut <= self.spec.num_layers:
                raise HostError(400, "bad_cut", f"cut must be a layer boundary 0..{self.spec.num_layers}, got {cut!r}")
            first = 0 if step.handover else cut
            empty = np.zeros((1, self.spec.num_kv_heads, 0, self.spec.head_dim), np.float32)
            session = _Session(sid, first, [(empty, empty)] * (self.spec.num_layers - first), 0,
                               self.config.clock())
            self._sessions[sid] = session
            return session
        session = self._sessions.get(sid)
        if session is None:
            why = self._evicted.get(sid)
            if why:
                raise HostError(410, "evicted", f"sequence {sid!r} was evicted ({why}); start it again")
            raise HostError(404, "unknown_sequence", f"no sequence {sid!r}: a session begins with a start flag")
        if step.handover:
            raise HostError(400, "bad_step", "a hand-over starts a sequence (it needs the start flag)")
        if session.remaining:
            raise HostError(409, "busy", f"sequence {sid!r} is still being generated by the server")
        return session

    def _job_for(self, step: Step, session: _Session, future: Future) -> _Job:
        """Check a step's tensors against the session before anything is queued."""
        H = self.spec.hidden_size
        try:
            if step.handover:
                return self._handover_job(step, session, future)
            recompute = False
            if step.hidden is None and (session.cut == 0 or (step.start and step.token_ids is not None)):
                # cloud only; or a sequence resumed from its token ids alone (its client kept
                # no hidden states): layers 1..cut run here first
                ids = self._ids(step.token_ids)
                new, hidden, recompute = ids.shape[1], None, session.cut > 0
            else:
                hidden = step.hidden
                if hidden is None or hidden.dtype != np.float32 or hidden.ndim != 3 or hidden.shape[0] != 1 \
                        or hidden.shape[2] != H or hidden.shape[1] < 1:
                    got = None if hidden is None else f"{hidden.dtype} {list(hidden.shape)}"
                    raise HostError(400, "bad_hidden", f"expected the new tokens' hidden states as float32 "
                                    f"[1, S, {H}] after layer {session.cut}, got {got}")
                ids, new = None, hidden.shape[1]
            self._check_room(session, new)
        except HostError:
            if step.start:
                self._sessions.pop(session.sequence_id, None)  # a refused start leaves nothing
            raise
        return _Job(session, hidden, ids, future, end=step.end, recompute=recompute)

    def _handover_job(self, step: Step, session: _Session, future: Future) -> _Job:
        """A hand-over at ℓ = step.cut: the caches of layers 1..ℓ shipped or recomputed,
        layers ℓ+1..L built from the hidden states; then the server generates alone."""
        spec, cut = self.spec, step.cut
        ids = self._ids(step.token_ids)
        n = ids.shape[1]
        self._check_room(session, n + max(0, step.max_new_tokens - 1))
        if not 1 <= step.max_new_tokens <= self.max_tokens:
            raise HostError(400, "bad_step", f"max_new_tokens must be 1..{self.max_tokens}")
        hidden = step.hidden
        # Without the KV cache the server recomputes layers 1..ℓ, and with them the
        # hidden states; with it, they are what builds layers ℓ+1..L.
        needed = step.kv is not None and cut < spec.num_layers
        if (hidden is None and needed) or (hidden is not None and (hidden.shape != (1, n, spec.hidden_size)
                                                                   or hidden.dtype != np.float32)):
            raise HostError(400, "bad_hidden", f"a hand-over at layer {cut} takes the {n} tokens' hidden states "
                            f"[1, {n}, {spec.hidden_size}] float32")
        if step.kv is not None:
            expected = (1, spec.num_kv_heads, n, spec.head_dim)
            if len(step.kv) != cut or any(k.shape != expected or v.shape != expected or k.dtype != np.float32
                                          or v.dtype != np.float32 for k, v in step.kv):
                raise HostError(400, "bad_kv", f"the KV cache of a hand-over at layer {cut}: {cut} (key, value) "
                                f"pairs of float32 {list(expected)}")
        session.remaining = step.max_new_tokens  # generated by the server from here on
        return _Job(session, None, ids, future, end=step.end, handover=step)

    def _run_handover(self, job: _Job) -> None:
        """Build a hand-over's caches (on the batcher); the server then generates alone."""
        step, session = job.handover, job.session
        cut, ids = step.cut, job.token_ids
        start = time.perf_counter()
        try:
            hidden = step.hidden
            if step.kv is None:  # I_kv = 0: layers 1..ℓ recomputed from the token ids
                edge_hidden, low = self.runners.forward(0, self.runners.embed(ids), session.caches[:cut])
                hidden = edge_hidden if hidden is None else hidden
            else:
                low = [(np.ascontiguousarray(k), np.ascontiguousarray(v)) for k, v in step.kv]
                if hidden is None:  # ℓ = L: nothing above the cut to build from it
                    hidden = self.runners.forward(0, self.runners.embed(ids), session.caches[:cut])[0]
            top, high = self.runners.forward(cut, hidden, session.caches[cut:])
            token = int(np.argmax(self.runners.logits(top[:, -1:])[0, -1]))
        except Exception as exc:  # noqa: BLE001 - every accepted step is answered
            self._fail(job, HostError(500, "internal", f"the server failed to take the hand-over: {exc}"))
            return
        elapsed = time.perf_counter() - start
        self.stats.observe_batch(1, elapsed)
        session.caches, session.length = low + high, ids.shape[1]
        session.generated, session.remaining = [token], session.remaining - 1
        job.compute_s, job.batch_sizes = elapsed, [1]
        job.handover, job.token_ids = None, np.array([[token]], np.int64)
        if session.remaining:
            with self._lock:
                self._generating[session.sequence_id] = job
        else:
            self._finish(job, session.generated)

    def _ids(self, token_ids) -> np.ndarray:
        ids = np.asarray(token_ids) if token_ids is not None else None
        if ids is None or ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] < 1 or ids.dtype.kind not in "iu":
            raise HostError(400, "bad_ids", "expected token ids as an integer [1, S] tensor")
        if ids.min() < 0 or ids.max() >= self.spec.vocab_size:
            raise HostError(400, "bad_ids", f"token ids must lie in 0..{self.spec.vocab_size - 1}")
        return ids.astype(np.int64)

    def _check_room(self, session: _Session, new: int) -> None:
        if session.length + new > self.max_tokens:
            raise HostError(400, "too_long", f"sequence {session.sequence_id!r} would hold "
                            f"{session.length + new} tokens, beyond the artifact's W̄ = {self.max_tokens}")

    def decode_token_payloads(self, payloads: list[bytes]) -> np.ndarray:
        """Per-token codec payloads -> hidden states [1, S, H]: each must describe one
        token's hidden state, checked before it is decoded."""
        H = self.spec.hidden_size
        limits = DecodeLimits(max_elements=H, max_payload_bytes=16 * H + 4096)
        rows = []
        for i, payload in enumerate(payloads):
            try:
                header = read_header(payload, limits)
                if header.shape != (1, 1, H) or header.dtype not in (np.float32, np.float16):
                    raise HostError(400, "bad_payload", f"token payload {i} holds {header.dtype} "
                                    f"{list(header.shape)}, not one token's hidden state [1, 1, {H}]")
                rows.append(self._coder.decode(payload, limits, header.codec_id, H).astype(np.float32, copy=False))
            except PayloadError as exc:
                raise HostError(400, "bad_payload", f"token payload {i}: {exc}") from None
        if not rows:
            raise HostError(400, "bad_payload", "no token payloads")
        return np.concatenate(rows, axis=1)

    def decode_kv_payloads(self, payloads: list[bytes]) -> list[tuple[np.ndarray, np.ndarray]]:
        """A hand-over's KV-cache payloads, a key then a value per layer -> [(key, value)]."""
        spec = self.spec
        if len(payloads) % 2:
            raise HostError(400, "bad_payload", "kv_lengths must list a key and a value payload per layer")
        limits = DecodeLimits(max_elements=spec.num_kv_heads * spec.head_dim * self.max_tokens)
        try:
            tensors = [decode(p, limits).astype(np.float32, copy=False) for p in payloads]
        except PayloadError as exc:
            raise HostError(400, "bad_payload", f"KV-cache payload: {exc}") from None
        return list(zip(tensors[::2], tensors[1::2]))

    @staticmethod
    def raw_kv(raw: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """A hand-over's raw KV cache, FP32 [layers, 2, 1, heads, tokens, head_dim] -> [(key, value)]."""
        if raw.ndim != 6 or raw.shape[1] != 2 or raw.dtype != np.float32:
            raise HostError(400, "bad_kv", "kv must be FP32 [layers, 2, 1, heads, tokens, head_dim]")
        return [(raw[i, 0], raw[i, 1]) for i in range(raw.shape[0])]

    # --- the batcher ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while (not self._queue and not self._generating and not self._stopping) or self._held:
                    self._wake.wait()
                if self._stopping and not self._queue and not self._generating:
                    return
                jobs, self._queue = self._queue, []
                jobs += list(self._generating.values())  # one more token for each
            steps = [j for j in jobs if j.handover is None]
            for job in jobs:
                if job.handover is not None:
                    self._run_handover(job)  # its generation joins the batches from the next round
            for group in _groups(steps, self.max_batch, self.runners.ragged):
                self._run_group(group)

    def _run_group(self, group: list[_Job]) -> None:
        first = group[0].session.cut
        start = time.perf_counter()
        try:
            if group[0].hidden is None:
                hidden = self.runners.embed(np.concatenate([j.token_ids for j in group]))
                if group[0].recompute:  # new sequences, one length: layers 1..cut, caches dropped
                    empty = np.zeros((len(group), self.spec.num_kv_heads, 0, self.spec.head_dim), np.float32)
                    hidden = self.runners.forward(0, hidden, [(empty, empty)] * first)[0]
            else:
                hidden = np.concatenate([j.hidden for j in group])
            caches, mask, positions, pads = _batched_caches([j.session for j in group], hidden.shape[1])
            out, grown = self.runners.forward(first, hidden, caches, mask, positions)
            logits = self.runners.logits(out[:, -1:])
        except Exception as exc:  # noqa: BLE001 - every accepted step is answered
            for job in group:
                self._fail(job, HostError(500, "internal", f"the server failed to run the step: {exc}"))
            return
        elapsed = time.perf_counter() - start
        self.stats.observe_batch(len(group), elapsed)
        for b, job in enumerate(group):
            session = job.session
            pad = pads[b]  # its cache without the padding that lined it up with the longest
            session.caches = [(k[b:b + 1, :, pad:].copy(), v[b:b + 1, :, pad:].copy()) for k, v in grown]
            session.length += (job.token_ids if job.hidden is None else job.hidden).shape[1]
            token = int(np.argmax(logits[b, -1]))
            job.compute_s += elapsed / len(group)
            job.batch_sizes.append(len(group))
            if session.remaining:  # a hand-over the server is finishing alone
                session.generated.append(token)
                session.remaining -= 1
                job.token_ids = np.array([[token]], np.int64)
                if not session.remaining:
                    with self._lock:
                        self._generating.pop(session.sequence_id, None)
                    self._finish(job, session.generated)
            else:
                self._finish(job, [token])
        self._enforce_memory_cap()

    def _finish(self, job: _Job, tokens: list[int]) -> None:
        session = job.session
        self.stats.count_tokens(len(tokens))
        if job.end:
            self.end(session.sequence_id)
        job.future.set_result(StepResult(list(tokens), job.compute_s, job.batch_sizes, session.kv_bytes))

    def _fail(self, job: _Job, error: HostError) -> None:
        with self._lock:
            self._generating.pop(job.session.sequence_id, None)
            self._sessions.pop(job.session.sequence_id, None)
        if not job.future.done():
            job.future.set_exception(error)

    @contextlib.contextmanager
    def hold(self):
        """Steps submitted inside wait until it ends, then run together: what arrives at
        once under load, made deterministic (tests; a caller lining up a batch)."""
        with self._lock:
            self._held += 1
        try:
            yield self
        finally:
            with self._lock:
                self._held -= 1
                self._wake.notify()

    # --- sessions -------------------------------------------------------------------

    def end(self, sequence_id: str) -> None:
        """Forget a session (its end flag, or a client known to be gone)."""
        with self._lock:
            session = self._sessions.pop(sequence_id, None)
            if session is not None:
                self._ended[sequence_id] = (session.accepted, session.last)
                while len(self._ended) > _EVICTIONS_REMEMBERED:
                    self._ended.popitem(last=False)

    def _evict(self, session: _Session, why: str) -> None:
        self._sessions.pop(session.sequence_id, None)
        self._evicted[session.sequence_id] = why
        while len(self._evicted) > _EVICTIONS_REMEMBERED:
            self._evicted.popitem(last=False)
        self.stats.count_eviction(why.split(":")[0])

    def _evict_idle(self) -> None:
        """Under the lock: sessions idle past the timeout (a client that vanished)."""
        now, timeout = self.config.clock(), self.config.idle_timeout_s
        for session in list(self._sessions.values()):
            if now - session.last_used > timeout and not session.remaining and not self._queued(session):
                self._evict(session, f"idle for more than {timeout:g} s")

    def _queued(self, session: _Session) -> bool:
        return any(job.session is session for job in self._queue)

    def _enforce_memory_cap(self) -> None:
        """The least recently used sessions go first while the caches exceed the cap."""
        cap = self.config.max_kv_bytes
        with self._lock:
            held = sum(s.kv_bytes for s in self._sessions.values())
            for session in sorted(self._sessions.values(), key=lambda s: s.last_used):
                if held <= cap:
                    break
                if session.remaining or self._queued(session):
                    continue
                held -= session.kv_bytes
                self._evict(session, f"memory: the server's KV caches reached their cap of {cap / 2**20:.1f} MiB")

    def kv_bytes(self) -> int:
        with self._lock:
            return sum(s.kv_bytes for s in self._sessions.values())

    def sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    def stop(self) -> None:
        """Answer what is queued, then stop the batcher and release the parts."""
        with self._lock:
            self._stopping, self._held = True, 0
            self._wake.notify()
        self._batcher.join()
        self.runners.close()


def _groups(jobs: list[_Job], max_batch: int, ragged: bool) -> list[list[_Job]]:
    """Jobs that can run as one batch: the same first layer, number of new tokens and
    input kind, and (unless the parts take a padding mask: ``ragged``) past length."""
    by_key: dict[tuple, list[_Job]] = {}
    for job in jobs:
        new = (job.token_ids if job.hidden is None else job.hidden).shape[1]
        key = (job.session.cut, new, job.hidden is None, job.recompute) + (() if ragged else (job.session.length,))
        by_key.setdefault(key, []).append(job)
    return [group[i:i + max_batch] for group in by_key.values() for i in range(0, len(group), max_batch)]


def _batched_caches(sessions: list[_Session], new: int):
    """The sessions' caches as one batch: (caches per layer, mask, positions, left pad per
    session). Sessions of one length stack as they are (no mask); otherwise each cache
    is padded on the left to the longest, the padding masked out, and each sequence's
    new tokens keep their own positions."""
    layers = len(sessions[0].caches)
    lengths = [s.length for s in sessions]
    longest = max(lengths)
    if min(lengths) == longest:
        caches = [(np.concatenate([s.caches[i][0] for s in sessions]),
                   np.concatenate([s.caches[i][1] for s in sessions])) for i in range(layers)]
        return caches, None, None, [0] * len(sessions)
    pads = [longest - n for n in lengths]
    mask = np.ones((len(sessions), longest + new), np.int64)
    positions = np.empty((len(sessions), new), np.int64)
    for b, (pad, n) in enumerate(zip(pads, lengths)):
        mask[b, :pad] = 0
        positions[b] = np.arange(n, n + new)
    caches = []
    for i in range(layers):
        key = sessions[0].caches[i][0]
        shape = (len(sessions), key.shape[1], longest, key.shape[3])
        keys, values = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        for b, (session, pad) in enumerate(zip(sessions, pads)):
            keys[b, :, pad:], values[b, :, pad:] = session.caches[i][0][0], session.caches[i][1][0]
        caches.append((keys, values))
    return caches, mask, positions, pads


class _Stats:
    """What /metrics reports beside the sessions and KV bytes held (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.batches = 0
        self.batched_steps = 0
        self.max_batch = 0
        self.compute_s = 0.0
        self.tokens = 0
        self.evictions: dict[str, int] = {}
        self.started = time.monotonic()

    def observe_batch(self, size: int, seconds: float) -> None:
        with self._lock:
            self.batches += 1
            self.batched_steps += size
            self.max_batch = max(self.max_batch, size)
            self.compute_s += seconds

    def count_tokens(self, n: int) -> None:
        with self._lock:
            self.tokens += n

    def count_eviction(self, why: str) -> None:
        with self._lock:
            self.evictions[why] = self.evictions.get(why, 0) + 1

    def render(self, host: LlmHost) -> str:
        with self._lock:
            elapsed = max(time.monotonic() - self.started, 1e-9)
            lines = [
                "# HELP slicer_llm_sessions Sessions held.", "# TYPE slicer_llm_sessions gauge",
                f"slicer_llm_sessions {host.sessions()}",
                "# HELP slicer_llm_kv_bytes KV-cache bytes held across sessions.", "# TYPE slicer_llm_kv_bytes gauge",
                f"slicer_llm_kv_bytes {host.kv_bytes()}",
                "# HELP slicer_llm_tokens_total Tokens answered.", "# TYPE slicer_llm_tokens_total counter",
                f"slicer_llm_tokens_total {self.tokens}",
                "# HELP slicer_llm_tokens_per_second Tokens answered per second since start.",
                "# TYPE slicer_llm_tokens_per_second gauge", f"slicer_llm_tokens_per_second {self.tokens / elapsed:.3f}",
                "# HELP slicer_llm_batch_size Steps per batch (sum and count).", "# TYPE slicer_llm_batch_size summary",
                f"slicer_llm_batch_size_sum {self.batched_steps}", f"slicer_llm_batch_size_count {self.batches}",
                "# HELP slicer_llm_batch_size_max Largest batch so far.", "# TYPE slicer_llm_batch_size_max gauge",
                f"slicer_llm_batch_size_max {self.max_batch}",
                "# HELP slicer_llm_compute_seconds_total Server compute over all batches.",
                "# TYPE slicer_llm_compute_seconds_total counter", f"slicer_llm_compute_seconds_total {self.compute_s:.6f}",
                "# HELP slicer_llm_server_seconds_per_token Server compute per token answered.",
                "# TYPE slicer_llm_server_seconds_per_token gauge",
                f"slicer_llm_server_seconds_per_token {self.compute_s / max(self.tokens, 1):.9f}",
                "# HELP slicer_llm_evictions_total Sessions evicted, by reason.",
                "# TYPE slicer_llm_evictions_total counter",
                *(f'slicer_llm_evictions_total{{reason="{r}"}} {n}' for r, n in sorted(self.evictions.items())),
            ]
        return "\n".join(lines) + "\n"
