"""The embedded split server's HTTP transport: the KServe v2 / Triton HTTP protocol
(binary tensor extension) in front of a :class:`~slicer_compile.runtime.host.ModelHost`,
which checks, decodes, batches and answers. One model per materialised split.

HTTP itself is aiohttp's (its C parser, llhttp, reads request lines, headers and
Content-Length strictly: a negative, non-decimal or repeated length is a 400), so
this module holds only the KServe v2 semantics and the server's bounds:

* a body over ``max_request_bytes`` is refused from its Content-Length (413), and one
  without a length (chunked) is refused (411);
* request headers must arrive within ``client_timeout_s`` of the connection opening or
  of the last answer (aiohttp's keep-alive timer), a body within ``request_timeout_s``
  (408, and the connection closes): a client trickling bytes is dropped;
* beyond ``max_connections`` open connections, or ``max_buffered_bytes`` of bodies
  held at once, a request is answered 503 with ``Retry-After``;
* payloads are decoded on at most ``workers`` threads; the event loop only reads and
  writes.

``stop()`` answers new requests 503, finishes in-flight ones, then closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from slicer_compile.errors import SlicerCompileError
from slicer_compile.runtime.access import Access
from slicer_compile.runtime.host import HostError, ModelHost, ServerConfig, SplitModel  # noqa: F401 (re-exported)
from slicer_compile.runtime.protocol import (
    HEADER_LENGTH,
    ProtocolError,
    decode_message,
    encode_json_response,
    encode_message,
)

#: One line per request at INFO (``slicer-compile serve --log-level info``).
_access_log = logging.getLogger("slicer_compile.access")



class _NoParserTracebacks(logging.Filter):
    """aiohttp answers a malformed request 400 itself, and logs the parser's exception
    with a traceback at ERROR: that is the client's mistake, not the server's, so it
    goes to the access log in one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
            _access_log.info("refused a malformed request: %s", str(record.exc_info[1]).splitlines()[0])
            return False
        return True


logging.getLogger("aiohttp.server").addFilter(_NoParserTracebacks())

#: Paths that answer without a token (orchestrators' probes).
_OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")

_JSON = {"Content-Type": "application/json"}

#: Seconds a refused, unread body is read and dropped before the connection closes.
_LINGER_S = 2.0


