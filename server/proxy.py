"""Proxy mode: each client session is relayed to a session on the upstream PostgreSQL.

After the client has logged in to meansql, meansql logs in to the upstream
(`server.pgwire.upstream`), sends the client the upstream's ParameterStatus
messages with its own BackendKeyData, and from then on relays messages
unchanged in both directions: frontend messages are read and framed by the
connection's checks (type byte, length limit) on the connection thread and
written to the upstream; a pump thread writes everything the upstream sends to
the client as it arrives (so NOTIFYs and pipelined responses flow).

A statement with a semantic operator is not run on the upstream. Its Query or
Parse is replaced by a statement that fails at once on the upstream (a call of
a function named with a per-process random marker), and the pump replaces that
error with meansql's own. The upstream thus keeps the order of responses,
skips to Sync after the error and sets the transaction status, exactly as it
does for any failing statement.
"""

from __future__ import annotations

import logging
import re
import secrets
import socket
import struct
import threading
from collections.abc import Collection
from typing import TYPE_CHECKING

from sqlglot import exp

from semantic_ops import dialect, functions
from semantic_ops.operators import Registry
from server.pgwire import codec, upstream

if TYPE_CHECKING:
    from server.pgwire.connection import MeansqlHandler

log = logging.getLogger(__name__)

PUMP_CHUNK = 256 * 1024
# String literals ('...' with '' inside, $tag$...$tag$) and comments. A backslash escape in E'...' can make it
# take the wrong end of a literal: then a statement is at worst relayed to PostgreSQL, which rejects the word.
_LITERALS = re.compile(r"'(?:[^']|'')*'|\$([A-Za-z_][A-Za-z_0-9]*)?\$.*?\$\1\$|--[^\n]*|/\*.*?\*/", re.S)
REFUSED = "semantic operators in proxy mode are not available yet"
REFUSED_HINT = "Run this statement on a meansql server without --upstream; plain SQL is relayed to PostgreSQL."


