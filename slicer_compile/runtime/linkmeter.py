"""Bytes counted at the socket: a loopback TCP proxy between a client and a server that
forwards everything and counts what crosses it, per direction — framing, HTTP or
WebSocket headers and all, which no payload count sees.

    with CountingProxy("127.0.0.1:8700") as proxy:
        client = EdgeLLM(artifact, proxy.url)
        before = proxy.counts()
        ...                                   # one step
        up, down = proxy.counts() - before    # bytes client→server, server→client
"""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass

from slicer_compile.runtime.transport import parse_server_address

_CHUNK = 1 << 16


@dataclass(frozen=True)
class Counts:
    up: int  # client to server
    down: int  # server to client

    def __sub__(self, other: "Counts") -> "Counts":
        return Counts(self.up - other.up, self.down - other.down)


class CountingProxy:
    """Forwards connections on ``url`` to ``target`` ("host:port") and counts bytes."""

    def __init__(self, target: str, host: str = "127.0.0.1"):
        self._target = parse_server_address(target)
        self._up = self._down = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, host, 0))
        self._address = self._server.sockets[0].getsockname()[:2]
        self._thread = threading.Thread(target=self._loop.run_forever, name="counting-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._address
        return f"{host}:{port}"

    def counts(self) -> Counts:
        with self._lock:
            return Counts(self._up, self._down)

    async def _serve(self, client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.close()
            return
        for writer in (client_writer, server_writer):  # forward at once, as the endpoints would send
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(self._pump(client_reader, server_writer, up=True),
                             self._pump(server_reader, client_writer, up=False))

    async def _pump(self, reader, writer, up: bool) -> None:
        try:
            while data := await reader.read(_CHUNK):
                with self._lock:
                    if up:
                        self._up += len(data)
                    else:
                        self._down += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return

        async def shut():
            self._server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()  # the pumps of connections still open
        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> "CountingProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