class _BodyBudget:
    """Bytes of request bodies held at once, across connections (event-loop side only)."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0

    def reserve(self, nbytes: int) -> bool:
        if self.held + nbytes > self.limit:
            return False
        self.held += nbytes
        return True

    def release(self, nbytes: int) -> None:
        self.held -= nbytes


class SplitServer:
    """Serves every materialised split of an artifact over HTTP (KServe v2), on a
    :class:`~slicer_compile.runtime.host.ModelHost`; optionally gRPC beside it."""

    def __init__(self, artifact_dir: str | Path, host: str = "127.0.0.1", port: int = 8700,
                 config: ServerConfig | None = None, splits: list[str] | None = None, grpc_port: int | None = None,
                 access: Access | None = None):
        self.host = ModelHost(artifact_dir, config, splits)
        self.artifact, self.config, self.metrics, self.models = (self.host.artifact, self.host.config,
                                                                 self.host.metrics, self.host.models)
        self.access = access or Access()
        self._budget = _BodyBudget(self.config.max_buffered_bytes)
        self._workers = ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="infer")
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.grpc = None
        self._runner: web.AppRunner | None = None
        try:
            # lingering_time: after refusing a body unread (413, 503), aiohttp reads and
            # drops the rest so the sender sees the answer, not a reset; it holds the
            # connection that long even once the client has gone, hence short.
            self._runner = web.AppRunner(self._app(), handle_signals=False, access_log=_access_log,
                                         keepalive_timeout=self.config.client_timeout_s,
                                         lingering_time=min(_LINGER_S, self.config.request_timeout_s),
                                         shutdown_timeout=60.0)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, host, port, ssl_context=self.access.server_ssl_context(), backlog=1024)
            try:
                self._loop.run_until_complete(site.start())
            except OSError as exc:
                raise SlicerCompileError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
            self._address = self._runner.addresses[0][:2]
            if grpc_port is not None:
                from slicer_compile.runtime.grpc_server import GrpcEndpoint

                self.grpc = GrpcEndpoint(self.host, host, grpc_port, access=self.access)
        except BaseException:  # a port taken, a certificate that will not load: release what was made
            if self._runner is not None:
                self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()
            self._workers.shutdown()
            self.host.stop_models()
            raise

    @property
    def url(self) -> str:
        """host:port (the scheme is https with TLS: see :attr:`scheme`)."""
        host, port = self._address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def scheme(self) -> str:
        return "https" if self.access.tls else "http"

    # --- running -------------------------------------------------------------------

    def start(self) -> "SplitServer":
        """Serve on a background thread."""
        if self.grpc is not None:
            self.grpc.start()
        self._thread = threading.Thread(target=self._loop.run_forever, name="http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until :meth:`stop` (from a signal handler or another
        thread) or Ctrl-C; then stop gracefully."""
        if self.grpc is not None:
            self.grpc.start()
        try:
            self._loop.run_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        """Graceful shutdown: refuse new requests (503), finish in-flight ones, release.
        Safe to call from any thread, and more than once."""
        if self._stopped:
            return
        self._stopped = True
        self.host.accepting = False
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join()
        else:
            self._loop.run_until_complete(self._shutdown())
        # What aiohttp left (a connection still lingering over a refused body) ends here.
        leftovers = asyncio.all_tasks(self._loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            self._loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        self._loop.close()

    def request_stop(self) -> None:
        """Ask a :meth:`serve_forever` loop to stop (signal-handler safe: returns at once)."""
        if not self._stopped and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.host.drain)  # every admitted request is answered
        if self.grpc is not None:
            await loop.run_in_executor(None, self.grpc.stop)
        await self._runner.cleanup()
        self._workers.shutdown(wait=True)
        self.host.stop_models()

    def wait_for_inflight(self, count: int, timeout_s: float | None = None) -> bool:
        return self.host.wait_for_inflight(count, timeout_s)

    def __enter__(self) -> "SplitServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the application -------------------------------------------------------------

    def _app(self) -> web.Application:
        # client_max_size: aiohttp's own cap on a body it reads, the same as ours.
        app = web.Application(client_max_size=self.config.max_request_bytes, middlewares=[self._guard])
        app.router.add_get("/v2/health/live", self._live)
        app.router.add_get("/v2/health/ready", self._ready)
        app.router.add_get("/v2", self._server_metadata)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v2/repository/index", self._repository_index)
        app.router.add_get("/v2/models/stats", self._statistics)
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            app.router.add_get(prefix, self._model_metadata)
            app.router.add_get(prefix + "/ready", self._model_ready)
            app.router.add_get(prefix + "/config", self._model_config)
            app.router.add_get(prefix + "/stats", self._statistics)
            app.router.add_post(prefix + "/infer", self._infer)
        return app

    def _error(self, status: int, message: str, reason: str, model: str = "", close: bool = False,
               headers: dict | None = None) -> web.Response:
        self.metrics.count_error(model, reason)
        response = web.Response(status=status, body=json.dumps({"error": message}).encode(),
                                headers={**_JSON, **(headers or {})})
        if close:
            response.force_close()
        return response

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        """Per request, before any endpoint: the connection cap, then the token."""
        connections = len(self._runner.server.connections) if self._runner.server is not None else 0
        if connections > self.config.max_connections:  # this one included
            return self._error(503, f"the server holds {connections} connections, more than its limit of "
                               f"{self.config.max_connections}", "too_many_connections", close=True,
                               headers={"Retry-After": "1"})
        if request.path not in _OPEN_PATHS and not self.access.authorized(request.headers.get("Authorization")):
            return self._error(401, "a valid bearer token is required", "unauthorized",
                               headers={"WWW-Authenticate": "Bearer"})
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return self._error(404, f"no endpoint {request.method} {request.path}", "bad_path")
        except web.HTTPMethodNotAllowed:
            return self._error(405, f"{request.method} is not allowed on {request.path}", "bad_method")

    def _model(self, request: web.Request) -> SplitModel:
        version = request.match_info.get("version", "1")
        if version not in ("1", ""):
            raise HostError(404, "unknown_model", f"model {request.match_info['model']!r} has no version {version!r}")
        return self.host.model(request.match_info["model"])

    async def _live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.host.accepting else 503)

    async def _server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(self.host.server_metadata())

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(self.host), content_type="text/plain",
                            headers={"X-Content-Format": "prometheus 0.0.4"})

    async def _repository_index(self, request: web.Request) -> web.Response:
        return web.json_response(self.host.repository_index())

    async def _model_metadata(self, request: web.Request) -> web.Response:
        return await self._about_model(request, lambda m: m.metadata())

    async def _model_config(self, request: web.Request) -> web.Response:
        return await self._about_model(request, lambda m: m.config_entry())

    async def _model_ready(self, request: web.Request) -> web.Response:
        return await self._about_model(request, lambda m: None)

    async def _statistics(self, request: web.Request) -> web.Response:
        if "model" not in request.match_info:
            return web.json_response({"model_stats": self.host.statistics()})
        return await self._about_model(request, lambda m: {"model_stats": [m.statistics()]})

    async def _about_model(self, request: web.Request, answer) -> web.Response:
        try:
            body = answer(self._model(request))
        except HostError as exc:
            return self._error(exc.status, str(exc), exc.reason)
        if body is None:  # readiness
            return web.Response(status=200 if self.host.accepting else 503)
        return web.json_response(body)

    async def _infer(self, request: web.Request) -> web.StreamResponse:
        model_name = request.match_info["model"]
        if not self.host.admit():  # in flight from here on: stop() finishes it
            return self._error(503, "the server is shutting down", "shutting_down", model_name, close=True)
        try:
            return await self._read_and_answer(request, model_name)
        finally:
            self.host.release()

    async def _read_and_answer(self, request: web.Request, model_name: str) -> web.StreamResponse:
        length = request.content_length
        if length is None:
            return self._error(411, "a Content-Length header is required", "no_length", model_name, close=True)
        limit = self.config.max_request_bytes
        # Refusals of a body not yet read keep the connection: aiohttp then reads and
        # discards the rest for a bounded time (its lingering close), so that a client
        # still sending sees the answer rather than a reset.
        if length > limit:
            return self._error(413, f"request of {length} bytes exceeds the limit of {limit}", "too_large", model_name)
        if not self._budget.reserve(length):
            return self._error(503, "the server holds as many request bytes as it may; retry shortly", "busy",
                               model_name, headers={"Retry-After": "1"})
        try:
            try:
                body = await within_seconds(request.read(), self.config.request_timeout_s)
            except asyncio.TimeoutError:
                return self._error(408, f"the request body did not arrive within {self.config.request_timeout_s:g} s",
                                   "timeout", model_name, close=True)
            except ConnectionError:
                return self._error(400, "the client went away mid-body", "disconnected", model_name, close=True)
            header_length = request.headers.get(HEADER_LENGTH)
            if self._answer_here(model_name, len(body)):
                answer = self._answer(model_name, body, header_length)
            else:
                loop = asyncio.get_running_loop()
                answer = await loop.run_in_executor(self._workers, self._answer, model_name, body, header_length)
        finally:
            self._budget.release(length)
        if isinstance(answer, HostError):
            return self._error(answer.status, str(answer), answer.reason, model_name, close=answer.status == 503)
        body, headers = answer
        return web.Response(status=200, body=body, headers=headers)

    def _answer_here(self, model_name: str, nbytes: int) -> bool:
        """Whether to answer on the event loop: a lone, small request to a split whose
        server part runs in well under a millisecond. Waking a worker thread and the loop
        again costs more than that work (on a 2-vCPU VM, more than the HTTP echo itself);
        anything larger, or any request beside others, goes to a worker."""
        model = self.host.models.get(model_name)
        return (model is not None and nbytes <= self.config.inline_max_bytes and model.alone()
                and model.recent_compute_s <= self.config.inline_max_compute_s)

    def _answer(self, model_name: str, body: bytes, header_length: str | None) -> tuple[bytes, dict] | HostError:
        """On a worker thread: parse, check, decode, batch, encode; (body, headers), or
        the refusal."""
        try:
            if header_length is not None and not (header_length.isascii() and header_length.isdigit()):
                raise ProtocolError(f"{HEADER_LENGTH} must be a decimal integer, got {header_length[:40]!r}")
            message = decode_message(body, int(header_length) if header_length else None, request=True)
            reply = self.host.infer(model_name, message)
        except ProtocolError as exc:
            return HostError(400, "bad_request", str(exc))
        except HostError as exc:
            return exc
        if message.binary_outputs:
            return encode_message(reply, request=False)
        return encode_json_response(reply), dict(_JSON)


async def within_seconds(awaitable, seconds: float):
    """``await awaitable``, or TimeoutError after ``seconds``: asyncio.timeout where there
    is one (3.11+, a timer on the running task), else wait_for (a task per call)."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


def serve(artifact_dir: str | Path, host: str, port: int, config: ServerConfig, grpc_port: int | None = None,
          access: Access | None = None) -> SplitServer:
    """Build a server (models loaded, sockets bound) ready to ``serve_forever``."""
    return SplitServer(artifact_dir, host, port, config, grpc_port=grpc_port, access=access)
