"""Who may talk to a server: TLS for the channel, a bearer token for the caller.

The default bind is loopback, where neither is needed. A server that listens beyond
it takes ``--tls-cert/--tls-key`` (the channel is encrypted and the server proven)
and a token that every request must carry as ``Authorization: Bearer <token>``
(gRPC: the ``authorization`` metadata). The token comes from a file or the
environment, never the command line, where ``ps`` would show it.

Health endpoints (``/v2/health/live``, ``/v2/health/ready``) answer without the
token so that an orchestrator's probes work; nothing else does.
"""

from __future__ import annotations

import hmac
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from slicer_compile.errors import InputError

#: The environment variable a token may come from (server and client alike).
TOKEN_ENV = "SLICER_SERVER_TOKEN"


@dataclass(frozen=True)
class Access:
    """What a server demands of its callers (and a client presents).

    Args:
        tls_cert / tls_key: PEM files; both or neither.
        token: the bearer token, or None for none.
    """

    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InputError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise InputError(f"no such file: {path}")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def server_ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
        except (ssl.SSLError, OSError) as exc:
            raise InputError(f"cannot load the TLS certificate {self.tls_cert} with key {self.tls_key}: {exc}") from None
        return context

    def authorized(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries the token (always, when none is set)."""
        if self.token is None:
            return True
        scheme, _, presented = (authorization or "").partition(" ")
        # compare_digest: the time taken says nothing about how much of the token matched.
        return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), self.token.encode())


def read_token(token_file: Path | None, environ: dict | None = None) -> str | None:
    """The token from ``token_file`` (its first line), else from $SLICER_SERVER_TOKEN, else None.

    Raises:
        InputError: the file is missing or empty.
    """
    if token_file is not None:
        try:
            text = Path(token_file).read_text().strip()
        except OSError as exc:
            raise InputError(f"cannot read the token file {token_file}: {exc.strerror or exc}") from None
        if not text:
            raise InputError(f"the token file {token_file} is empty")
        return text.splitlines()[0].strip()
    value = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    return value or None
