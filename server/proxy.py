"""Proxy mode: each client session is relayed to a session on the upstream PostgreSQL.

After the client has logged in to meansql, meansql logs in to the upstream
(`server.pgwire.upstream`), sends the client the upstream's ParameterStatus
messages with its own BackendKeyData, and from then on relays messages
unchanged in both directions: frontend messages are read and framed by the
connection's checks (type byte, length limit) on the connection thread and
written to the upstream; a pump thread writes everything the upstream sends to
the client as it arrives (so NOTIFYs and pipelined responses flow).

A simple Query with a semantic operator runs in meansql once the upstream has
answered everything sent before it (the relay counts the ReadyForQuery it owes)
and is idle outside a transaction: on a meansql Session whose DuckDB cursor
reads the upstream's tables through postgres_scanner (`server.upstream_scan`).
Its rows, NOTICEs and ReadyForQuery go to the client in place of the upstream's.

A semantic statement meansql does not run (inside a transaction block, in the
extended protocol, among other statements in one Query) is replaced by a
statement that fails at once on the upstream (a call of a function named with
a per-process random marker and the reason), and the pump replaces that error
with meansql's own. The upstream thus keeps the order of responses, skips to
Sync after the error and sets the transaction status, exactly as it does for
any failing statement.
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
from server import upstream_scan
from server.pgwire import codec, upstream
from server.pgwire.connection import ConnState
from server.session import Session
from server.statements import Kind, split
from training.errors import MeansqlError

if TYPE_CHECKING:
    from server.pgwire.connection import MeansqlHandler

log = logging.getLogger(__name__)

PUMP_CHUNK = 256 * 1024
# String literals ('...' with '' inside, $tag$...$tag$) and comments. A backslash escape in E'...' can make it
# take the wrong end of a literal: then a statement is at worst relayed to PostgreSQL, which rejects the word.
_LITERALS = re.compile(r"'(?:[^']|'')*'|\$([A-Za-z_][A-Za-z_0-9]*)?\$.*?\$\1\$|--[^\n]*|/\*.*?\*/", re.S)
_ELSEWHERE = "Run this statement on a meansql server without --upstream; plain SQL is relayed to PostgreSQL."
# Why a semantic statement is refused: (SQLSTATE, message, detail, hint). 25001 is PostgreSQL's own code for a
# statement that "cannot run inside a transaction block" (VACUUM, CREATE DATABASE).
REASONS: dict[str, tuple[str, str, str | None, str | None]] = {
    "extended": (
        "0A000",
        "semantic operators in proxy mode are not available in the extended query protocol yet",
        None,
        "Send the statement as a simple query (psql, or psycopg's cursor.execute without parameters "
        "and prepare=False); plain SQL is relayed to PostgreSQL.",
    ),
    "transaction": (
        "25001",
        "a semantic statement cannot run inside a transaction block in proxy mode",
        "meansql reads the upstream tables over its own connections, which would not see this transaction's uncommitted rows nor its snapshot.",
        "Run it after COMMIT or ROLLBACK, outside BEGIN ... COMMIT.",
    ),
    "multiple": (
        "0A000",
        "a semantic statement must be sent alone in proxy mode",
        None,
        "Send it in a query string of its own, not with other statements.",
    ),
    "query": (
        "0A000",
        "only a query (SELECT, WITH, VALUES) may use a semantic operator in proxy mode",
        None,
        "Read the judged rows with SELECT and write them with a plain statement.",
    ),
    "off": ("0A000", "semantic operators in proxy mode are not available: {}", None, _ELSEWHERE),
}


class Proxy:
    """Relays client sessions to the upstream PostgreSQL; one instance per server."""

    def __init__(self, target: upstream.Target, registry: Registry, *, passthrough: bool = False, semantic_off: str | None = None) -> None:
        self.target = target
        self.passthrough = passthrough
        self.semantic_off = semantic_off  # why semantic statements cannot run here (None: they can)
        self.infix: dict[str, str] = dict(registry.infix)
        self.functions: Collection[str] = [*registry.by_function.keys(), functions.VECTOR_SEARCH]
        self._words = [w.lower() for w in [*self.infix, *self.functions]]
        self.marker = f"meansql_semantic_refused_{secrets.token_hex(8)}"
        self._refusals: dict[bytes, bytes] = {}
        for reason, (code, message, detail, hint) in REASONS.items():
            text = message.format(semantic_off) if reason == "off" else message
            self._refusals[reason.encode()] = codec.error_response("ERROR", code, text, hint=hint, detail=detail)
        self._sessions: dict[int, tuple[int, int, int]] = {}  # our pid -> (our secret, upstream pid, secret)
        self._local: dict[int, Session] = {}  # our pid -> the meansql session running a semantic statement
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

    def stand_in(self, reason: str) -> bytes:
        """A statement that fails at once on the upstream; the pump swaps its error for the refusal `reason`."""
        return f"SELECT {self.marker}_{reason}()".encode()

    def rewrite(self, kind: int, body: bytes) -> bytes:
        """A Parse body to send upstream: unchanged, or the failing stand-in of a semantic statement."""
        if kind == ord("P"):
            name_end = body.find(b"\x00")
            text_end = body.find(b"\x00", name_end + 1)
            if name_end >= 0 and text_end > name_end:
                if self.is_semantic(body[name_end + 1 : text_end].decode("utf-8", "replace")):
                    reason = "off" if self.semantic_off else "extended"
                    return body[: name_end + 1] + self.stand_in(reason) + b"\x00" + b"\x00\x00"
        return body

    def refusal(self, sql: str, link: _Link) -> str | None:
        """Why a semantic simple query cannot run in meansql now (None: it can); waits for the upstream first."""
        if self.semantic_off:
            return "off"
        if not link.wait_idle():
            return "transaction"  # the upstream is gone; the stand-in's send fails and ends the session
        if link.status != b"I" or link.unsynced:
            return "transaction"
        stmts = split(sql)
        if len(stmts) != 1:
            return "multiple"
        if stmts[0].kind is not Kind.ROWS:
            return "query"
        return None

    # -- cancel ---------------------------------------------------------------------
    def cancel(self, pid: int, secret: int) -> None:
        with self._lock:
            entry = self._sessions.get(pid)
            local = self._local.get(pid)
        if entry is not None and secrets.compare_digest(entry[0].to_bytes(4, "big"), secret.to_bytes(4, "big")):
            if local is not None:
                local.cancel()
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
        link = _Link(handler, up, pid, secret, params)
        try:
            out = bytearray(codec.authentication_ok())
            for parameter in up.parameters:
                out += parameter
            out += codec.backend_key_data(pid, secret) + codec.ready_for_query(up.status)
            handler._send(bytes(out), flush=True)
            pump = threading.Thread(target=self._pump, args=(link,), name="meansql-proxy-pump", daemon=True)
            pump.start()
            terminated = False
            try:
                terminated = self._relay(link)
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
            if link.state is not None:
                link.state.session.close()
            up.sock.close()

    def _ask_password(self, handler: MeansqlHandler) -> str:
        """Passthrough: the client's password in clear (AuthenticationCleartextPassword), for the upstream."""
        handler._send(b"R" + struct.pack("!ii", 8, upstream.AUTH_CLEARTEXT), flush=True)
        return handler._auth_response("password").rstrip(b"\x00").decode("utf-8")

    def _relay(self, link: _Link) -> bool:
        """Client → upstream, on the connection thread, one framed message at a time; True after Terminate."""
        handler, up = link.handler, link.up
        while True:
            message = handler._next_message()
            if message is None:
                return False
            kind, body = message
            if kind == ord("Q"):
                sql = body.rstrip(b"\x00").decode("utf-8", "replace")
                if self.is_semantic(sql):
                    reason = self.refusal(sql, link)
                    if reason is None:
                        self._run_here(link, body)
                        continue
                    body = self.stand_in(reason) + b"\x00"
            else:
                body = self.rewrite(kind, body)
            link.sent(kind)
            try:
                up.sock.sendall(bytes((kind,)) + struct.pack("!i", len(body) + 4) + body)
            except OSError:
                return True  # the upstream is gone: nothing left to cancel; the pump tells the client
            if kind == ord("X"):
                return True

    def _run_here(self, link: _Link, body: bytes) -> None:
        """Run a semantic simple query on this client's meansql session; the upstream is idle meanwhile."""
        handler = link.handler
        with link.gate:  # nothing from the upstream (a NOTIFY) between our messages
            try:
                state = link.local()
                upstream_scan.check(split(body.rstrip(b"\x00").decode("utf-8", "replace"))[0])
                upstream_scan.refresh(state.session.cursor)
            except Exception as exc:
                handler._error(exc)
                handler._send(codec.ready_for_query(b"I"), flush=True)
                return
            with self._lock:
                self._local[link.pid] = state.session
            try:
                handler._query(state, body)
            finally:
                with self._lock:
                    self._local.pop(link.pid, None)

    def _pump(self, link: _Link) -> None:
        """Upstream → client: whole messages only, so our own messages never split one; refusals swapped in."""
        handler, up = link.handler, link.up
        marker = self.marker.encode()
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
                ready = 0
                status = b""
                while pos <= limit:  # the hot loop of a streamed result: one pass per message
                    kind = buf[pos]
                    end = pos + 1 + length_at(buf, pos + 1)[0]
                    if end > n:
                        break
                    if kind == 0x5A:  # 'Z'
                        ready += 1
                        status = bytes(buf[end - 1 : end])
                    elif kind == 0x53:  # 'S' ParameterStatus: the upstream session's settings, for ours
                        link.parameter(bytes(buf[pos + 5 : end]))
                    elif kind == 0x45 and (at := buf.find(marker, pos, end)) >= 0:  # 'E': a stand-in failed
                        reason = bytes(buf[at + len(marker) + 1 : buf.find(b"(", at, end)])
                        out += buf[start:pos]
                        out += self._refusals.get(reason, self._refusals[b"extended"])
                        start = end
                    pos = end
                if pos:
                    out += buf[start:pos]
                    del buf[:pos]
                    with link.gate:
                        handler._send(bytes(out), flush=True)
                    if ready:
                        link.answered(ready, status)
        except Exception as exc:  # the client is gone: end the upstream session too
            log.debug("proxy pump ended: %s", exc)
        finally:
            link.close()
            try:
                socket.socket.shutdown(handler.request, socket.SHUT_RDWR)  # wakes the connection thread's read
            except OSError:
                pass  # already closed