class Proxy:
    """Relays client sessions to the upstream PostgreSQL; one instance per server."""

    def __init__(self, target: upstream.Target, registry: Registry, *, passthrough: bool = False) -> None:
        self.target = target
        self.passthrough = passthrough
        self.infix: dict[str, str] = dict(registry.infix)
        self.functions: Collection[str] = [*registry.by_function.keys(), functions.VECTOR_SEARCH]
        self._words = [w.lower() for w in [*self.infix, *self.functions]]
        self.marker = f"meansql_semantic_refused_{secrets.token_hex(8)}"
        self._poison = f"SELECT {self.marker}()".encode()
        self._sessions: dict[int, tuple[int, int, int]] = {}  # our pid -> (our secret, upstream pid, secret)
        self._lock = threading.Lock()

    # -- semantic statements ------------------------------------------------------------
    def is_semantic(self, sql: str) -> bool:
        """Whether sql calls a semantic operator: the cheap looks session.py takes, then the parse tree.

        The tree decides because a column named like an operator is plain SQL; text the dialect cannot parse
        goes to PostgreSQL, which reports its own error.
        """
        # Words inside string literals and comments do not count; removing them first (in C, by one regular
        # expression) spares the tokenizer a bulk INSERT whose text happens to contain "means".
        lower = _LITERALS.sub(" ", sql).lower()
        if not any(w in lower for w in self._words):
            return False
        if not dialect.has_semantic_words(sql, self.infix, self.functions):
            return False
        try:
            trees = dialect.parse(sql, self.infix)
        except Exception as exc:  # any parse failure: PostgreSQL has the last word on its own syntax
            log.debug("proxy: relaying text the semantic dialect cannot parse: %s", exc)
            return False
        names = {f.lower() for f in self.functions}
        for tree in trees:
            for node in tree.walk():
                if isinstance(node, dialect.SemanticCall):
                    return True
                if isinstance(node, exp.Func):
                    name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
                    if name.lower() in names:
                        return True
        return False

    def rewrite(self, kind: int, body: bytes) -> bytes:
        """The message body to send upstream: unchanged, or the failing stand-in of a semantic statement."""
        if kind == ord("Q"):
            if self.is_semantic(body.rstrip(b"\x00").decode("utf-8", "replace")):
                return self._poison + b"\x00"
        elif kind == ord("P"):
            name_end = body.find(b"\x00")
            text_end = body.find(b"\x00", name_end + 1)
            if name_end >= 0 and text_end > name_end:
                if self.is_semantic(body[name_end + 1 : text_end].decode("utf-8", "replace")):
                    return body[: name_end + 1] + self._poison + b"\x00" + b"\x00\x00"
        return body

    # -- cancel ---------------------------------------------------------------------
    def cancel(self, pid: int, secret: int) -> None:
        with self._lock:
            entry = self._sessions.get(pid)
        if entry is not None and secrets.compare_digest(entry[0].to_bytes(4, "big"), secret.to_bytes(4, "big")):
            upstream.cancel(self.target, entry[1], entry[2])

    def _register(self, up: upstream.Upstream) -> tuple[int, int]:
        with self._lock:
            pid = secrets.randbelow(2**31 - 2) + 1
            while pid in self._sessions:
                pid = secrets.randbelow(2**31 - 2) + 1
            secret = secrets.randbits(32)
            self._sessions[pid] = (secret, up.pid, up.secret)
        return pid, secret

    # -- one session ------------------------------------------------------------------
    def serve(self, handler: MeansqlHandler, params: dict[str, str]) -> None:
        """Log the client in, then the upstream, then relay until either side closes."""
        user = params.get("user", "")
        if self.passthrough:
            password = self._ask_password(handler)
            login = {"user": user, "password": password}
        else:
            handler._authenticate(user)
            login = {}
        try:
            up = upstream.connect(self.target, params, **login)
        except upstream.UpstreamError as exc:
            log.info("upstream login failed: %s %s", exc.sqlstate, exc.message)
            if self.passthrough and exc.raw:  # the client's own login: PostgreSQL's answer as it is
                handler._send(exc.raw, flush=True)
                return
            # meansql's login: say so, or the client would take the upstream's 28P01 for its own password.
            message = exc.message if exc.raw is None else f"the upstream server refused meansql's login: {exc.message}"
            handler._send(codec.error_response("FATAL", exc.sqlstate, message, detail=exc.detail), flush=True)
            return
        handler.server.login_clock.done(handler)
        pid, secret = self._register(up)
        try:
            out = bytearray(codec.authentication_ok())
            for message in up.parameters:
                out += message
            out += codec.backend_key_data(pid, secret) + codec.ready_for_query(up.status)
            handler._send(bytes(out), flush=True)
            pump = threading.Thread(target=self._pump, args=(handler, up), name="meansql-proxy-pump", daemon=True)
            pump.start()
            terminated = False
            try:
                terminated = self._relay(handler, up)
            finally:
                if not terminated:
                    # The client went away without Terminate, perhaps mid-query: PostgreSQL would notice only
                    # when it next writes, so stop what runs there now.
                    upstream.cancel(self.target, up.pid, up.secret)
                try:
                    up.sock.shutdown(socket.SHUT_RDWR)  # ends the pump's read
                except OSError:
                    pass  # the upstream is gone already
                pump.join(timeout=10)
        finally:
            with self._lock:
                self._sessions.pop(pid, None)
            up.sock.close()

    def _ask_password(self, handler: MeansqlHandler) -> str:
        """Passthrough: the client's password in clear (AuthenticationCleartextPassword), for the upstream."""
        handler._send(b"R" + struct.pack("!ii", 8, upstream.AUTH_CLEARTEXT), flush=True)
        return handler._auth_response("password").rstrip(b"\x00").decode("utf-8")

    def _relay(self, handler: MeansqlHandler, up: upstream.Upstream) -> bool:
        """Client → upstream, on the connection thread, one framed message at a time; True after Terminate."""
        while True:
            message = handler._next_message()
            if message is None:
                return False
            kind, body = message
            body = self.rewrite(kind, body)
            try:
                up.sock.sendall(bytes((kind,)) + struct.pack("!i", len(body) + 4) + body)
            except OSError:
                return True  # the upstream is gone: nothing left to cancel; the pump tells the client
            if kind == ord("X"):
                return True

    def _pump(self, handler: MeansqlHandler, up: upstream.Upstream) -> None:
        """Upstream → client: whole messages only, so our own messages never split one; the refusal swapped in."""
        marker = self.marker.encode()
        refused = codec.error_response("ERROR", "0A000", REFUSED, hint=REFUSED_HINT)
        buf = bytearray()
        length_at = struct.Struct("!i").unpack_from
        try:
            while True:
                try:
                    chunk = up.sock.recv(PUMP_CHUNK)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                buf += chunk
                out = bytearray()
                pos = start = 0
                n = len(buf)
                limit = n - 5
                while pos <= limit:  # the hot loop of a streamed result: one pass per message
                    end = pos + 1 + length_at(buf, pos + 1)[0]
                    if end > n:
                        break
                    if buf[pos] == 0x45 and buf.find(marker, pos, end) >= 0:  # 'E': our stand-in failed
                        out += buf[start:pos]
                        out += refused
                        start = end
                    pos = end
                if pos:
                    out += buf[start:pos]
                    del buf[:pos]
                    handler._send(bytes(out), flush=True)
        except Exception as exc:  # the client is gone: end the upstream session too
            log.debug("proxy pump ended: %s", exc)
        finally:
            try:
                socket.socket.shutdown(handler.request, socket.SHUT_RDWR)  # wakes the connection thread's read
            except OSError:
                pass  # already closed
