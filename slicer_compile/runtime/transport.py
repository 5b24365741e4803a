"""How an edge client reaches a server: KServe v2 over HTTP (binary tensor
extension), or over gRPC. Both carry an :class:`InferMessage` to a model (a split id)
and bring the reply back; :func:`open_transport` picks one from the address
(``host:port`` or ``http://…`` for HTTP, ``https://…`` for HTTP over TLS,
``grpc://host:port`` for gRPC, ``grpcs://host:port`` for gRPC over TLS). A
:class:`ClientAccess` carries the bearer token and the CA that signed the server's
certificate, where the server asks for them (runtime/access.py).
"""

from __future__ import annotations

import dataclasses
import http.client
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from slicer_compile.errors import ConfigError, InputError, SlicerCompileError
from slicer_compile.runtime.protocol import HEADER_LENGTH, InferMessage, datatype_of, decode_message, encode_message

#: The port ``slicer-compile serve`` listens on by default (and what "host" alone means).
DEFAULT_PORT = 8700


@dataclass(frozen=True)
class ClientAccess:
    """What a client presents: a bearer token, and for TLS the CA file that signed the
    server's certificate (None: the system's trusted CAs)."""

    token: str | None = None
    ca_file: Path | None = None

    def ssl_context(self) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (ssl.SSLError, OSError) as exc:
            raise InputError(f"cannot load the CA file {self.ca_file}: {exc}") from None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

#: gRPC codes as the HTTP statuses they stand for (unknown codes: None, the server failed)
_GRPC_STATUS = {"StatusCode.INVALID_ARGUMENT": 400, "StatusCode.NOT_FOUND": 404, "StatusCode.UNAUTHENTICATED": 401,
                "StatusCode.PERMISSION_DENIED": 403, "StatusCode.FAILED_PRECONDITION": 409,
                "StatusCode.RESOURCE_EXHAUSTED": 503, "StatusCode.UNAVAILABLE": 503, "StatusCode.INTERNAL": 500}


class ServerError(SlicerCompileError, RuntimeError):
    """The server answered with an error (``status``: its HTTP status), or could not be
    reached or did not answer in time (``status`` None)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def server_failed(self) -> bool:
        """Whether another server may do better: unreachable, timed out, or an error of
        the server's own (5xx), not a refusal of the request (4xx)."""
        return self.status is None or self.status >= 500


def server_addresses(servers: str | Sequence[str]) -> list[str]:
    """The servers a client may use, in order: "A,B,…", a list, or "@FILE" (a discovery
    file: one address per line, # comments), read now."""
    if isinstance(servers, str) and servers.strip().startswith("@"):
        path = Path(servers.strip()[1:])
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read the server list {path}: {exc.strerror or exc}") from None
        servers = [line.split("#", 1)[0] for line in lines]
    elif isinstance(servers, str):
        servers = servers.split(",")
    addresses = [a.strip() for a in servers if a.strip()]
    if not addresses:
        raise ConfigError("give at least one server address")
    return addresses


def parse_server_address(address: str) -> tuple[str, int]:
    """``"host:port"``, ``"host"`` (port 8700), ``"http://host:port/"`` or ``"[::1]:8700"`` -> (host, port).

    Raises:
        InputError: an empty host or a port that is not an integer in 1..65535.
    """
    text = address.strip()
    for scheme in ("http://", "https://", "grpc://", "grpcs://"):
        text = text.removeprefix(scheme)
    text = text.rstrip("/")
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") > 1:  # a bare IPv6 address, no port
        host, port_text = text, ""
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise InputError(f"no host in server address {address!r} (give host:port, e.g. 127.0.0.1:{DEFAULT_PORT})")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InputError(f"port in server address {address!r} must be an integer in 1..65535")
    return host, int(port_text)



