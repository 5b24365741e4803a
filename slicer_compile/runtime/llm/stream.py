"""The stream transport of a split LLM: one WebSocket per client, a sequence's session
header once, then a compact frame per token up and the token id down.

The KServe v2 request per token (runtime.llm.server) pays HTTP headers, JSON and a
version-1 payload header every token; on ``/v2/models/<model>/stream`` a sequence pays
them once. Messages (aiohttp's WebSocket, no per-message compression: the frames are
compressed already):

* text ``{"start": true, "sequence_id": …, "cut": ℓ, "header": <base64 session header,
  or null>, "prefill": P, "step_index": i, "max_steps": N}``: a sequence starts (or
  resumes at step ``i``, as a KServe start with ``step_index`` does). ``header`` is the
  codec's session header (codec.stream); null sends raw float32 hidden states, and at
  ``cut`` 0 the messages carry token ids (int32). A session header comes only with a
  start: knobs change by starting again.
* binary: one frame (a token's hidden state), or at cut 0 the new token ids. The first
  ``P`` messages make the first step (the prompt), every later one a step of its own;
  step ``N − 1`` ends the sequence. The server answers a step with a binary message of
  its token ids (uint32 each).
* text ``{"end": true}``: the sequence ends early. Closing the socket ends it too.
* server to client, text ``{"status": …, "error": …}``: the step (or start) was refused
  with that HTTP status and why; the session is as it was before it (a frame that fails
  to decode is never half-applied), and the client may send again.

:class:`StreamTransport` is the client's end; :class:`SequenceStream` the server's, free
of the socket: messages in, host steps out.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass

import numpy as np

from slicer_compile.codec import DecodeLimits, PayloadError
from slicer_compile.codec.stream import StreamDecoder
from slicer_compile.runtime.host import HostError
from slicer_compile.runtime.llm.host import Step
from slicer_compile.runtime.transport import ClientAccess, ServerError

_TOKENS = np.dtype("<u4")
_IDS = np.dtype("<i4")


def stream_path(model: str) -> str:
    return f"/v2/models/{model}/stream"


# --- the server's end ------------------------------------------------------------------


@dataclass
class _Sequence:
    sequence_id: str
    cut: int
    decoder: StreamDecoder | None  # None: raw float32, or token ids at cut 0
    prefill: int
    next_index: int
    max_steps: int | None
    started: bool = False  # its first step reached the host
    rewind_to: int = 0  # the decoder's frame number before the step in flight


class SequenceStream:
    """One connection's sequence, as host steps: :meth:`control` takes a text message,
    :meth:`frame` a binary one and returns the step it completes (or None while a
    prefill is still arriving). Refusals raise HostError (with the status to answer)."""

    def __init__(self, hidden_size: int, max_frame_bytes: int):
        self.hidden_size, self.max_frame_bytes = hidden_size, max_frame_bytes
        self.sequence: _Sequence | None = None
        self._pending: list[bytes] = []

    def control(self, text: str) -> str | None:
        """A start (None), or an end: the id of the sequence to end."""
        try:
            message = json.loads(text)
        except ValueError:
            raise HostError(400, "bad_message", "a text message must be a JSON object") from None
        if not isinstance(message, dict):
            raise HostError(400, "bad_message", "a text message must be a JSON object")
        if message.get("end") is True:
            ended, self.sequence, self._pending = self.sequence, None, []
            return ended.sequence_id if ended else None
        if message.get("start") is not True:
            what = "a session header" if "header" in message else "a message"
            raise HostError(400, "bad_message", f"{what} without a start: a stream's header changes only "
                            "with a start (\"start\": true)")
        if self.sequence is not None:
            raise HostError(409, "session_exists", f"sequence {self.sequence.sequence_id!r} is still running on this "
                            "stream: end it first")
        self.sequence = self._parse_start(message)
        self._pending = []
        return None

    def _parse_start(self, message: dict) -> _Sequence:
        sid, cut = message.get("sequence_id"), message.get("cut")
        if isinstance(sid, bool) or not isinstance(sid, (str, int)):
            raise HostError(400, "bad_sequence_id", "a start needs a sequence_id (a string or an integer)")
        numbers = {}
        for name, default, low in (("cut", None, 0), ("prefill", 1, 1), ("step_index", 0, 0), ("max_steps", None, 1)):
            value = message.get(name, default)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise HostError(400, "bad_message", f"{name} must be an integer of at least {low}")
            numbers[name] = value
        if cut is None:
            raise HostError(400, "bad_cut", "a start needs the cut (a layer boundary)")
        decoder = None
        if message.get("header") is not None:
            if cut == 0:
                raise HostError(400, "bad_message", "at cut 0 the stream carries token ids: no session header")
            try:
                raw = base64.b64decode(message["header"], validate=True)
                decoder = StreamDecoder(raw, DecodeLimits(max_elements=self.hidden_size,
                                                          max_payload_bytes=self.max_frame_bytes))
            except PayloadError as exc:
                raise HostError(400, "bad_payload", f"session header: {exc}") from None
            except (TypeError, ValueError) as exc:
                raise HostError(400, "bad_payload", f"session header is not base64: {exc}") from None
            if decoder.header.shape != (1, 1, self.hidden_size):
                raise HostError(400, "bad_payload", f"a frame must carry one token's hidden state [1, 1, "
                                f"{self.hidden_size}], the header says {list(decoder.header.shape)}")
        return _Sequence(str(sid), cut, decoder, numbers["prefill"], numbers["step_index"], numbers["max_steps"])

    def frame(self, data: bytes) -> Step | None:
        seq = self.sequence
        if seq is None:
            raise HostError(400, "no_session", "a frame before any start: send the start (and session header) first")
        self._pending.append(data)
        need = seq.prefill if not seq.started else 1
        if len(self._pending) < need:
            return None
        frames, self._pending = self._pending, []
        hidden, ids = self._decode(frames)  # all or none: a bad frame leaves the decoder as it was
        index = seq.next_index
        step = Step(seq.sequence_id, start=not seq.started, end=seq.max_steps is not None and index >= seq.max_steps - 1,
                    cut=seq.cut, hidden=hidden, token_ids=ids, index=index)
        return step

    def accepted(self, step: Step) -> None:
        """The host answered ``step``: the next message begins the next step."""
        seq = self.sequence
        if seq is not None and step.sequence_id == seq.sequence_id:
            seq.started, seq.next_index = True, seq.next_index + 1
            if step.end:
                self.sequence = None

    def refused(self, step: Step) -> None:
        """The host refused ``step``: its frames are to be sent again, decoded again."""
        seq = self.sequence
        if seq is not None and seq.decoder is not None and step.sequence_id == seq.sequence_id:
            seq.decoder.seq = seq.rewind_to

    def _decode(self, frames: list[bytes]) -> tuple[np.ndarray | None, np.ndarray | None]:
        seq, h = self.sequence, self.hidden_size
        if seq.cut == 0:
            if any(len(f) % _IDS.itemsize or not f for f in frames):
                raise HostError(400, "bad_payload", "at cut 0 a message is token ids, int32 each")
            return None, np.concatenate([np.frombuffer(f, _IDS) for f in frames]).astype(np.int64)[None]
        if seq.decoder is None:
            if any(len(f) != 4 * h for f in frames):
                raise HostError(400, "bad_payload", f"a raw frame is {4 * h} bytes (float32 [{h}])")
            return np.stack([np.frombuffer(f, "<f4") for f in frames])[None].astype(np.float32), None
        seq.rewind_to = seq.decoder.seq
        try:
            tokens = seq.decoder.decode_all(frames)
        except PayloadError as exc:
            raise HostError(400, "bad_payload", f"frame {seq.decoder.seq}: {exc}") from None
        return np.concatenate(tokens, axis=1).astype(np.float32, copy=False), None


def tokens_message(tokens: list[int]) -> bytes:
    return np.asarray(tokens, _TOKENS).tobytes()


# --- the client's end --------------------------------------------------------------------


class StreamTransport:
    """The client's WebSocket to one server, one sequence at a time, blocking calls
    (aiohttp on a private event loop). Lost, timed out or refused: ServerError."""

    def __init__(self, host: str, port: int, timeout_s: float = 30.0, tls: bool = False,
                 access: ClientAccess | None = None):
        self.host, self.port, self.timeout_s, self.tls = host, port, timeout_s, tls
        self.access = access or ClientAccess()
        self.sequence_id: str | None = None  # the sequence this socket carries
        self._loop = asyncio.new_event_loop()
        self._session = None
        self._ws = None

    def _run(self, coroutine):
        import aiohttp

        try:
            return self._loop.run_until_complete(asyncio.wait_for(coroutine, self.timeout_s))
        except asyncio.TimeoutError:
            self._drop()
            raise ServerError(f"the server at {self.host}:{self.port} did not answer within {self.timeout_s:g} s")
        except aiohttp.WSServerHandshakeError as exc:  # refused before the stream opened (401, 404): its status
            self._drop()
            raise ServerError(f"server answered {exc.status}: {exc.message}", exc.status) from None
        except (aiohttp.ClientError, ConnectionError, OSError) as exc:  # unreachable, or the socket closed
            self._drop()
            raise ServerError(f"stream to {self.host}:{self.port} lost: {exc or type(exc).__name__}") from None

    async def _connect(self, model: str):
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession()
        scheme = "wss" if self.tls else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        tls = {"ssl": self.access.ssl_context()} if self.tls else {}
        self._ws = await self._session.ws_connect(
            f"{scheme}://{host}:{self.port}{stream_path(model)}", headers=self.access.headers(), compress=0,
            autoping=True, max_msg_size=0, **tls)

    def start(self, model: str, message: dict) -> None:
        """Start (or resume) ``message["sequence_id"]`` on this server."""
        async def send():
            if self._ws is None or self._ws.closed:
                await self._connect(model)
            await self._ws.send_str(json.dumps({"start": True, **message}))
        self._run(send())
        self.sequence_id = message["sequence_id"]

    def step(self, frames: list[bytes]) -> list[int]:
        """Send a step's frames; the server's token ids for it."""
        import aiohttp

        async def exchange():
            for frame in frames:
                await self._ws.send_bytes(frame)
            reply = await self._ws.receive()
            if reply.type == aiohttp.WSMsgType.BINARY:
                if len(reply.data) % _TOKENS.itemsize:
                    raise ServerError("the server's token message is not uint32 ids")
                return np.frombuffer(reply.data, _TOKENS).astype(int).tolist()
            if reply.type == aiohttp.WSMsgType.TEXT:
                error = json.loads(reply.data)
                status = error.get("status")
                if status is None or status >= 500:
                    self.sequence_id = None
                raise ServerError(f"server answered {status}: {error.get('error')}", status)
            raise ConnectionError(f"the stream closed ({reply.type.name})")
        if self._ws is None:
            raise ServerError("no sequence started on this stream")
        return self._run(exchange())

    def end(self) -> None:
        if self._ws is not None and not self._ws.closed and self.sequence_id is not None:
            self._run(self._ws.send_str(json.dumps({"end": True})))
        self.sequence_id = None

    def _drop(self) -> None:
        self.sequence_id = None
        if self._ws is not None:
            ws, self._ws = self._ws, None
            try:
                self._loop.run_until_complete(ws.close())
            except Exception:  # noqa: BLE001 - closing a socket that is already gone
                pass

    def close(self) -> None:
        self._drop()
        if self._session is not None:
            self._loop.run_until_complete(self._session.close())
            self._session = None
        if not self._loop.is_closed():
            self._loop.close()
