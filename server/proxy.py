"""Proxy mode: each client session is relayed to a session on the upstream PostgreSQL.

After the client has logged in to meansql, meansql logs in to the upstream
(`server.pgwire.upstream`), sends the client the upstream's ParameterStatus
messages with its own BackendKeyData, and from then on relays messages
unchanged in both directions: frontend messages are read and framed by the
connection's checks (type byte, length limit) on the connection thread and
written to the upstream; a pump thread writes everything the upstream sends to
the client as it arrives (so NOTIFYs and pipelined responses flow).

A semantic statement runs in meansql once the upstream has answered everything
sent before it (the relay counts the ReadyForQuery it owes) and is idle outside
a transaction: on a meansql Session whose DuckDB cursor reads the upstream's
tables through postgres_scanner (`server.upstream_scan`). A simple Query is
answered whole by meansql. In the extended protocol, a Parse of a semantic
statement opens a *local batch*: it and every message up to Sync (Bind,
Describe, Execute, Close of what it made) are answered by meansql's session;
later batches that name a statement meansql holds are local too. Each name
belongs to one side: meansql refuses a name the other side holds with 42P05,
as PostgreSQL would. Whether PostgreSQL holds a name is asked of it when a
semantic statement takes one (a Describe meansql sends and reads itself), so
a failed Parse, DISCARD ALL, DEALLOCATE or SQL PREPARE on the upstream cannot
leave a stale record; DISCARD ALL and DEALLOCATE ALL drop meansql's own
statements of the session too, as PostgreSQL drops all of a session's, and
meansql answers a simple `DEALLOCATE name` of a statement it holds.

A semantic statement meansql does not run (inside a transaction block, after
other extended messages before Sync, among other statements in one Query) is
replaced by a statement that fails at once on the upstream (a call of a
function named with a per-process random marker and the reason), and the pump
replaces that error with meansql's own. The upstream thus keeps the order of
responses, skips to Sync after the error and sets the transaction status,
exactly as it does for any failing statement (in an aborted transaction it
answers 25P02, as for any statement).
"""

from __future__ import annotations

import logging
import re
import secrets
import select
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Collection

from sqlglot import exp

from semantic_ops import dialect, functions
from semantic_ops.operators import Registry
from server import errors, upstream_scan
from server.errors import DuplicatePreparedStatement, FeatureNotSupported
from server.pgwire import codec, upstream
from server.pgwire.connection import ConnState, MeansqlHandler, Prepared, _Closed
from server.session import Session
from server.statements import Kind, split
from training.errors import MeansqlError

log = logging.getLogger(__name__)