class HttpTransport:
    """KServe v2 over HTTP/1.1 (over TLS with ``tls``), one kept-alive connection."""

    def __init__(self, host: str, port: int, timeout_s: float = 30.0, tls: bool = False,
                 access: ClientAccess | None = None):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.access = access or ClientAccess()
        self._ssl = self.access.ssl_context() if tls else None
        self._connection: http.client.HTTPConnection | None = None

    def infer(self, model: str, message: InferMessage) -> tuple[InferMessage, int]:
        """The reply, and the request's size in bytes on the wire (body)."""
        # Binary outputs (the HTTP binary extension): the reply's tensors as raw bytes, not JSON lists.
        message = dataclasses.replace(message, parameters={**message.parameters, "binary_data_output": True})
        body, headers = encode_message(message, request=True)
        return self._post(f"/v2/models/{model}/infer", body, {**headers, **self.access.headers()}), len(body)

    def _connect(self) -> http.client.HTTPConnection:
        if self._ssl is not None:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s, context=self._ssl)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> InferMessage:
        # A kept-alive connection the server has closed (idle timeout) fails on reuse:
        # that costs a reconnect, not an attempt. A fresh connection is tried twice.
        fresh_attempts = 0
        while True:
            reused = self._connection is not None
            try:
                if self._connection is None:
                    fresh_attempts += 1
                    self._connection = self._connect()
                    self._connection.connect()
                    # Headers and body go out in two writes: without this, Nagle's
                    # algorithm and delayed ACKs add ~40 ms to every request.
                    self._connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._connection.request("POST", path, body=body, headers=headers)
                response = self._connection.getresponse()
                data = response.read()
                break
            except ssl.SSLError as exc:  # a certificate problem does not go away on a retry
                self.close()
                raise ServerError(f"TLS with {self.host}:{self.port} failed: {exc.reason or exc}") from None
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                self.close()
                if not reused and fresh_attempts >= 2:
                    raise ServerError(f"cannot reach the server at {self.host}:{self.port}: {exc}") from None
        if response.status != 200:
            raise ServerError(f"server answered {response.status}: {data[:300].decode(errors='replace')}",
                              response.status)
        length = response.getheader(HEADER_LENGTH)
        return decode_message(data, int(length) if length else None, request=False)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class GrpcTransport:
    """KServe v2 over gRPC, through tritonclient's client (the triton extra)."""

    def __init__(self, host: str, port: int, timeout_s: float = 30.0, tls: bool = False,
                 access: ClientAccess | None = None):
        try:
            import tritonclient.grpc as grpcclient
        except ImportError:
            raise SlicerCompileError("a grpc:// server needs tritonclient's gRPC client: pip install '.[triton]' in "
                                     "the slicer-compile source tree") from None
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.access = access or ClientAccess()
        self._g = grpcclient
        ca = str(self.access.ca_file) if tls and self.access.ca_file else None
        self._client = grpcclient.InferenceServerClient(f"{host}:{port}", ssl=tls, root_certificates=ca)
        self._headers = {key.lower(): value for key, value in self.access.headers().items()}

    def infer(self, model: str, message: InferMessage) -> tuple[InferMessage, int]:
        from tritonclient.utils import InferenceServerException

        inputs, size = [], 0
        for name, array in message.tensors.items():
            array = np.ascontiguousarray(array)
            entry = self._g.InferInput(name, list(array.shape), datatype_of(array))
            entry.set_data_from_numpy(array)
            inputs.append(entry)
            size += array.nbytes
        try:
            result = self._client.infer(model, inputs, parameters=dict(message.parameters),
                                        client_timeout=self.timeout_s, headers=self._headers or None)
        except InferenceServerException as exc:
            raise ServerError(f"server answered: {exc.message() or exc}", _GRPC_STATUS.get(exc.status())) from None
        response = result.get_response()
        tensors = {out.name: result.as_numpy(out.name) for out in response.outputs}
        parameters = {key: getattr(value, value.WhichOneof("parameter_choice"))
                      for key, value in response.parameters.items() if value.WhichOneof("parameter_choice")}
        return InferMessage(tensors, parameters, response.id, response.model_name), size

    def close(self) -> None:
        self._client.close()


class Failover:
    """Transports to several servers, used in turn: a call goes to the server in use, and
    on to the next while each is lost (:attr:`ServerError.server_failed`); a refusal is
    raised as it came. ``failovers`` counts the moves."""

    def __init__(self, transports: list):
        self.transports, self.current, self.failovers = transports, 0, 0

    @property
    def transport(self):
        return self.transports[self.current]

    def call(self, send, switched=None):
        """``(send(transport), moved)``: ``switched()`` runs after each move, before the
        next server is tried (what a sequence needs to be rebuilt there)."""
        tried = 0
        while True:
            try:
                return send(self.transport), tried > 0
            except ServerError as exc:
                tried += 1
                if not exc.server_failed or tried >= len(self.transports):
                    raise
                self.transport.close()
                self.current = (self.current + 1) % len(self.transports)
                self.failovers += 1
                if switched is not None:
                    switched()

    def close(self) -> None:
        for transport in self.transports:
            transport.close()


def open_transport(address: str, timeout_s: float = 30.0, access: ClientAccess | None = None):
    """The transport an address names: ``grpc://`` / ``grpcs://`` for gRPC (over TLS),
    ``https://`` for HTTP over TLS, else HTTP."""
    text = address.strip()
    host, port = parse_server_address(text)
    if text.startswith(("grpc://", "grpcs://")):
        return GrpcTransport(host, port, timeout_s, tls=text.startswith("grpcs://"), access=access)
    return HttpTransport(host, port, timeout_s, tls=text.startswith("https://"), access=access)
