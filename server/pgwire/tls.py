"""TLS for the pg-wire listener: the server context and PostgreSQL's start-up rules around SSLRequest."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from server.config import ConfigError


def server_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """A server-side context from PEM files; None when TLS is not configured."""
    if cert is None or key is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # PostgreSQL's ssl_min_protocol_version default
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert} and key {key}: {exc}") from exc
    return ctx


def has_unread_data(rfile: Any, sock: socket.socket) -> bool:
    """Bytes already sent after an SSLRequest (before our answer): unencrypted, perhaps injected.

    Looks at the buffered reader (``rfile``) and the socket without blocking.
    """
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return bool(rfile.peek(1))
    except OSError:
        return False
    finally:
        sock.settimeout(timeout)
