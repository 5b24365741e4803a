"""The model host: everything a server does except speak a protocol.

It loads an artifact's split server parts, checks each request (artifact id, inputs
against the split's crossing table, payload decoding), batches samples across
clients per split, counts in-flight requests for a graceful stop, and keeps the
metrics. Transports (``server`` for KServe v2 HTTP, ``grpc_server`` for KServe v2
gRPC) turn bytes into :class:`InferMessage` and call :meth:`ModelHost.infer`; a
refusal is a :class:`HostError` carrying the status a transport maps to its own.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from slicer_compile import __version__
from slicer_compile.artifact import Artifact, CrossingTensor, load_artifact
from slicer_compile.backends.base import Runner, RunSettings
from slicer_compile.backends.registry import get_backend
from slicer_compile.codec import CODECS, DecodeLimits, PayloadError, SlicerConfig
from slicer_compile.codec.centring import restored
from slicer_compile.codec.native import RuntimeCoder
from slicer_compile.codec.wire import read_header
from slicer_compile.errors import ArtifactError, SlicerCompileError
from slicer_compile.graph.codec_nodes import payload_name
from slicer_compile.runtime.metrics import Metrics
from slicer_compile.runtime.parts import SERVER, open_part, part_outputs
from slicer_compile.runtime.protocol import ARTIFACT_PARAMETER, DATATYPE_OF, InferMessage, ProtocolError


class HostError(SlicerCompileError):
    """A request the host refuses: ``status`` in HTTP terms (400, 404, 500, 503), and
    ``reason``, the metrics label."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason = status, reason


@dataclass
class ServerConfig:
    """How a server batches and what it lets one caller, or all of them, cost."""

    max_batch: int = 16
    max_queue_delay_s: float = 0.0005
    #: wait out max_queue_delay_s only while other requests are in flight (admitted, not
    #: yet batched): a lone request runs at once. False: every batch waits the full delay.
    wait_only_when_busy: bool = True
    #: a request that finds no other in flight and the batcher idle runs on the thread that
    #: decoded it, without the hops to the batcher thread and back (tools/bench_server_overhead.py
    #: prices them); over
    #: HTTP, one small enough (body <= inline_max_bytes, the split's recent compute <=
    #: inline_max_compute_s) is answered on the event loop itself, without any hop
    run_alone_inline: bool = True
    inline_max_bytes: int = 64 << 10
    inline_max_compute_s: float = 0.001
    #: SLICER payloads' decoder (codec.native.CODER_CHOICES): "auto" (the C++ host decoder
    #: where `build-kernels` built it, else numpy), "numpy" or "native"
    decoder: str = "auto"
    #: where build-kernels wrote the host library (None: its default place)
    native_build_dir: str | None = None
    #: a larger body is refused (413) before it is read
    max_request_bytes: int = 64 << 20
    #: an idle connection, or one whose request headers have not all arrived, is closed after this
    client_timeout_s: float = 10.0
    #: a request body must have arrived whole within this (else 408 and the connection closes)
    request_timeout_s: float = 60.0
    #: open connections at most; a request on one beyond them is answered 503
    max_connections: int = 256
    #: request bodies held at once (being read or served), bytes; beyond, 503
    max_buffered_bytes: int = 512 << 20
    #: threads that decode payloads and wait for batches (HTTP); gRPC has as many
    workers: int = 32
    threads: int = 0  # ONNX Runtime intra-op threads (0 = its default)
    #: "onnxruntime": decode in Python, batch the server part; "tensorrt": run each
    #: split's server.plan with the decoder plugin inside (one request at a time: the
    #: decoder's output shape, batch included, is fixed in the engine)
    backend: str = "onnxruntime"


#: The platform a split model reports (metadata, configuration).
PLATFORM = "slicer_split"


def codec_name(codec_id: int) -> str:
    return CODECS[codec_id].config.name if codec_id in CODECS else f"id {codec_id}"


#: Queued to wake a batcher that waits to fill a batch (a drain has begun).
_FLUSH = object()


@dataclass
class _Job:
    feeds: dict[str, np.ndarray]
    enqueued: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    outputs: dict[str, np.ndarray] | None = None
    error: str | None = None
    batch_size: int = 0
    queue_s: float = 0.0
    compute_s: float = 0.0