class _Link:
    """One relayed session: what the upstream still owes, its transaction status, and meansql's own session."""

    def __init__(self, handler: MeansqlHandler, up: upstream.Upstream, pid: int, secret: int, params: dict[str, str]) -> None:
        self.handler = handler
        self.up = up
        self.pid = pid
        self.secret = secret
        self.params = params
        self.status = up.status
        self.owed = 0  # ReadyForQuery the upstream owes: one per Query, Sync and FunctionCall sent
        self.unsynced = False  # extended-protocol messages sent since the last Sync (an implicit transaction)
        self.closed = False
        self.gate = threading.Lock()  # held while a batch of messages goes to the client
        self.state: ConnState | None = None
        self._cond = threading.Condition()
        # The upstream session's reported settings (TimeZone, DateStyle...), applied to meansql's session.
        self.settings: dict[str, str] = {}
        for message in up.parameters:
            if message[:1] == b"S":
                self.parameter(message[5:])

    def parameter(self, body: bytes) -> None:
        """Note a ParameterStatus body (name NUL value NUL) the upstream sent."""
        name, _, rest = body.partition(b"\x00")
        self.settings[name.decode("utf-8", "replace").lower()] = rest.rstrip(b"\x00").decode("utf-8", "replace")

    def sent(self, kind: int) -> None:
        with self._cond:
            if kind in _READY_AFTER:
                self.owed += 1
                self.unsynced = False
            elif kind in _EXTENDED:
                self.unsynced = True

    def answered(self, ready: int, status: bytes) -> None:
        with self._cond:
            self.owed -= ready
            self.status = status
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_idle(self) -> bool:
        """Wait until the upstream has answered everything sent so far; False if it went away."""
        with self._cond:
            self._cond.wait_for(lambda: self.owed <= 0 or self.closed)
            return not self.closed

    def local(self) -> ConnState:
        """meansql's own session for this client, made on its first semantic statement."""
        if self.state is None:
            app = self.handler.server.app
            session = app.new_proxy_session(user=self.params.get("user", ""), database=self.params.get("database", ""))
            session.notice = lambda severity, message: self.handler._send(codec.notice_response(severity, message), flush=True)
            self.state = ConnState(session, self.pid, self.secret)
            self.handler._state = self.state
        session = self.state.session
        for name in _FOLLOWED:
            value = self.settings.get(name)
            if value is not None and session.settings.get(name) != value:
                try:
                    session.assign(name, value)
                except MeansqlError as exc:
                    log.debug("proxy session: upstream setting %s=%s not applied: %s", name, value, exc.message)
        session.take_reports()  # the client has them from the upstream already
        return self.state


_READY_AFTER = frozenset(b"QSF")
# Settings of the upstream session that shape how meansql's session writes values.
_FOLLOWED = ("timezone", "datestyle", "intervalstyle", "client_encoding")
_EXTENDED = frozenset(b"PBDEC")
