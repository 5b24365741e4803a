"""The embedded split server's HTTP transport: the KServe v2 / Triton HTTP protocol
(binary tensor extension) in front of a :class:`~slicer_compile.runtime.host.ModelHost`,
which checks, decodes, batches and answers. One model per materialised split.

Failure handling: a body over ``max_request_bytes`` is refused before it is
read (413); malformed or inconsistent bodies, payloads from another artifact
and undecodable payloads get 400 with the reason; a client that stalls past
``client_timeout_s`` is dropped. ``stop()`` finishes in-flight requests and
answers new ones with 503.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from slicer_compile.errors import SlicerCompileError
from slicer_compile.runtime.host import HostError, ModelHost, ServerConfig, SplitModel  # noqa: F401 (re-exported)
from slicer_compile.runtime.protocol import (
    HEADER_LENGTH,
    ProtocolError,
    decode_message,
    encode_json_response,
    encode_message,
)


#: At most this much of a refused body is read and thrown away (beyond it the client gets a reset).
_DISCARD_LIMIT = 16 << 20

#: One line per request at INFO (``slicer-compile serve --log-level info``).
_access_log = logging.getLogger("slicer_compile.access")


class SplitServer:
    """Serves every materialised split of an artifact over HTTP (KServe v2), on a
    :class:`~slicer_compile.runtime.host.ModelHost`."""

    def __init__(self, artifact_dir: str | Path, host: str = "127.0.0.1", port: int = 8700,
                 config: ServerConfig | None = None, splits: list[str] | None = None, grpc_port: int | None = None):
        self.host = ModelHost(artifact_dir, config, splits)
        self.artifact, self.config, self.metrics, self.models = (self.host.artifact, self.host.config,
                                                                 self.host.metrics, self.host.models)
        handler = type("Handler", (_Handler,), {"server_state": self.host, "timeout": self.config.client_timeout_s})
        try:
            self.httpd = _HTTPServer((host, port), handler)
        except OSError as exc:
            self.host.stop_models()
            raise SlicerCompileError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.httpd.daemon_threads = False  # server_close() waits for in-flight requests
        self._thread: threading.Thread | None = None
        # The same host behind KServe v2 gRPC too (tritonclient.grpc), where asked for.
        self.grpc = None
        if grpc_port is not None:
            from slicer_compile.runtime.grpc_server import GrpcEndpoint

            try:
                self.grpc = GrpcEndpoint(self.host, host, grpc_port)
            except BaseException:
                self.httpd.server_close()
                self.host.stop_models()
                raise

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> "SplitServer":
        if self.grpc is not None:
            self.grpc.start()
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        if self.grpc is not None:
            self.grpc.start()
        try:
            self.httpd.serve_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        """Graceful shutdown: refuse new requests, finish in-flight ones, release."""
        self.host.accepting = False
        self.httpd.shutdown()
        self.host.drain()
        if self.grpc is not None:
            self.grpc.stop()  # in-flight requests finish (each gets its answer) before the models stop
        self.httpd.server_close()
        self.host.stop_models()

    def wait_for_inflight(self, count: int, timeout_s: float | None = None) -> bool:
        return self.host.wait_for_inflight(count, timeout_s)

    def __enter__(self) -> "SplitServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


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

    def _discard_body(self, length: int) -> None:
        """After refusing a body unread, read (a bounded part of) it: a client still
        sending would otherwise get a broken pipe before it can read the refusal."""
        remaining = min(length, _DISCARD_LIMIT)
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass

    # --- endpoints -----------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        state = self.server_state
        path = self.path.rstrip("/")
        if path == "/v2/health/live":
            self._send(200, b"")
        elif path == "/v2/health/ready":
            self._send(200 if state.accepting else 503, b"")
        elif path == "/v2":
            self._send(200, json.dumps(state.server_metadata()).encode())
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
                state.release()

    def _infer(self, state: ModelHost, admitted: bool) -> None:
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
            self._discard_body(length)
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True  # the client went away mid-body
            return
        if not admitted:
            self._error(503, "the server is shutting down", "shutting_down", model_name, close=True)
            return
        try:
            header_length = self.headers.get(HEADER_LENGTH)
            message = decode_message(body, int(header_length) if header_length else None, request=True)
            reply = state.infer(model_name, message)
        except ProtocolError as exc:
            self._error(400, str(exc), "bad_request", model_name)
            return
        except HostError as exc:
            self._error(exc.status, str(exc), exc.reason, model_name, close=exc.status == 503)
            return
        if message.binary_outputs:
            body, headers = encode_message(reply, request=False)
            self._send(200, body, headers)
        else:
            self._send(200, encode_json_response(reply))


def serve(artifact_dir: str | Path, host: str, port: int, config: ServerConfig,
          grpc_port: int | None = None) -> SplitServer:
    """Build a server (models loaded, sockets bound) ready to ``serve_forever``."""
    return SplitServer(artifact_dir, host, port, config, grpc_port=grpc_port)