PUMP_CHUNK = 256 * 1024
# A run of whole DataRows shorter than SHORT_ROW bytes, matched in C: the pump hops over a streamed result without
# a Python step per row. One alternative per length byte (each skips the rest of its row); the regular expression
# engine tries an alternative that starts with a literal byte only when that byte matches, so short rows, which
# cost the most per byte, are matched first. Longer rows are walked one by one.
SHORT_ROW = 96
_SHORT_ROWS = re.compile(
    b"(?:D\x00\x00\x00(?:"
    + b"|".join(re.escape(bytes([size])) + (b".{%d}" % (size - 4) if size > 4 else b"") for size in range(4, SHORT_ROW))
    + b"))*",
    re.S,
).match
# String literals ('...' with '' inside, $tag$...$tag$) and comments. A backslash escape in E'...' can make it
# take the wrong end of a literal: then a statement is at worst relayed to PostgreSQL, which rejects the word.
_LITERALS = re.compile(r"'(?:[^']|'')*'|\$([A-Za-z_][A-Za-z_0-9]*)?\$.*?\$\1\$|--[^\n]*|/\*.*?\*/", re.S)
_ELSEWHERE = "Run this statement on a meansql server without --upstream; plain SQL is relayed to PostgreSQL."
# Why a semantic statement is refused: (SQLSTATE, message, detail, hint). 25001 is PostgreSQL's own code for a
# statement that "cannot run inside a transaction block" (VACUUM, CREATE DATABASE).
REASONS: dict[str, tuple[str, str, str | None, str | None]] = {
    "pipeline": (
        "0A000",
        "a semantic statement must be sent in a Sync of its own in proxy mode",
        "Its Parse, Bind, Describe and Execute are answered by meansql; other statements before the same Sync "
        "are answered by PostgreSQL, whose answers come only at Sync.",
        "Send Sync (psycopg: outside a pipeline; pgjdbc: not in a batch) before and after the semantic statement.",
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
        # Any operator's word in any case: ASCII text without one needs no closer look (str.lower of ASCII text
        # changes only A-Z, which the case-insensitive search matches too).
        self._any_word = re.compile("|".join(map(re.escape, self._words)) or "(?!)", re.I).search
        # The same look on the bytes of a simple Query, where any non-ASCII byte counts as a word: None means plain
        # SQL without decoding the message (the relay's fast path).
        self._any_word_bytes = re.compile(b"|".join([rb"[\x80-\xff]", *(re.escape(w.encode()) for w in self._words)]), re.I).search
        self.marker = f"meansql_semantic_refused_{secrets.token_hex(8)}"
        self._refusals: dict[bytes, bytes] = {}
        for reason, (code, message, detail, hint) in REASONS.items():
            text = message.format(semantic_off) if reason == "off" else message
            self._refusals[reason.encode()] = codec.error_response("ERROR", code, text, hint=hint, detail=detail)
        self._sessions: dict[int, tuple[int, int, int]] = {}  # our pid -> (our secret, upstream pid, secret)
        self._local: dict[int, Session] = {}  # our pid -> the meansql session running a semantic statement
        self._lock = threading.Lock()
        self._parsed: dict[str, bool] = {}  # texts with an operator's word -> whether they call one (parsing is slow)

    # -- semantic statements ------------------------------------------------------------
    def is_semantic(self, sql: str) -> bool:
        """Whether sql calls a semantic operator: the cheap looks session.py takes, then the parse tree.

        The tree decides because a column named like an operator is plain SQL; text the dialect cannot parse
        goes to PostgreSQL, which reports its own error.
        """
        # Words inside string literals and comments do not count; removing them first (in C, by one regular
        # expression) spares the tokenizer a bulk INSERT whose text happens to contain "means".
        if sql.isascii() and self._any_word(sql) is None:
            return False  # the common case of plain SQL, in one C call
        lower = _LITERALS.sub(" ", sql).lower()
        if not any(w in lower for w in self._words):
            return False
        known = self._parsed.get(sql)
        if known is None:
            if len(self._parsed) >= 512:
                self._parsed.clear()
            known = self._parsed[sql] = self._calls_operator(sql)
        return known

    def _calls_operator(self, sql: str) -> bool:
        """Whether the parse tree of sql (which holds an operator's word) calls a semantic operator."""
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

    def stand_in_parse(self, reason: str) -> bytes:
        """A Parse body of the stand-in under a name no client uses (a failed Parse leaves no statement)."""
        return f"{self.marker}\x00".encode() + self.stand_in(reason) + b"\x00\x00\x00"

    def refusal(self, sql: str, link: _Link) -> str | None:
        """Why a semantic simple query cannot run in meansql now (None: it can); waits for the upstream first."""
        if self.semantic_off:
            return "off"
        if not link.wait_idle():
            return "transaction"  # the upstream is gone; the stand-in's send fails and ends the session
        if link.status != b"I" or link.batch is not None:
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
        """Client → upstream, on the connection thread; True after Terminate.

        Reads what the client has sent (`read1`: the bytes buffered since login first), checks each message's
        type and length as the connection's message loop does, and writes all the messages of one read that go
        upstream in one send, before anything meansql answers itself.
        """
        handler = link.handler
        sock = handler.request
        cap = handler.server.max_message_size
        buf = bytearray(link.leftover)
        out = bytearray()
        space = memoryview(bytearray(RELAY_CHUNK))  # read into, not a fresh RELAY_CHUNK bytes object per read
        tls = isinstance(sock, ssl.SSLSocket)
        known, small_types, small_limit = codec.KNOWN_TYPES, codec.SMALL_TYPES, codec.SMALL_MESSAGE_LIMIT
        any_word = self._any_word_bytes
        while True:
            if not buf or link.leftover is None:
                try:
                    got = _recv_into(sock, handler._wlock, space) if tls else sock.recv_into(space)
                except OSError:
                    got = 0
                if got is None:
                    continue  # part of a TLS record: wait for the rest
                if not got:
                    return False  # closed between messages, or mid-message (PostgreSQL ends the session alike)
                # The fast path of a client that waits for each answer: the read is one whole plain simple Query
                # and meansql holds nothing for the session, so it goes upstream as it is, without a copy.
                if (
                    not buf
                    and space[0] == 0x51  # 'Q'
                    and got > 5
                    and link.state is None
                    and _LENGTH(space, 1)[0] == got - 1 <= cap
                    and any_word(space, 5, got - 1) is None
                ):
                    link.leftover = None
                    link.sent(0x51)  # 'Q'
                    if not self._send_up(link, space[:got]):
                        return True
                    continue
                buf += space[:got]
            link.leftover = None
            pos, n = 0, len(buf)
            while n - pos >= 5:
                kind = buf[pos]
                (length,) = _LENGTH(buf, pos + 1)
                if kind not in known:
                    self._send_up(link, out)
                    handler._fatal("08P01", f"invalid frontend message type {kind}")
                if length < 4 or length > (small_limit if kind in small_types else cap):
                    self._send_up(link, out)
                    raise _Closed(f"invalid message length {length} for message type {chr(kind)!r}")
                end = pos + 1 + length
                if end > n:
                    break
                if kind in _PLAIN and link.state is None:  # the fast path: relayed as it is
                    out += buf[pos:end]
                    link.sent(kind)
                else:
                    body = bytes(buf[pos + 5 : end])
                    routed = self._route_message(link, kind, body, out)
                    if routed is not None:
                        if routed[0] == kind and routed[1] is body:  # relayed as it is
                            out += buf[pos:end]
                        else:
                            kind, body = routed
                            out += bytes((kind,)) + struct.pack("!i", len(body) + 4) + body
                        link.sent(kind)
                pos = end
                if kind == 0x58:  # 'X'
                    self._send_up(link, out)
                    return True
            del buf[:pos]
            if not self._send_up(link, out):
                return True  # the upstream is gone: nothing left to cancel; the pump tells the client

    def _send_up(self, link: _Link, out: bytearray | memoryview) -> bool:
        """Write the relayed messages gathered so far to the upstream (and empty `out` if it is a bytearray);
        False if it is gone."""
        if not out:
            return True
        try:
            if link.up_tls:
                _sendall(link.up.sock, link.up_lock, out)
            else:
                link.up.sock.sendall(out)
        except OSError:
            return False
        finally:
            if isinstance(out, bytearray):
                out.clear()
        return True

    def _route_message(self, link: _Link, kind: int, body: bytes, out: bytearray) -> tuple[int, bytes] | None:
        """What goes upstream for one client message (None: nothing); meansql's own answers wait until the
        upstream has been sent everything before them (`out`)."""
        if kind == 0x51:  # 'Q'
            sql = body.rstrip(b"\x00").decode("utf-8", "replace")
            link.simple_query()
            if link.state is not None and link.state.statements and (name := _deallocated(sql)) in link.held():
                self._send_up(link, out)
                if link.wait_idle() and link.status != b"E":  # in a failed transaction PostgreSQL answers 25P02
                    with link.gate:
                        link.held().pop(name, None)
                        link.handler._send(codec.command_complete("DEALLOCATE") + codec.ready_for_query(link.status), flush=True)
                    return None
            if self.is_semantic(sql):
                self._send_up(link, out)
                reason = self.refusal(sql, link)
                if reason is None:
                    self._run_here(link, body)
                    return None
                body = self.stand_in(reason) + b"\x00"
            return kind, body
        if kind in _EXTENDED:
            if link.dropped_all:
                link.drop_statements()
            local = self._is_local(link, kind, body)
            if local or link.batch == "local":
                self._send_up(link, out)
            return self._route(link, kind, body, local)
        return kind, body

    # -- the extended protocol ------------------------------------------------------------
    def _route(self, link: _Link, kind: int, body: bytes, local: bool) -> tuple[int, bytes] | None:
        """Where an extended-protocol message goes: None when meansql answered it, else what to send upstream."""

        if link.batch == "local":
            if local or kind in (0x48, 0x53):  # 'H' Flush, 'S' Sync: of the batch meansql answers
                self._answer(link, kind, body)
            else:
                self._answer(link, kind, body, refuse="pipeline")
            return None
        if not local:
            if kind == 0x50:  # 'P'
                name, query, _ = codec.parse_parse(body)
                held = link.held()
                if name and name in held:
                    return 0x50, self._refuse_parse(link, DuplicatePreparedStatement(f'prepared statement "{name}" already exists'))
                if not name:
                    held.pop("", None)  # the client's unnamed statement is PostgreSQL's again
                if _BEGINS.match(query):
                    link.began = True
            return kind, body
        if kind == 0x43:  # 'C' of a statement meansql holds: drop it; CloseComplete comes in order
            link.held().pop(body[1:].rstrip(b"\x00").decode("utf-8", "replace"), None)
            if link.batch is None:  # nothing of this batch is upstream: answer once it has answered the rest
                link.wait_idle()
                link.handler._send(codec.close_complete(), flush=True)
                return None
            return kind, b"S" + self.marker.encode() + b"\x00"  # PostgreSQL answers a Close of a name it lacks
        if link.batch == "upstream" and link.closes_only:
            # pgjdbc sends the Close of a statement it dropped ahead of its next one: end that Close's batch
            # upstream with a Sync of meansql's own, whose ReadyForQuery the pump does not relay.
            link.sent(0x53)
            link.swallow.add(link.requested)
            if not self._send_up(link, bytearray(_SYNC)):
                return None
        if link.batch is None:
            reason = self._local_refusal(link)
            if reason is None:
                link.batch = "local"
                self._answer(link, kind, body)
                return None
        else:
            reason = "transaction" if link.status != b"I" or link.began else "pipeline"
        return 0x50, self.stand_in_parse(reason)

    def _is_local(self, link: _Link, kind: int, body: bytes) -> bool:
        """Whether a message is meansql's: a Parse of a semantic statement, or one naming what meansql holds."""
        if kind == 0x50:  # 'P'
            name_end = body.find(b"\x00")
            text_end = body.find(b"\x00", name_end + 1)
            return name_end >= 0 and text_end > name_end and self.is_semantic(body[name_end + 1 : text_end].decode("utf-8", "replace"))
        state = link.state
        if state is None or not (state.statements or state.portals):
            return False
        if kind == 0x42:  # 'B': its portal name, then its statement's
            portal_end = body.find(b"\x00")
            return body[portal_end + 1 : body.find(b"\x00", portal_end + 1)].decode("utf-8", "replace") in state.statements
        if kind == 0x45:  # 'E'
            return body[: body.find(b"\x00")].decode("utf-8", "replace") in state.portals
        if kind in (0x44, 0x43):  # 'D', 'C'
            name = body[1:].rstrip(b"\x00").decode("utf-8", "replace")
            return name in (state.statements if body[:1] == b"S" else state.portals)
        return False

    def _local_refusal(self, link: _Link) -> str | None:
        """Why a local batch cannot start now (None: it can); waits until the upstream has answered all."""
        if self.semantic_off:
            return "off"
        if not link.wait_idle() or link.status != b"I":
            return "transaction"
        return None

    def _refuse_parse(self, link: _Link, exc: MeansqlError) -> bytes:
        """A stand-in Parse whose failure upstream the pump turns into this error."""
        f = errors.translate(exc)
        return self.stand_in_parse(link.refusal(codec.error_response(f.severity, f.sqlstate, f.message, f.hint, None, f.detail)))

    def _answer(self, link: _Link, kind: int, body: bytes, refuse: str | None = None) -> None:
        """One message of a local batch, answered by this client's meansql session."""
        handler = link.handler
        state = link.local()
        if state.skipping and kind != 0x53:
            return
        taken = False  # a Parse's name is one PostgreSQL's session holds
        if kind == 0x50 and refuse is None:
            name = body[: body.find(b"\x00")]
            taken = bool(name) and self._upstream_holds(link, name)
        with link.gate:  # nothing from the upstream (a NOTIFY) between our messages
            with self._lock:
                self._local[link.pid] = state.session
            try:
                if refuse is not None:  # as _fail_extended does, with the refusal's detail
                    handler._send(self._refusals[refuse.encode()], flush=True)
                    state.skipping = True
                elif kind == 0x50 and not self._checked_parse(link, state, body, taken):
                    pass
                else:
                    _HANDLERS[kind](handler, state, body)
                    if kind == 0x53:
                        link.batch = None
            except (ValueError, UnicodeDecodeError, struct.error) as exc:
                handler._fatal("08P01", f"invalid message format: {exc}")
            finally:
                with self._lock:
                    self._local.pop(link.pid, None)

    def _upstream_holds(self, link: _Link, name: bytes) -> bool:
        """Whether the client's upstream session holds a prepared statement `name`, asked of PostgreSQL with a
        Describe (and Sync) whose answer the pump keeps from the client; the upstream is idle meanwhile."""
        if not link.wait_idle():
            return False
        probe = link.probe_start()
        if not self._send_up(link, bytearray(b"D" + struct.pack("!i", len(name) + 6) + b"S" + name + b"\x00" + _SYNC)):
            return False
        return probe.wait(link)

    def _checked_parse(self, link: _Link, state: ConnState, body: bytes, taken: bool) -> bool:
        """Checks of a semantic Parse before the session's own; False after a refusal."""
        name, query, _ = codec.parse_parse(body)
        try:
            if taken:
                raise DuplicatePreparedStatement(f'prepared statement "{name}" already exists')
            stmts = split(query)
            if len(stmts) == 1:
                if stmts[0].kind is not Kind.ROWS:
                    _, message, _, hint = REASONS["query"]
                    raise FeatureNotSupported(message, hint=hint)
                upstream_scan.check(stmts[0])
            upstream_scan.refresh(state.session.cursor)
        except Exception as exc:
            link.handler._fail_extended(state, exc, query)
            return False
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
        """Upstream → client: whole messages only, so our own messages never split one; refusals swapped in.

        The hot loop of a streamed result hops over DataRows; other messages are looked at only for what the
        relay needs: ReadyForQuery (what the upstream still owes, its transaction status), ParameterStatus
        (settings meansql's session follows) and the error of a stand-in.
        """
        handler, up = link.handler, link.up
        marker = self.marker.encode()
        # Read into one buffer: bytes [0, n) are what the upstream sent and the client has not been sent yet.
        buf = bytearray(PUMP_CHUNK)
        n = 0
        length_at = _LENGTH
        short_rows = _SHORT_ROWS
        sock = up.sock
        tls = isinstance(sock, ssl.SSLSocket)
        try:
            while True:
                if n == len(buf):  # one message is larger than the buffer: make room for the rest of it
                    buf.extend(bytes(len(buf)))
                try:
                    if tls:
                        got = _recv_into(sock, link.up_lock, memoryview(buf)[n:])
                    else:
                        got = sock.recv_into(memoryview(buf)[n:] if n else buf)
                except OSError:
                    got = 0
                if got is None:
                    continue
                if not got:
                    break
                n += got
                pos = start = 0
                limit = n - 5
                ready = 0
                status = b""
                swapped: bytearray | None = None
                probe = link.probe
                while pos <= limit:
                    kind = buf[pos]
                    length = length_at(buf, pos + 1)[0]
                    if kind == 0x44 and 4 <= length < SHORT_ROW:  # 'D' DataRow: hop over the run it starts
                        end = pos + 1 + length
                        if end < n and buf[end] != 0x44:  # a row alone (a one-row answer): no run to match
                            pos = end
                            continue
                        end = short_rows(buf, pos, n).end()
                        if end == pos:
                            break  # the row is not whole yet
                        pos = end
                        continue
                    end = pos + 1 + length
                    if end > n:
                        break
                    if kind in _WATCHED or (probe is not None and kind != 0x44):  # the rest need no look
                        if probe is not None and kind not in _ASYNC:  # the answer to meansql's own Describe
                            swapped = swapped if swapped is not None else bytearray()
                            swapped += buf[start:pos]
                            start = end
                            if kind == 0x5A:  # 'Z'
                                ready += 1
                                status = bytes(buf[end - 1 : end])
                                link.probe_end(probe)
                                probe = None
                            elif kind == 0x45:  # 'E' 26000: no such statement
                                probe.missing = True
                        elif kind == 0x5A:  # 'Z'
                            ready += 1
                            status = bytes(buf[end - 1 : end])
                            if link.swallow and link.received + ready in link.swallow:
                                link.swallow.discard(link.received + ready)
                                swapped = swapped if swapped is not None else bytearray()
                                swapped += buf[start:pos]
                                start = end
                        elif kind == 0x53:  # 'S' ParameterStatus: the upstream session's settings, for ours
                            link.parameter(bytes(buf[pos + 5 : end]))
                        elif kind == 0x43 and length > 4 and buf[pos + 5] == 0x44 and buf[pos + 5 : end] in _DROPPED_ALL:
                            link.dropped_all = True  # 'C': PostgreSQL dropped the session's prepared statements
                        elif kind == 0x45 and (at := buf.find(marker, pos, end)) >= 0:  # 'E': a stand-in failed
                            reason = bytes(buf[at + len(marker) + 1 : buf.find(b"(", at, end)])
                            swapped = swapped if swapped is not None else bytearray()
                            swapped += buf[start:pos]
                            swapped += self._refusals.get(reason) or link.refusals.pop(reason, None) or self._refusals[b"pipeline"]
                            start = end
                    pos = end
                if pos:
                    with link.gate:
                        if swapped is None:
                            link.write(memoryview(buf)[:pos])
                        else:
                            swapped += buf[start:pos]
                            link.write(swapped)
                    n -= pos
                    if len(buf) > PUMP_CHUNK and n <= PUMP_CHUNK // 2:  # after a large message: the usual size again
                        tail = buf[pos : pos + n]
                        buf = bytearray(PUMP_CHUNK)
                        buf[:n] = tail
                    elif n:
                        buf[:n] = buf[pos : pos + n]  # the start of a message still to come
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
        # The client socket's sendall (its wfile writes through it; a TLS socket's wfile is its own writer).
        self._write = handler.wfile.write if isinstance(handler.request, ssl.SSLSocket) else handler.request.sendall
        self.pid = pid
        self.secret = secret
        self.params = params
        self.status = up.status
        # Who answers the extended-protocol messages since the last Sync: None (none yet), "upstream" or "local".
        self.batch: str | None = None
        self.closes_only = False  # the upstream batch holds only Close messages so far
        # ReadyForQuery asked for (one per Query, Sync and FunctionCall sent; counted by the connection thread only)
        # and received (counted by the pump only): the upstream owes the difference.
        self.requested = self.received = 0
        self.swallow: set[int] = set()  # numbers of the ReadyForQuery answering meansql's own Syncs: not relayed
        self.leftover: bytes | None = _leftover(handler)
        self.up_lock = threading.Lock()  # a TLS upstream socket: one SSL call at a time (see _recv_into)
        self.up_tls = isinstance(up.sock, ssl.SSLSocket)
        self.began = False  # a BEGIN was relayed in this batch
        self.probe: _Probe | None = None  # meansql's own Describe whose answer the pump keeps from the client
        self.dropped_all = False  # PostgreSQL ran DISCARD ALL or DEALLOCATE ALL: drop meansql's statements too
        self.refusals: dict[bytes, bytes] = {}  # stand-in reason -> the ErrorResponse the pump sends instead
        self._refusal_count = 0
        self.closed = False
        self.gate = threading.Lock()  # held while a batch of messages goes to the client
        self.state: ConnState | None = None
        self._cond = threading.Condition()
        self._waiting = 0  # threads in wait_idle: the pump takes _cond to wake them only when there are some
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
        if kind in _UPSTREAM_BATCH:
            self.closes_only = kind == 0x43 and (self.batch is None or self.closes_only)
            self.batch = "upstream"
        elif kind in _READY_AFTER:
            self.requested += 1
            if kind == 0x53:  # 'S'
                self.batch = None
                self.began = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send relayed bytes to the client after whatever meansql's session has queued, without copying them."""
        handler = self.handler
        with handler._wlock:
            if handler._out:
                handler._flush_locked()
            self._write(data)

    def held(self) -> dict[str, Prepared]:
        """The prepared statements meansql's session holds for this client."""
        return self.state.statements if self.state is not None else {}

    def simple_query(self) -> None:
        """A Query replaces the unnamed statement and portal, as PostgreSQL's does."""
        if self.state is not None:
            self.state.statements.pop("", None)
            self.state.portals.pop("", None)
            if self.batch == "local":  # a Query ends the batch meansql was answering
                self.state.portals.clear()
                self.state.skipping = False
                self.batch = None

    def refusal(self, error: bytes) -> str:
        """A stand-in reason for one error message (taken by the pump when it swaps it in)."""
        self._refusal_count += 1
        reason = f"r{self._refusal_count}"
        self.refusals[reason.encode()] = error
        return reason

    def probe_start(self) -> _Probe:
        """Note one ReadyForQuery owed for meansql's own message and that the pump keeps its answer."""
        probe = _Probe()
        with self._cond:
            self.requested += 1
            self.probe = probe
        return probe

    def probe_end(self, probe: _Probe) -> None:
        with self._cond:
            probe.done = True
            self.probe = None
            self._cond.notify_all()

    def drop_statements(self) -> None:
        """PostgreSQL dropped every prepared statement of the session: meansql's of the client go too."""
        self.dropped_all = False
        if self.state is not None:
            self.state.statements.clear()

    @property
    def owed(self) -> int:
        """ReadyForQuery the upstream still owes."""
        return self.requested - self.received

    def answered(self, ready: int, status: bytes) -> None:
        """The pump relayed `ready` ReadyForQuery, the last with `status`.

        A waiter counts itself in _waiting before it looks at `received`, so when _waiting reads 0 here, a wait
        that starts later sees this count: no lock on the path of every answer.
        """
        self.status = status
        self.received += ready
        if self._waiting:
            with self._cond:
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_idle(self) -> bool:
        """Wait until the upstream has answered everything sent so far; False if it went away."""
        if self.requested <= self.received:
            return not self.closed
        with self._cond:
            self._waiting += 1
            try:
                self._cond.wait_for(lambda: self.requested <= self.received or self.closed)
            finally:
                self._waiting -= 1
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


class _Probe:
    """A Describe of a statement name that meansql sends on the client's upstream session."""

    def __init__(self) -> None:
        self.done = False
        self.missing = False  # PostgreSQL answered 26000: it holds no such statement

    def wait(self, link: _Link) -> bool:
        """Whether PostgreSQL holds the name; False if the upstream went away first."""
        with link._cond:
            link._cond.wait_for(lambda: self.done or link.closed)
            return self.done and not self.missing


def _deallocated(sql: str) -> str | None:
    """The statement name of a `DEALLOCATE [PREPARE] name` query (not ALL), as PostgreSQL folds it."""
    m = _DEALLOCATE.match(sql)
    if m is None:
        return None
    name = m.group(1)
    if name.startswith('"'):
        return name[1:-1].replace('""', '"')
    return None if name.lower() == "all" else name.lower()


def _leftover(handler: MeansqlHandler) -> bytes:
    """What the client sent right after its login and the connection's buffered reader holds (no wait)."""
    sock = handler.request
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return handler.rfile.read1(RELAY_CHUNK) or b""
    except OSError:  # nothing there (BlockingIOError, SSLWantReadError)
        return b""
    finally:
        sock.settimeout(timeout)


# A TLS socket is read by one thread and written by another, but OpenSSL allows one call at a time on a
# connection: each thread waits for its socket outside the lock (select), then reads or writes inside it
# without blocking, so neither holds the lock while the peer is silent.
def _recv_into(sock: ssl.SSLSocket, lock: threading.Lock, into: memoryview) -> int | None:
    """Read what a TLS socket has into `into`: the byte count (0: closed; None: only part of a record yet)."""
    if not sock.pending():
        select.select([sock], [], [])
    with lock:
        timeout = sock.gettimeout()
        sock.setblocking(False)
        try:
            return sock.recv_into(into)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return None
        finally:
            sock.settimeout(timeout)


def _sendall(sock: ssl.SSLSocket, lock: threading.Lock, data: bytes | bytearray | memoryview) -> None:
    """Write all of data to a TLS socket whose reads run on another thread."""
    view = memoryview(data)
    while view:
        with lock:
            timeout = sock.gettimeout()
            sock.setblocking(False)
            try:
                sent = sock.send(view)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                sent = 0
            finally:
                sock.settimeout(timeout)
        view = view[sent:]
        if view and not sent:
            select.select([], [sock], [], 1.0)


_READY_AFTER = frozenset(b"QSF")
_ASYNC = frozenset(b"ANS")  # NotificationResponse, NoticeResponse, ParameterStatus: may come at any time
_WATCHED = frozenset(b"ZSCE")  # what the pump looks at in a message outside a Describe of meansql's own
_DROPPED_ALL = (b"DISCARD ALL\x00", b"DEALLOCATE ALL\x00")  # command tags of what drops every prepared statement
_SYNC = b"S\x00\x00\x00\x04"
_UPSTREAM_BATCH = frozenset(b"PBDEC")  # messages that open an extended-protocol batch PostgreSQL answers
# Relayed as they are while meansql holds nothing for the session: they name no statement meansql could hold.
_PLAIN = frozenset(b"BDEHSdcfF")
_LENGTH = struct.Struct("!i").unpack_from
RELAY_CHUNK = 256 * 1024
# Settings of the upstream session that shape how meansql's session writes values.
_FOLLOWED = ("timezone", "datestyle", "intervalstyle", "client_encoding")
_EXTENDED = frozenset(b"PBDECHS")
_BEGINS = re.compile(r"\s*(BEGIN|START\s+TRANSACTION)\b", re.I)
_DEALLOCATE = re.compile(r'\s*DEALLOCATE\s+(?:PREPARE\s+)?("(?:[^"]|"")+"|[A-Za-z_][A-Za-z_0-9$]*)\s*;?\s*$', re.I)
_HANDLERS: dict[int, Callable[[MeansqlHandler, ConnState, bytes], None]] = {
    ord("P"): MeansqlHandler._parse,
    ord("B"): MeansqlHandler._bind,
    ord("D"): MeansqlHandler._describe,
    ord("E"): MeansqlHandler._execute,
    ord("C"): MeansqlHandler._close,
    ord("H"): lambda handler, state, body: handler.flush(),
    ord("S"): MeansqlHandler._sync,
}
