"""The client side of PostgreSQL start-up: connect to the upstream server and log in.

Used by proxy mode. Hand-written on the primitives of `auth` (the server side),
so that after start-up the proxy owns a plain socket (TLS-wrapped when the
upstream offers it) and relays protocol messages on it unchanged. Supports
SCRAM-SHA-256 (without channel binding), md5, cleartext password and trust, and
``sslmode`` disable / prefer (the default, as in libpq) / require / verify-ca /
verify-full.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import socket
import ssl
import struct
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from server.pgwire import auth, codec

AUTH_OK, AUTH_CLEARTEXT = 0, 3
CONNECT_TIMEOUT = 10.0
MAX_STARTUP_MESSAGE = 1 << 20  # what we accept from the upstream before it is ready
SSLMODES = ("disable", "prefer", "require", "verify-ca", "verify-full")


class UpstreamError(Exception):
    """The upstream could not be reached or refused the login; `sqlstate` and `message` go to the client."""

    def __init__(self, sqlstate: str, message: str, detail: str | None = None, *, raw: bytes | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.raw = raw  # the upstream's own ErrorResponse, relayed as it is


@dataclass(frozen=True)
class Target:
    """Where the upstream is and how to log in, from a postgresql:// URL."""

    host: str
    port: int
    database: str
    user: str
    password: str | None
    sslmode: str = "prefer"
    sslrootcert: str | None = None

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("expected a postgresql://user:password@host:port/database URL")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        host = query.pop("host", None) or unquote(parts.hostname or "") or "localhost"
        try:
            port = int(query.pop("port", None) or parts.port or 5432)
        except ValueError:
            raise ValueError("the upstream URL has a bad port") from None
        sslmode = query.pop("sslmode", "prefer")
        if sslmode not in SSLMODES:
            raise ValueError(f"sslmode must be one of {', '.join(SSLMODES)}")
        sslrootcert = query.pop("sslrootcert", None)
        if query:
            raise ValueError(f"unsupported upstream URL parameter(s): {', '.join(sorted(query))}")
        user = unquote(parts.username or "")
        password = unquote(parts.password) if parts.password is not None else None
        return cls(host, port, unquote(parts.path.lstrip("/")), user, password, sslmode, sslrootcert)

    def describe(self) -> str:
        """The URL without its password, for logs and the start-up line."""
        return f"postgresql://{self.user + '@' if self.user else ''}{self.host}:{self.port}/{self.database}"

    def open_socket(self) -> socket.socket:
        if self.host.startswith("/"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(f"{self.host}/.s.PGSQL.{self.port}")
        else:
            sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        return sock


@dataclass
class Upstream:
    """A logged-in connection to the upstream: its socket and what it said before ReadyForQuery."""

    sock: socket.socket
    pid: int = 0
    secret: int = 0
    parameters: list[bytes] = field(default_factory=list)  # ParameterStatus and NoticeResponse messages, raw
    status: bytes = b"I"


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise UpstreamError("08006", "the upstream server closed the connection during start-up")
        data += chunk
    return bytes(data)


def read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    head = _recv_exactly(sock, 5)
    (length,) = struct.unpack("!i", head[1:])
    if not 4 <= length <= MAX_STARTUP_MESSAGE:
        raise UpstreamError("08P01", f"the upstream server sent a message of invalid length {length}")
    return head[:1], _recv_exactly(sock, length - 4)


def _tls(sock: socket.socket, target: Target) -> socket.socket:
    sock.sendall(struct.pack("!ii", 8, codec.SSL_REQUEST))
    answer = _recv_exactly(sock, 1)
    if answer != b"S":
        if target.sslmode in ("require", "verify-ca", "verify-full"):
            raise UpstreamError("08001", f"the upstream server does not support SSL, but sslmode={target.sslmode}")
        return sock
    if target.sslmode in ("prefer", "require"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=target.sslrootcert)
        context.check_hostname = target.sslmode == "verify-full"
    try:
        return context.wrap_socket(sock, server_hostname=None if target.host.startswith("/") else target.host)
    except (ssl.SSLError, OSError) as exc:
        raise UpstreamError("08001", f"TLS to the upstream server failed: {exc}") from exc


def _error_fields(body: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in body.split(b"\x00"):
        if part:
            out[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return out


def startup_message(params: dict[str, str]) -> bytes:
    body = struct.pack("!i", codec.PROTOCOL_3)
    for key, value in params.items():
        body += key.encode() + b"\x00" + value.encode() + b"\x00"
    body += b"\x00"
    return struct.pack("!i", len(body) + 4) + body


def connect(target: Target, params: dict[str, str], *, user: str | None = None, password: str | None = None) -> Upstream:
    """Connect and log in as `user` (default: the URL's), sending the client's other start-up parameters.

    Returns once the upstream is ready for queries; UpstreamError otherwise.
    """
    user = user if user is not None else target.user
    password = password if password is not None else target.password
    try:
        sock = target.open_socket()
    except OSError as exc:
        raise UpstreamError("08006", f"could not connect to the upstream server {target.describe()}: {exc.strerror or exc}") from exc
    try:
        if target.sslmode != "disable" and not target.host.startswith("/"):
            sock = _tls(sock, target)
        startup = {k: v for k, v in params.items() if k not in ("user", "database", "replication")}
        startup = {"user": user, "database": target.database or params.get("database", "") or user, **startup}
        sock.sendall(startup_message(startup))
        upstream = Upstream(sock)
        _login(upstream, user, password)
        sock.settimeout(None)
        return upstream
    except OSError as exc:
        sock.close()
        raise UpstreamError("08006", f"lost the upstream server during start-up: {exc}") from exc
    except BaseException:
        sock.close()
        raise


def _login(up: Upstream, user: str, password: str | None) -> None:
    scram: ScramClient | None = None
    while True:
        kind, body = read_message(up.sock)
        if kind == b"E":
            f = _error_fields(body)
            raise UpstreamError(f.get("C", "08006"), f.get("M", "upstream error"), f.get("D"), raw=_message(kind, body))
        if kind == b"R":
            (code,) = struct.unpack_from("!i", body)
            if code == AUTH_OK:
                continue
            if password is None:
                raise UpstreamError(
                    "28P01", f'the upstream server asks for a password for user "{user}" and none is configured (put it in the upstream URL)'
                )
            if code == AUTH_CLEARTEXT:
                up.sock.sendall(_message(b"p", password.encode() + b"\x00"))
            elif code == auth.AUTH_MD5:
                inner = hashlib.md5((password + user).encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                up.sock.sendall(_message(b"p", b"md5" + outer.encode() + b"\x00"))
            elif code == auth.AUTH_SASL:
                mechanisms = body[4:].split(b"\x00")
                if auth.MECHANISM.encode() not in mechanisms:
                    raise UpstreamError("08P01", "the upstream server offers no SASL mechanism meansql supports")
                scram = ScramClient(password)
                first = scram.first()
                up.sock.sendall(_message(b"p", auth.MECHANISM.encode() + b"\x00" + struct.pack("!i", len(first)) + first))
            elif code == auth.AUTH_SASL_CONTINUE and scram is not None:
                up.sock.sendall(_message(b"p", scram.final(body[4:])))
            elif code == auth.AUTH_SASL_FINAL and scram is not None:
                scram.verify(body[4:])
            else:
                raise UpstreamError("08P01", f"the upstream server asks for an authentication method meansql does not support (code {code})")
        elif kind == b"K":
            up.pid, up.secret = struct.unpack("!II", body[:8])
        elif kind in (b"S", b"N"):
            up.parameters.append(_message(kind, body))
        elif kind == b"Z":
            up.status = body[:1]
            return
        else:
            raise UpstreamError("08P01", f"unexpected message type {kind!r} from the upstream server during start-up")


class ScramClient:
    """SCRAM-SHA-256 client (RFC 5802/7677), no channel binding: PostgreSQL's libpq does the same as `n,,`."""

    def __init__(self, password: str, nonce: str | None = None) -> None:
        self.password = password
        self.nonce = nonce or base64.b64encode(secrets.token_bytes(auth.NONCE_BYTES)).decode()
        self.bare = f"n=,r={self.nonce}"
        self._server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self.bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        fields = dict(part.split("=", 1) for part in text.split(","))
        if not fields.get("r", "").startswith(self.nonce):
            raise UpstreamError("08P01", "the upstream server sent an invalid SCRAM nonce")
        salt = base64.b64decode(fields["s"])
        iterations = int(fields["i"])
        salted = hashlib.pbkdf2_hmac("sha256", auth.saslprep(self.password).encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={fields['r']}"
        message = f"{self.bare},{text},{without_proof}".encode()
        signature = hmac.new(stored, message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self._server_signature = hmac.new(server_key, message, hashlib.sha256).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        fields = dict(part.split("=", 1) for part in server_final.decode().split(","))
        if not hmac.compare_digest(base64.b64decode(fields.get("v", "")), self._server_signature):
            raise UpstreamError("08P01", "the upstream server's SCRAM signature does not match: it does not know the password")


def cancel(target: Target, pid: int, secret: int) -> None:
    """Send a CancelRequest for the upstream backend (pid, secret); PostgreSQL answers by closing."""
    try:
        with target.open_socket() as sock:
            sock.sendall(struct.pack("!iiII", 16, codec.CANCEL_REQUEST, pid, secret))
            sock.recv(1)
    except OSError:
        pass  # as libpq's PQcancel: a cancel that cannot be delivered is not an error for the session
