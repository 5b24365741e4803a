"""The embedded split server: KServe v2 / Triton HTTP protocol, one model per
materialised split, dynamic batching across clients.

Each request carries one sample: payload bytes for every activation (and the
side tensors raw). The server checks the artifact id, decodes every payload,
and queues the sample for its split; a batcher thread per split runs up to
``max_batch`` queued samples at once through the server part (its decoder
nodes stripped: decoding happens per request, before batching). Every
accepted request gets exactly one answer.

Failure handling: a body over ``max_request_bytes`` is refused before it is
read (413); malformed or inconsistent bodies, payloads from another artifact
and undecodable payloads get 400 with the reason; a client that stalls past
``client_timeout_s`` is dropped. ``stop()`` finishes in-flight requests and
answers new ones with 503.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from slicer_compile import __version__
from slicer_compile.artifact import Artifact, load_artifact
from slicer_compile.backends.base import Runner, RunSettings
from slicer_compile.backends.registry import get_backend
from slicer_compile.codec import PayloadError, SlicerConfig, decode
from slicer_compile.codec.wire import DEFAULT_LIMITS, read_header
from slicer_compile.errors import ArtifactError, SlicerCompileError
from slicer_compile.graph.codec_nodes import payload_name
from slicer_compile.runtime.metrics import Metrics
from slicer_compile.runtime.parts import SERVER, open_part
from slicer_compile.runtime.protocol import (
    ARTIFACT_PARAMETER,
    HEADER_LENGTH,
    InferMessage,
    ProtocolError,
    datatype_of,
    decode_message,
    encode_json_response,
    encode_message,
)


#: One line per request at INFO (``slicer-compile serve --log-level info``).
_access_log = logging.getLogger("slicer_compile.access")


@dataclass
class ServerConfig:
    max_batch: int = 16
    max_queue_delay_s: float = 0.0005
    max_request_bytes: int = 64 << 20
    client_timeout_s: float = 10.0
    threads: int = 0  # ONNX Runtime intra-op threads (0 = its default)
    #: "onnxruntime": decode in Python, batch the server part; "tensorrt": run each
    #: split's server.plan with the decoder plugin inside (one request at a time: the
    #: decoder's output shape, batch included, is fixed in the engine)
    backend: str = "onnxruntime"


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

    def __init__(self, artifact: Artifact, split_id: str, config: ServerConfig, metrics: Metrics):
        info = artifact.split(split_id)
        self.split_id = split_id
        self.crossing = list(info.crossing)
        self.activations = [t for t in self.crossing if t.kind == "activation"]
        backend = get_backend(config.backend)
        self.decodes_in_engine = backend.codec_in_engine
        self.batch_bound = backend.server_batch_bound or config.max_batch
        self.runner: Runner = open_part(artifact, split_id, SERVER, backend.name,
                                        RunSettings(threads=config.threads, optimize=True))
        self.runner.activate()
        self.output_names = self.runner.output_names
        self.config = config
        self.metrics = metrics
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
                if self.decodes_in_engine:
                    # The engine decodes; the frame (magic, CRC, shape) is checked here so
                    # that a bad payload is the client's error (400), not the engine's.
                    header = read_header(payload.tobytes(), DEFAULT_LIMITS)  # raises PayloadError
                    if header.codec_id != SlicerConfig.codec_id:
                        raise PayloadError("the TensorRT server part decodes SLICER payloads only")
                    if list(header.shape) != list(t.shape):
                        raise PayloadError(f"payload for {t.name} is of shape {header.shape}, expected "
                                           f"{tuple(t.shape)}")
                    feeds[name] = payload
                    continue
                value = decode(payload.tobytes())  # raises PayloadError
                if list(value.shape) != list(t.shape):
                    raise PayloadError(f"payload for {t.name} decodes to {value.shape}, expected {tuple(t.shape)}")
                feeds[t.name] = value.astype(t.dtype, copy=False)
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

    def submit(self, feeds: dict[str, np.ndarray]) -> _Job | None:
        """Queue one sample; None once the model is closed (the caller answers 503)."""
        job = _Job(feeds)
        with self._submit_lock:
            if self._closed:
                return None
            self._queue.put(job)
        return job

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
                remaining = deadline - time.perf_counter()
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

    def metadata(self) -> dict:
        inputs = []
        for t in self.crossing:
            if t.kind == "activation":
                inputs.append({"name": payload_name(t.name), "datatype": "UINT8", "shape": [-1]})
            else:
                inputs.append({"name": t.name, "datatype": datatype_of(np.zeros(0, t.dtype)),
                               "shape": list(t.shape)})
        return {"name": self.split_id, "versions": ["1"], "platform": "slicer_split", "inputs": inputs,
                "outputs": [{"name": n} for n in self.output_names]}


class SplitServer:
    """Serves every materialised split of an artifact over HTTP."""

    def __init__(self, artifact_dir: str | Path, host: str = "127.0.0.1", port: int = 8700,
                 config: ServerConfig | None = None, splits: list[str] | None = None):
        self.artifact = load_artifact(artifact_dir)
        self.config = config or ServerConfig()
        self.metrics = Metrics()
        chosen = splits or [s.id for s in self.artifact.splits if s.files]
        if not chosen:
            raise ArtifactError(f"{artifact_dir} has no materialised split to serve")
        self.models = {sid: SplitModel(self.artifact, sid, self.config, self.metrics) for sid in chosen}
        self.accepting = True
        self._inflight = 0
        self._lock = threading.Condition()
        handler = type("Handler", (_Handler,), {"server_state": self, "timeout": self.config.client_timeout_s})
        try:
            self.httpd = _HTTPServer((host, port), handler)
        except OSError as exc:
            for model in self.models.values():
                model.stop()
            raise SlicerCompileError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.httpd.daemon_threads = False  # server_close() waits for in-flight requests
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> "SplitServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        """Graceful shutdown: refuse new requests, finish in-flight ones, release."""
        with self._lock:
            self.accepting = False
        self.httpd.shutdown()
        for model in self.models.values():
            model.drain()  # what is queued runs now, without waiting out the queue delay
        with self._lock:  # in-flight requests finish (each gets its answer) before the models stop
            self._lock.wait_for(lambda: self._inflight == 0, timeout=60)
        self.httpd.server_close()
        for model in self.models.values():
            model.stop()

    def __enter__(self) -> "SplitServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def admit(self) -> bool:
        """Count a request in flight, unless the server is stopping (then it gets 503)."""
        with self._lock:
            if not self.accepting:
                return False
            self._inflight += 1
            self._lock.notify_all()
            return True

    def track(self, delta: int) -> None:
        with self._lock:
            self._inflight += delta
            self._lock.notify_all()

    def wait_for_inflight(self, count: int, timeout_s: float | None = None) -> bool:
        """Block until at least ``count`` requests are in flight (for tests and drains)."""
        with self._lock:
            return self._lock.wait_for(lambda: self._inflight >= count, timeout_s)


class _HTTPServer(ThreadingHTTPServer):
    # socketserver's default backlog of 5 resets connections when many clients
    # connect at once.
    request_queue_size = 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: SplitServer  # set per server instance

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay on replies

    def log_message(self, format, *args):
        # The access log: off unless the logger is at INFO (serve --log-level info).
        if _access_log.isEnabledFor(logging.INFO):
            _access_log.info("%s %s", self.address_string(), format % args)

    # --- plumbing ------------------------------------------------------------------

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, close: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, reason: str, model: str = "", close: bool = False) -> None:
        self.server_state.metrics.count_error(model, reason)
        self._send(status, json.dumps({"error": message}).encode(), close=close)

    # --- endpoints -----------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        state = self.server_state
        path = self.path.rstrip("/")
        if path == "/v2/health/live":
            self._send(200, b"")
        elif path == "/v2/health/ready":
            self._send(200 if state.accepting else 503, b"")
        elif path == "/v2":
            self._send(200, json.dumps({"name": "slicer-compile", "version": __version__,
                                        "extensions": ["binary_tensor_data", "parameters"]}).encode())
        elif path == "/metrics":
            self._send(200, state.metrics.render(state).encode(), {"Content-Type": "text/plain; version=0.0.4"})
        elif path.startswith("/v2/models/"):
            parts = path.split("/")[3:]
            model = state.models.get(parts[0]) if parts else None
            if model is None:
                self._error(404, f"unknown model {parts[0] if parts else ''!r}", "unknown_model")
            elif parts[1:] == ["ready"] or parts[1:] == ["versions", "1", "ready"]:
                self._send(200 if state.accepting else 503, b"")
            elif len(parts) == 1 or parts[1:] == ["versions", "1"]:
                self._send(200, json.dumps(model.metadata()).encode())
            else:
                self._error(404, f"no endpoint {self.path}", "bad_path")
        else:
            self._error(404, f"no endpoint {self.path}", "bad_path")

    def do_POST(self) -> None:  # noqa: N802
        state = self.server_state
        admitted = state.admit()  # in flight from here on: stop() finishes it
        try:
            self._infer(state, admitted)
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True  # the client vanished or stalled: drop it
        finally:
            if admitted:
                state.track(-1)

    def _infer(self, state: SplitServer, admitted: bool) -> None:
        parts = self.path.rstrip("/").split("/")
        # /v2/models/<name>[/versions/<v>]/infer
        if len(parts) < 5 or parts[1:3] != ["v2", "models"] or parts[-1] != "infer":
            self._error(404, f"no endpoint {self.path}", "bad_path", close=True)
            return
        model_name = parts[3]
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(411, "a Content-Length header is required", "no_length", model_name, close=True)
            return
        if length > state.config.max_request_bytes:
            self._error(413, f"request of {length} bytes exceeds the limit of {state.config.max_request_bytes}",
                        "too_large", model_name, close=True)
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True  # the client went away mid-body
            return
        if not admitted:
            self._error(503, "the server is shutting down", "shutting_down", model_name, close=True)
            return
        model = state.models.get(model_name)
        if model is None:
            self._error(404, f"unknown model {model_name!r} (splits: {', '.join(state.models)})", "unknown_model")
            return
        try:
            header_length = self.headers.get(HEADER_LENGTH)
            message = decode_message(body, int(header_length) if header_length else None, request=True)
            artifact_id = message.parameters.get(ARTIFACT_PARAMETER)
            if artifact_id != state.artifact.id:
                raise ProtocolError(f"request is for artifact {artifact_id!r}, this server runs {state.artifact.id!r}")
            feeds = model.feeds_from(message)
        except (ProtocolError, PayloadError, ValueError) as exc:
            reason = "bad_payload" if isinstance(exc, PayloadError) else "bad_request"
            self._error(400, str(exc), reason, model_name)
            return
        received = time.perf_counter()
        job = model.submit(feeds)
        if job is None:
            self._error(503, "the server is shutting down", "shutting_down", model_name, close=True)
            return
        job.done.wait()
        if job.error is not None:
            self._error(500, job.error, "server_failure", model_name)
            return
        state.metrics.count_request(model_name)
        parameters = {"server_compute_us": round(job.compute_s * 1e6, 1), "queue_us": round(job.queue_s * 1e6, 1),
                      "batch_size": job.batch_size, "server_total_us": round((time.perf_counter() - received) * 1e6, 1)}
        reply = InferMessage(job.outputs, parameters, message.id, model_name)
        if message.binary_outputs:
            body, headers = encode_message(reply, request=False)
            self._send(200, body, headers)
        else:
            self._send(200, encode_json_response(reply))


def serve(artifact_dir: str | Path, host: str, port: int, config: ServerConfig) -> SplitServer:
    """Build a server (models loaded, socket bound) ready to ``serve_forever``."""
    return SplitServer(artifact_dir, host, port, config)