class SplitModel:
    """One split's server part and the batcher in front of it."""

    def __init__(self, artifact: Artifact, split_id: str, config: ServerConfig, metrics: Metrics,
                 in_flight: Callable[[], int] = lambda: 1 << 30):
        info = artifact.split(split_id)
        self.split_id = split_id
        self.crossing = list(info.crossing)
        self.activations = [t for t in self.crossing if t.kind == "activation"]
        backend = get_backend(config.backend)
        self.decodes_in_engine = backend.codec_in_engine
        # The artifact's codec only (the TensorRT decoder plugin reads SLICER alone).
        self.accepted_codecs = {SlicerConfig.codec_id} if self.decodes_in_engine else {artifact.codec.codec_id}
        self.batch_bound = backend.server_batch_bound or config.max_batch
        self.runner: Runner = open_part(artifact, split_id, SERVER, backend.name,
                                        RunSettings(threads=config.threads, optimize=True))
        self.runner.activate()
        self.output_names = self.runner.output_names
        specs = {name: (name, dtype, shape) for name, dtype, shape in part_outputs(artifact, split_id, SERVER)}
        self.output_specs = [specs.get(name, (name, "float32", [-1])) for name in self.output_names]
        self.config = config
        self.metrics = metrics
        self._in_flight = in_flight  # requests the host has admitted and not yet answered
        self._coder = RuntimeCoder(config.decoder, config.native_build_dir)
        self._run_lock = threading.Lock()  # one run of the server part at a time: inline or batched
        #: the server part's compute per run, smoothed (inf until the first run)
        self.recent_compute_s = float("inf")
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._submit_lock = threading.Lock()
        self._closed = False
        self._draining = False
        self._thread = threading.Thread(target=self._serve, name=f"batcher-{split_id}", daemon=True)
        self._thread.start()

    # --- request side --------------------------------------------------------------

    def feeds_from(self, message: InferMessage) -> dict[str, np.ndarray]:
        """Decode payloads and check every input against the split's crossing table."""
        feeds = {}
        for t in self.crossing:
            if t.kind == "activation":
                name = payload_name(t.name)
                payload = message.tensors.get(name)
                if payload is None:
                    raise ProtocolError(f"missing input {name!r}")
                if payload.dtype != np.uint8 or payload.ndim != 1:
                    raise ProtocolError(f"input {name!r} must be a 1-d UINT8 tensor of payload bytes")
                data = payload.tobytes()
                limits, codec_id = self._check_payload_header(t, data)  # raises PayloadError
                if self.decodes_in_engine:
                    # The engine decodes; the frame was checked here so that a bad
                    # payload is the client's error (400), not the engine's.
                    feeds[name] = payload
                else:
                    value = self._coder.decode(data, limits, codec_id, t.num_elements)  # raises PayloadError
                    # codec.centring: the offsets back on the residual
                    feeds[t.name] = restored(value, t.centre).astype(t.dtype, copy=False)
            else:
                value = message.tensors.get(t.name)
                if value is None:
                    raise ProtocolError(f"missing input {t.name!r}")
                if list(value.shape) != list(t.shape) or str(value.dtype) != t.dtype:
                    raise ProtocolError(f"input {t.name!r} must be {t.dtype}{tuple(t.shape)}, "
                                        f"got {value.dtype}{value.shape}")
                feeds[t.name] = value
        extra = set(message.tensors) - {payload_name(t.name) for t in self.activations} - {
            t.name for t in self.crossing if t.kind == "side"}
        if extra:
            raise ProtocolError(f"unknown input(s) {sorted(extra)}")
        return feeds

    def _check_payload_header(self, t: CrossingTensor, payload: bytes) -> tuple[DecodeLimits, int]:
        """The frame, codec, dtype and shape against the crossing, before any decoding;
        the limits to decode with (this tensor's size, not the library default: a
        valid payload of a hundred bytes can describe 2^28 elements) and the codec id."""
        limits = DecodeLimits(max_elements=t.num_elements)
        header = read_header(payload, limits)
        if header.codec_id not in self.accepted_codecs:
            raise PayloadError(f"payload for {t.name} is of codec {codec_name(header.codec_id)}; this split "
                               f"accepts {', '.join(codec_name(c) for c in sorted(self.accepted_codecs))}")
        if list(header.shape) != list(t.shape) or header.dtype != np.dtype(t.dtype):
            raise PayloadError(f"payload for {t.name} is {header.dtype}{tuple(header.shape)}, expected "
                               f"{t.dtype}{tuple(t.shape)}")
        return limits, header.codec_id

    def submit(self, feeds: dict[str, np.ndarray]) -> _Job | None:
        """Queue one sample; None once the model is closed (the caller answers 503)."""
        job = _Job(feeds)
        with self._submit_lock:
            if self._closed:
                return None
            self._queue.put(job)
        return job

    def alone(self) -> bool:
        """No other request admitted and nothing queued: a request now cannot be batched
        (unless batches are told to wait for company: ``wait_only_when_busy=False``)."""
        return (self.config.run_alone_inline and self.config.wait_only_when_busy and self._in_flight() <= 1
                and self._queue.empty())

    def run_or_submit(self, feeds: dict[str, np.ndarray]) -> _Job | None:
        """Run one sample here and now where it is alone (no other request admitted, no
        batch running or queued): it could not have been batched with anything, and two
        thread hops cost more than the run of a small server part. Else :meth:`submit`."""
        if not (self.alone() and self._run_lock.acquire(blocking=False)):
            return self.submit(feeds)
        try:
            if self._closed:
                return None
            job = _Job(feeds)
            self._run([job])
            return job
        finally:
            self._run_lock.release()

    # --- batcher -------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job is _FLUSH:
                continue
            batch = [job]
            deadline = time.perf_counter() + (0.0 if self._draining else self.config.max_queue_delay_s)
            max_batch = min(self.batch_bound, self.config.max_batch)
            while len(batch) < max_batch:
                # Wait out the queue delay only while more requests are on their way (admitted,
                # not yet queued): a lone request runs at once instead of waiting for company.
                busy = not self.config.wait_only_when_busy or self._in_flight() > len(batch)
                remaining = deadline - time.perf_counter() if busy else 0.0
                try:
                    nxt = self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                if nxt is _FLUSH:
                    break
                batch.append(nxt)
            with self._run_lock:
                self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        start = time.perf_counter()
        try:
            feeds = {name: np.concatenate([j.feeds[name] for j in batch]) for name in batch[0].feeds}
            outputs = self.runner.infer(feeds)
            error = None
        except Exception as exc:  # an ONNX Runtime failure answers every job in the batch
            outputs, error = None, f"server part failed: {exc}"
        compute = time.perf_counter() - start
        self.recent_compute_s = compute if self.recent_compute_s == float("inf") else (
            0.8 * self.recent_compute_s + 0.2 * compute)
        for i, job in enumerate(batch):
            job.batch_size, job.queue_s, job.compute_s = len(batch), start - job.enqueued, compute / len(batch)
            if error is None:
                job.outputs = {n: outputs[n][i: i + 1] for n in self.output_names}
            else:
                job.error = error
            job.done.set()
        self.metrics.observe_batch(self.split_id, len(batch), compute, [j.queue_s for j in batch])

    def pending(self) -> int:
        return self._queue.qsize()

    def drain(self) -> None:
        """From now on run every batch at once, without waiting out the queue delay."""
        self._draining = True
        self._queue.put(_FLUSH)

    def close(self) -> None:
        """Take no more samples; what is queued runs now, without waiting out the queue delay."""
        with self._submit_lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)

    def stop(self) -> None:
        self.close()
        self._thread.join(timeout=30)
        self.runner.deactivate()

    def inputs(self) -> list[dict]:
        """The request's tensors, KServe v2 style: a payload per activation, side tensors raw."""
        inputs = []
        for t in self.crossing:
            if t.kind == "activation":
                inputs.append({"name": payload_name(t.name), "datatype": "UINT8", "shape": [-1]})
            else:
                inputs.append({"name": t.name, "datatype": DATATYPE_OF[np.dtype(t.dtype)], "shape": list(t.shape)})
        return inputs

    def outputs(self) -> list[dict]:
        return [{"name": name, "datatype": DATATYPE_OF[np.dtype(dtype)], "shape": shape}
                for name, dtype, shape in self.output_specs]

    def metadata(self) -> dict:
        return {"name": self.split_id, "versions": ["1"], "platform": PLATFORM, "inputs": self.inputs(),
                "outputs": self.outputs()}

    def config_entry(self) -> dict:
        """Triton's model configuration (model_config.proto, as JSON)."""
        def tensors(entries):
            return [{"name": e["name"], "data_type": f"TYPE_{e['datatype']}", "dims": e["shape"]} for e in entries]

        return {"name": self.split_id, "platform": PLATFORM, "backend": "slicer", "max_batch_size": 0,
                "input": tensors(self.inputs()), "output": tensors(self.outputs()),
                "dynamic_batching": {"max_queue_delay_microseconds": int(self.config.max_queue_delay_s * 1e6)}}

    def statistics(self) -> dict:
        """Triton's model statistics: counts, and nanosecond totals (success, queue, compute)."""
        totals = self.metrics.snapshot(self.split_id)
        n = totals["requests"]

        def ns(seconds: float) -> int:
            return int(seconds * 1e9)

        return {"name": self.split_id, "version": "1", "last_inference": totals["last_request_ms"],
                "inference_count": n, "execution_count": totals["batches"],
                "inference_stats": {"success": {"count": n, "ns": ns(totals["request_s"])},
                                    "fail": {"count": self.metrics.failures(self.split_id), "ns": 0},
                                    "queue": {"count": n, "ns": ns(totals["queue_s"])},
                                    "compute_infer": {"count": n, "ns": ns(totals["compute_s"])}}}


