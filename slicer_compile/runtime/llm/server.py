"""An LLM artifact's server over HTTP: KServe v2 inference requests (binary tensor
extension) carrying one step of a sequence, in front of a
:class:`~slicer_compile.runtime.llm.host.LlmHost`.

A step is a request to ``/v2/models/<artifact id>/infer`` (or ``/v2/models/llm/infer``)
whose parameters say which sequence and what step, as Triton's sequence batcher has
them: ``sequence_id`` (a string or an integer), ``sequence_start``, ``sequence_end``;
and at the start, ``cut`` (the layer boundary ℓ), ``mode`` ("split" or "handover") and,
for a hand-over, ``max_new_tokens``; ``step_index``, the step's number in its sequence,
makes a step sent twice answered twice the same (never a second token), and lets a
start resume a sequence another server lost (the kept hidden states, or the token
ids, of every position so far as its prefill). Its tensors:

* ``hidden`` FP32 [1, S, H]: the new tokens' hidden states after layer ℓ, raw; or
  ``hidden_payloads`` UINT8 [N] with ``payload_lengths`` INT64 [S]: one codec payload
  per token, concatenated;
* ``input_ids`` INT64 [1, S]: the tokens (cloud-only steps; a hand-over: all so far);
* a hand-over with the edge's KV cache: ``kv`` FP32 [ℓ, 2, 1, heads, S, head_dim] raw,
  or ``kv_payloads`` UINT8 [N] with ``kv_lengths`` INT64 [2ℓ] (key then value per layer).

On ``/v2/models/<model>/stream`` the same sessions are served over one WebSocket per
client, the codec's session header once and a compact frame per token
(runtime.llm.stream); the request per token here stays as the compatible path.

The answer's ``tokens`` INT64 [n] is the next token (a split step) or every token the
server generated after a hand-over; its parameters carry the server's compute seconds
and the batch sizes the step ran in. A refusal is an HTTP status with a JSON
``{"error": …}``: 400 a malformed step, 404 an unknown sequence, 409 a sequence started
twice, 410 an evicted one (and why), 503 at the session limit or while stopping.
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from aiohttp import web

from slicer_compile.errors import SlicerCompileError
from slicer_compile.runtime.access import Access
from slicer_compile.runtime.host import HostError
from slicer_compile.runtime.llm.host import LlmHost, LlmServerConfig, Step
from slicer_compile.runtime.llm.stream import SequenceStream, tokens_message
from slicer_compile.runtime.protocol import (
    HEADER_LENGTH,
    InferMessage,
    ProtocolError,
    cut_payloads,
    decode_message,
    encode_message,
)
from slicer_compile.runtime.server import within_seconds

#: The model name every LLM artifact also answers to.
LLM_MODEL = "llm"
_JSON = {"Content-Type": "application/json"}


class LlmServer:
    """Serves one LLM artifact's server side over HTTP (see module docstring)."""

    def __init__(self, artifact_dir: str | Path, host: str = "127.0.0.1", port: int = 8700,
                 config: LlmServerConfig | None = None, access: Access | None = None,
                 max_request_bytes: int = 64 << 20, request_timeout_s: float = 30.0, workers: int = 8):
        self.host = LlmHost(artifact_dir, config)
        self.access = access or Access()
        self.max_request_bytes, self.request_timeout_s = max_request_bytes, request_timeout_s
        self.names = {LLM_MODEL, self.host.artifact.id}
        self._workers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm-decode")
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._stopped = False
        app = web.Application(client_max_size=max_request_bytes)
        app.router.add_get("/v2/health/live", self._live)
        app.router.add_get("/v2/health/ready", self._ready)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v2/models/{model}", self._metadata)
        app.router.add_post("/v2/models/{model}/infer", self._infer)
        app.router.add_get("/v2/models/{model}/stream", self._stream)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        try:
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, host, port, ssl_context=self.access.server_ssl_context())
            try:
                self._loop.run_until_complete(site.start())
            except OSError as exc:
                raise SlicerCompileError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        except BaseException:
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()
            self.host.stop()
            raise
        self._address = self._runner.addresses[0][:2]

    @property
    def url(self) -> str:
        host, port = self._address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start(self) -> "LlmServer":
        self._thread = threading.Thread(target=self._loop.run_forever, name="llm-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        try:
            self._loop.run_forever()
        finally:
            self.stop()

    def request_stop(self) -> None:
        if not self._stopped and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)

    def stop(self) -> None:
        """Refuse new steps, answer the queued ones, release. Safe from any thread, twice."""
        if self._stopped:
            return
        self._stopped = True
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join()
        else:
            self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()
        self._workers.shutdown(wait=True)
        self.host.stop()

    def __enter__(self) -> "LlmServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- endpoints -------------------------------------------------------------------

    def _error(self, status: int, message: str) -> web.Response:
        return web.Response(status=status, body=json.dumps({"error": message}).encode(), headers=_JSON)

    async def _live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self._stopped else 200)

    async def _metrics(self, request: web.Request) -> web.Response:
        if not self.access.authorized(request.headers.get("Authorization")):
            return self._error(401, "a valid bearer token is required")
        return web.Response(text=self.host.stats.render(self.host), content_type="text/plain")

    async def _metadata(self, request: web.Request) -> web.Response:
        if not self.access.authorized(request.headers.get("Authorization")):
            return self._error(401, "a valid bearer token is required")
        if request.match_info["model"] not in self.names:
            return self._error(404, f"no model {request.match_info['model']!r}")
        spec = self.host.spec
        return web.json_response({"name": self.host.artifact.id, "platform": "slicer-compile-llm",
                                  "parameters": {"num_layers": spec.num_layers, "hidden_size": spec.hidden_size,
                                                 "vocab_size": spec.vocab_size, "max_tokens": self.host.max_tokens}})

    async def _infer(self, request: web.Request) -> web.Response:
        if not self.access.authorized(request.headers.get("Authorization")):
            return self._error(401, "a valid bearer token is required")
        if self._stopped:
            return self._error(503, "the server is shutting down")
        if request.match_info["model"] not in self.names:
            return self._error(404, f"no model {request.match_info['model']!r}")
        if request.content_length is None:
            return self._error(411, "a Content-Length header is required")
        try:
            body = await within_seconds(request.read(), self.request_timeout_s)
        except asyncio.TimeoutError:
            return self._error(408, f"the request body did not arrive within {self.request_timeout_s:g} s")
        except (ConnectionError, web.HTTPRequestEntityTooLarge):
            return self._error(413, f"a step is at most {self.max_request_bytes} bytes")
        loop = asyncio.get_running_loop()
        try:
            # Parsing and decoding the payloads is work: on a thread, not the event loop.
            step, binary = await loop.run_in_executor(self._workers, self._step_of, body,
                                                      request.headers.get(HEADER_LENGTH))
            result = await asyncio.wrap_future(self.host.submit(step))
        except ProtocolError as exc:
            return self._error(400, str(exc))
        except HostError as exc:
            return self._error(exc.status, str(exc))
        reply = InferMessage({"tokens": np.array(result.tokens, np.int64)},
                             {"server_compute_s": result.compute_s, "batch_sizes": json.dumps(result.batch_sizes),
                              "session_kv_bytes": result.session_kv_bytes}, model_name=self.host.artifact.id)
        body, headers = encode_message(reply, request=False)
        return web.Response(status=200, body=body, headers=headers)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """The stream transport (runtime.llm.stream): one WebSocket, sequences one after
        another, a frame per token."""
        if not self.access.authorized(request.headers.get("Authorization")):
            return self._error(401, "a valid bearer token is required")
        if request.match_info["model"] not in self.names:
            return self._error(404, f"no model {request.match_info['model']!r}")
        ws = web.WebSocketResponse(compress=False, max_msg_size=self.max_request_bytes, autoping=True)
        await ws.prepare(request)
        stream = SequenceStream(self.host.spec.hidden_size, self.max_request_bytes)
        loop = asyncio.get_running_loop()
        try:
            async for message in ws:
                step = None
                try:
                    if self._stopped:
                        raise HostError(503, "stopping", "the server is shutting down")
                    if message.type == web.WSMsgType.TEXT:
                        ended = stream.control(message.data)
                        if ended is not None:
                            self.host.end(ended)
                        continue
                    if message.type != web.WSMsgType.BINARY:
                        break
                    # Decoding frames is work: on a thread, not the event loop.
                    step = await loop.run_in_executor(self._workers, stream.frame, message.data)
                    if step is None:
                        continue  # more of the prefill to come
                    result = await asyncio.wrap_future(self.host.submit(step))
                except HostError as exc:
                    if step is not None:
                        stream.refused(step)
                    await ws.send_str(json.dumps({"status": exc.status, "error": str(exc)}))
                    continue
                stream.accepted(step)
                await ws.send_bytes(tokens_message(result.tokens))
        finally:
            if stream.sequence is not None and stream.sequence.started:
                self.host.end(stream.sequence.sequence_id)  # the client has gone mid-sequence
        return ws

    def _step_of(self, body: bytes, header_length: str | None) -> tuple[Step, bool]:
        """A request body as a host Step: every tensor checked and decoded."""
        if header_length is not None and not (header_length.isascii() and header_length.isdigit()):
            raise ProtocolError(f"{HEADER_LENGTH} must be a decimal integer")
        message = decode_message(body, int(header_length) if header_length else None, request=True,
                                 max_elements=self.max_request_bytes)
        p, t = message.parameters, message.tensors
        sequence_id = p.get("sequence_id")
        if isinstance(sequence_id, bool) or not isinstance(sequence_id, (str, int)):
            raise ProtocolError("a step needs a sequence_id parameter (a string or an integer)")
        flags = {}
        for name in ("sequence_start", "sequence_end"):
            if not isinstance(p.get(name, False), bool):
                raise ProtocolError(f"{name} must be true or false")
            flags[name] = p.get(name, False)
        mode = p.get("mode", "split")
        if mode not in ("split", "handover"):
            raise ProtocolError(f"mode must be 'split' or 'handover', got {mode!r}")
        cut, new_tokens, index = p.get("cut"), p.get("max_new_tokens", 1), p.get("step_index")
        for name, value in (("cut", cut), ("max_new_tokens", new_tokens), ("step_index", index)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ProtocolError(f"{name} must be an integer")
        hidden = t.get("hidden")
        if "hidden_payloads" in t:
            hidden = self.host.decode_token_payloads(_split(t, "hidden_payloads", "payload_lengths"))
        kv = None
        if "kv" in t:
            kv = self.host.raw_kv(t["kv"])
        elif "kv_payloads" in t:
            kv = self.host.decode_kv_payloads(_split(t, "kv_payloads", "kv_lengths"))
        step = Step(str(sequence_id), start=flags["sequence_start"], end=flags["sequence_end"], cut=cut,
                    hidden=hidden, token_ids=t.get("input_ids"), handover=mode == "handover", kv=kv,
                    max_new_tokens=new_tokens, index=index)
        return step, message.binary_outputs


def _split(tensors: dict, data: str, lengths: str) -> list[bytes]:
    """Concatenated payloads (UINT8) cut by their lengths (INT64), every length checked."""
    blob, sizes = tensors[data], tensors.get(lengths)
    if blob.dtype != np.uint8 or blob.ndim != 1 or sizes is None or sizes.ndim != 1 or sizes.dtype != np.int64:
        raise ProtocolError(f"{data} must be UINT8 [N] with {lengths} INT64 [count]")
    return cut_payloads(blob, sizes, data, lengths)