class ModelHost:
    """The split server parts of one artifact, behind any transport."""

    def __init__(self, artifact_dir: str | Path | Artifact, config: ServerConfig | None = None,
                 splits: list[str] | None = None):
        self.artifact = artifact_dir if isinstance(artifact_dir, Artifact) else load_artifact(artifact_dir)
        self.config = config or ServerConfig()
        self.metrics = Metrics()
        chosen = splits or [s.id for s in self.artifact.splits if s.files]
        if not chosen:
            raise ArtifactError(f"{self.artifact.path} has no materialised split to serve")
        self.models: dict[str, SplitModel] = {}
        self._inflight = 0
        try:
            for sid in chosen:
                self.models[sid] = SplitModel(self.artifact, sid, self.config, self.metrics, lambda: self._inflight)
        except BaseException:
            self.stop_models()
            raise
        self.accepting = True
        self._lock = threading.Condition()

    # --- in flight -----------------------------------------------------------------

    def admit(self) -> bool:
        """Count a request in flight, unless the host is stopping (then it gets 503)."""
        with self._lock:
            if not self.accepting:
                return False
            self._inflight += 1
            self._lock.notify_all()
            return True

    def release(self) -> None:
        with self._lock:
            self._inflight -= 1
            self._lock.notify_all()

    def wait_for_inflight(self, count: int, timeout_s: float | None = None) -> bool:
        """Block until at least ``count`` requests are in flight (for tests and drains)."""
        with self._lock:
            return self._lock.wait_for(lambda: self._inflight >= count, timeout_s)

    def drain(self, timeout_s: float = 60) -> None:
        """Refuse new requests; run what is queued at once; wait for every admitted one."""
        with self._lock:
            self.accepting = False
        for model in self.models.values():
            model.drain()
        with self._lock:
            self._lock.wait_for(lambda: self._inflight == 0, timeout=timeout_s)

    def stop_models(self) -> None:
        for model in self.models.values():
            model.stop()

    # --- requests ------------------------------------------------------------------

    def model(self, name: str) -> "SplitModel":
        model = self.models.get(name)
        if model is None:
            raise HostError(404, "unknown_model", f"unknown model {name!r} (splits: {', '.join(self.models)})")
        return model

    def infer(self, model_name: str, message: InferMessage) -> InferMessage:
        """One request, checked, batched and answered (server times in the parameters).

        Raises:
            HostError: unknown model (404), a bad request or payload (400), the host is
                stopping (503), the server part failed (500).
        """
        model = self.model(model_name)
        try:
            artifact_id = message.parameters.get(ARTIFACT_PARAMETER)
            if artifact_id != self.artifact.id:
                raise ProtocolError(f"request is for artifact {artifact_id!r}, this server runs {self.artifact.id!r}")
            feeds = model.feeds_from(message)
        except PayloadError as exc:
            raise HostError(400, "bad_payload", str(exc)) from None
        except (ProtocolError, ValueError) as exc:
            raise HostError(400, "bad_request", str(exc)) from None
        received = time.perf_counter()
        job = model.run_or_submit(feeds)
        if job is None:
            raise HostError(503, "shutting_down", "the server is shutting down")
        job.done.wait()
        if job.error is not None:
            raise HostError(500, "server_failure", job.error)
        total_s = time.perf_counter() - received
        self.metrics.count_request(model_name, total_s)
        parameters = {"server_compute_us": round(job.compute_s * 1e6, 1), "queue_us": round(job.queue_s * 1e6, 1),
                      "batch_size": job.batch_size, "server_total_us": round(total_s * 1e6, 1)}
        return InferMessage(job.outputs, parameters, message.id, model_name)

    def repository_index(self) -> list[dict]:
        """Every model this host serves, ready while it accepts requests."""
        state = "READY" if self.accepting else "UNAVAILABLE"
        return [{"name": name, "version": "1", "state": state, "reason": ""} for name in self.models]

    def statistics(self, name: str = "") -> list[dict]:
        """One model's statistics (``name``), or every model's (empty name)."""
        return [self.model(name).statistics()] if name else [m.statistics() for m in self.models.values()]

    def server_metadata(self) -> dict:
        return {"name": "slicer-compile", "version": __version__, "extensions": ["binary_tensor_data", "parameters"]}
