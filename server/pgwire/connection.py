"""The connection: buenavista's socket server and handler, with the parts that fall short replaced.

Replaced from buenavista 0.5.0: the message loop (type byte and length checked
before a body is read), start-up (SSLRequest refused cleanly, cancel keys from
``secrets``, a cancel interrupts the query instead of closing the session),
errors (SQLSTATE, hint, position), NOTICEs, multi-statement simple queries and
the extended protocol (skip to Sync after an error).
"""

from __future__ import annotations

import logging
import queue
import secrets
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
from buenavista.postgres import BuenaVistaHandler, BuenaVistaServer

from semantic_ops import dialect
from server import cursors, errors
from server import parameters as pgparameters
from server.pgwire import auth, codec, copy, tls, types
from server.session import CannotDescribe, Result, Session, TxState
from server.statements import Kind, Statement, split

if TYPE_CHECKING:
    from server.proxy import Proxy

log = logging.getLogger(__name__)

FLUSH_AT = 64 * 1024
YOUNG_SECONDS = 1.0  # a connection's work goes through the start-up lane for this long after it logged in
YOUNG_SHARE = 0.3  # of the wall clock, the most that new connections' work takes while they keep coming
YOUNG_PAUSE = 0.01  # seconds: the longest rest the lane takes after one turn
GATE_PATIENCE = 0.5  # seconds a new connection waits for its turn before it goes ahead anyway
LONG_TURN = 0.02  # seconds: a turn held this long is a statement at work; new connections do not wait for it
BULK_ROWS = 32_768  # rows per Arrow batch when a result is framed in bulk


class _Closed(Exception):
    """The peer went away or must be dropped."""


@dataclass
class Prepared:
    statement: Statement | None  # None: the empty query
    param_oids: list[int]
    checked: bool = True  # param_oids is the statement's full parameter list (its text could be read)
    columns: list[tuple[str, int]] | None = None  # found at Parse for statements returning rows


@dataclass
class Portal:
    prepared: Prepared
    params: list[Any]
    result_formats: list[int]
    result: Result | None = None
    rows: Iterator[Sequence[Any]] | None = None
    sent: int = 0
    described: bool = False
    done: bool = False


@dataclass
class ConnState:
    session: Session
    pid: int
    secret: int
    statements: dict[str, Prepared] = field(default_factory=dict)
    portals: dict[str, Portal] = field(default_factory=dict)
    skipping: bool = False  # after an error in extended mode, until Sync
    analysed: set[tuple[str, tuple[int, ...]]] = field(default_factory=set)  # texts that passed Parse's checks


class MeansqlHandler(BuenaVistaHandler):
    """One client connection."""

    server: MeansqlServer

    def setup(self) -> None:
        super().setup()
        self._out = bytearray()
        self._wlock = threading.Lock()
        self._slot = False  # holds one of max_connections
        self._turn = False  # holds a turn in the server's start-up lane
        self.server.login_clock.start(self, self.request)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.login_clock.done(self)
            if isinstance(self.request, ssl.SSLSocket):
                self.request.close()  # the accepted socket was handed to it; socketserver closes only that one

    # -- I/O --------------------------------------------------------------
    def _read(self, n: int) -> bytes:
        self._give_turn()  # never held while waiting for the client
        try:
            data = self.rfile.read(n)
        except OSError as exc:  # TLS errors and resets; the login clock shuts sockets down too
            raise _Closed(str(exc)) from exc
        if data is None or len(data) < n:
            raise _Closed("connection closed by peer")
        return bytes(data)

    def _send(self, data: bytes, flush: bool = False) -> None:
        with self._wlock:
            self._out += data
            if flush or len(self._out) >= FLUSH_AT:
                self._flush_locked()

    def _flush_locked(self) -> None:
        if self._out:
            try:
                self.wfile.write(bytes(self._out))
            except OSError as exc:
                raise _Closed(str(exc)) from exc
            finally:
                self._out.clear()

    def flush(self) -> None:
        with self._wlock:
            self._flush_locked()

    def _fatal(self, code: str, message: str) -> None:
        self._send(codec.error_response("FATAL", code, message), flush=True)
        raise _Closed(message)

    # -- lifecycle ----------------------------------------------------------------
    def handle(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        state: ConnState | None = None
        try:
            state = self._startup()
            if state is None:
                return
            self._loop(state)
        except _Closed as exc:
            log.debug("connection closed: %s", exc)
        except Exception:
            log.exception("connection failed")
        finally:
            self._give_turn()
            if state is not None:
                self.server.forget(state)
                state.session.close()
            if self._slot:
                self.server.release_slot()

    def _startup(self) -> ConnState | None:
        ssl_done = gss_done = False  # PostgreSQL answers each negotiation once, then takes it as a protocol number
        while True:
            (length,) = struct.unpack("!i", self._read(4))
            if not codec.STARTUP_MIN <= length <= codec.STARTUP_MAX:
                raise _Closed(f"invalid startup packet length {length}")
            body = self._read(length - 4)
            (code,) = struct.unpack("!i", body[:4])
            if code == codec.SSL_REQUEST and not ssl_done:
                ssl_done = True
                gss_done = self._ssl_request()
                continue
            if code == codec.GSS_REQUEST and not gss_done:
                gss_done = True
                unencrypted = tls.has_unread_data(self.rfile, self.request)
                self._send(b"N", flush=True)
                if unencrypted:
                    self._fatal("08P01", "received unencrypted data after GSSAPI encryption request")
                continue
            if code == codec.CANCEL_REQUEST:
                if len(body) == 12:
                    pid, secret = struct.unpack("!II", body[4:12])
                    self.server.cancel(pid, secret)
                return None
            if code != codec.PROTOCOL_3:
                self._fatal("0A000", f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
            # A new connection's work takes turns with other new ones (the next read gives the turn back). A
            # CancelRequest does not wait for one: it is urgent, cheap, and a client may send its cancels one by one.
            self._take_turn()
            try:
                params = codec.parse_startup(body[4:])
            except UnicodeDecodeError:
                self._fatal("08P01", "invalid startup packet: parameters are not UTF-8")
            return self._login(params)

    def _ssl_request(self) -> bool:
        """Answer SSLRequest: 'S' and a TLS handshake when a certificate is configured, else 'N'."""
        self._give_turn()  # the handshake waits for the client
        context = self.server.ssl_context
        # Checked before answering: whatever is here was sent before the client could have read our answer.
        unencrypted = tls.has_unread_data(self.rfile, self.request)
        self._send(b"S" if context else b"N", flush=True)
        if context is not None:
            try:
                sock = context.wrap_socket(self.request, server_side=True, do_handshake_on_connect=False)
                self.request = self.connection = sock  # the accepted socket object is now detached
                self.server.login_clock.start(self, sock)
                sock.do_handshake()
            except OSError as exc:
                raise _Closed(f"TLS handshake failed: {exc}") from exc
            self.rfile = sock.makefile("rb", self.rbufsize)
            self.wfile = sock.makefile("wb", self.wbufsize)
        if unencrypted:  # as PostgreSQL: reported after the handshake, so to the client that made it
            self._send(codec.error_response(
                "FATAL", "08P01", "received unencrypted data after SSL request",
                detail="This could be either a client-software bug or evidence of an attempted man-in-the-middle "
                       "attack."), flush=True)
            raise _Closed("received unencrypted data after SSL request")
        return context is not None

    def _authenticate(self, user: str) -> None:
        """Password authentication when users are configured; an unknown user goes through a doomed SCRAM exchange."""
        users = self.server.users
        if not users:
            return
        verifier = users.get(user)
        try:
            if isinstance(verifier, auth.Md5Verifier):
                salt = secrets.token_bytes(4)
                self._send(auth.authentication_md5(salt), flush=True)
                if not auth.check_md5(verifier, salt, self._auth_response("password")):
                    raise auth.failed(user)
                return
            # Over TLS, SCRAM-SHA-256-PLUS binds the exchange to the server's certificate (tls-server-end-point).
            binding = self.server.tls_end_point if isinstance(self.request, ssl.SSLSocket) else None
            mechanisms = [auth.MECHANISM_PLUS, auth.MECHANISM] if binding is not None else [auth.MECHANISM]
            self._send(auth.authentication_sasl(mechanisms), flush=True)
            mechanism, first = auth.parse_sasl_initial(self._auth_response("SASL"))
            if mechanism not in mechanisms:
                raise auth.ProtocolViolation("client selected an invalid SASL authentication mechanism")
            scram = auth.ScramServer(user, verifier or auth.mock_verifier(user, self.server.mock_nonce),
                                     doomed=verifier is None, binding=binding, plus=mechanism == auth.MECHANISM_PLUS)
            self._send(auth.authentication_sasl_continue(scram.first(first)), flush=True)
            self._send(auth.authentication_sasl_final(scram.final(self._auth_response("SASL"))))
        except auth.AuthError as exc:
            log.info("authentication failed: %s %s%s", exc.sqlstate, exc.message, f" ({exc.detail})" if exc.detail else "")
            self._send(codec.error_response("FATAL", exc.sqlstate, exc.message, detail=exc.detail), flush=True)
            raise _Closed(exc.message) from exc

    def _auth_response(self, what: str) -> bytes:
        head = self._read(5)
        (length,) = struct.unpack("!i", head[1:5])
        if head[:1] != b"p":
            raise auth.ProtocolViolation(f"expected {what} response, got message type {head[0]}")
        if not 4 <= length <= auth.MAX_TOKEN:
            raise auth.ProtocolViolation(f"invalid {what} response length {length}")
        return self._read(length - 4)

    def _login(self, params: dict[str, str]) -> ConnState | None:
        if not self.server.take_slot():
            self._fatal("53300", "sorry, too many clients already")
        self._slot = True
        if self.server.proxy is not None:  # proxy mode: the whole session is relayed to the upstream
            self._give_turn()
            self.server.proxy.serve(self, params)
            return None
        self._authenticate(params.get("user", ""))
        self.server.login_clock.done(self)
        self._take_turn()
        try:
            state, out = self._new_session(params)
        finally:
            self._give_turn()
        self._send(out, flush=True)
        return state

    def _take_turn(self) -> None:
        if not self._turn:
            self._turn = self.server.startup_lane.take(GATE_PATIENCE)

    def _give_turn(self) -> None:
        if self._turn:
            self._turn = False
            self.server.startup_lane.give()

    def _new_session(self, params: dict[str, str]) -> tuple[ConnState, bytes]:
        """The session of a logged-in client and the start-up messages it is owed."""
        app = self.server.app
        session = app.new_session(user=params.get("user", ""), database=params.get("database", ""))
        for key, value in params.items():
            name = key.lower()
            if name in pgparameters.SETTABLE:
                try:
                    session.assign(name, value)
                except errors.MeansqlError as exc:
                    session.close()
                    self._fatal(exc.sqlstate, exc.message)
        session.take_reports()  # start-up sends every reported parameter below
        state = self.server.register(session)
        self._state = state
        session.find_portal = lambda name: self._portal_cursor(state, name)
        session.notice = lambda severity, message: self._send(codec.notice_response(severity, message), flush=True)
        session.notify = lambda channel, payload: self._send(codec.notification_response(state.pid, channel, payload),
                                                             flush=True)
        out = bytearray(codec.authentication_ok())
        for name in ("server_version", "server_encoding", "client_encoding", "DateStyle", "TimeZone",
                     "integer_datetimes", "standard_conforming_strings", "application_name", "IntervalStyle",
                     "is_superuser"):
            out += codec.parameter_status(name, session.settings[name.lower()])
        out += codec.backend_key_data(state.pid, state.secret)
        out += codec.ready_for_query(session.tx.value)
        return state, bytes(out)

    def _next_message(self, idle_limit: float | None = None) -> tuple[int, bytes] | None:
        """The next frontend message (type byte, body), its type and length checked before the body is read.

        None when the peer closed the connection between messages. idle_limit: seconds to wait for it inside a
        transaction block (idle_in_transaction_session_timeout), after which the connection ends with 25P03.
        """
        if idle_limit is None:
            head = self.rfile.read(5)
        else:
            self.request.settimeout(idle_limit)
            try:
                head = self.rfile.read(5)
            except TimeoutError:
                self._fatal("25P03", "terminating connection due to idle-in-transaction timeout")
            finally:
                self.request.settimeout(None)
        if not head:
            return None
        if len(head) < 5:
            raise _Closed("truncated message header")
        kind = head[0]
        (length,) = struct.unpack("!i", head[1:5])
        if kind not in codec.KNOWN_TYPES:
            self._fatal("08P01", f"invalid frontend message type {kind}")
        cap = codec.SMALL_MESSAGE_LIMIT if kind in codec.SMALL_TYPES else self.server.max_message_size
        if length < 4 or length > cap:
            # PostgreSQL logs this and closes without a word: the stream is no longer framed.
            raise _Closed(f"invalid message length {length} for message type {chr(kind)!r}")
        return kind, self._read(length - 4)

    def _loop(self, state: ConnState) -> None:
        handlers: dict[int, Callable[[ConnState, bytes], None]] = {
            ord("Q"): self._query,
            ord("P"): self._parse,
            ord("B"): self._bind,
            ord("D"): self._describe,
            ord("E"): self._execute,
            ord("C"): self._close,
            ord("H"): lambda s, b: self.flush(),
            ord("S"): self._sync,
            # CopyData/CopyDone/CopyFail outside COPY: what is left of a COPY that failed; ignored.
            ord("d"): lambda s, b: None,
            ord("c"): lambda s, b: None,
            ord("f"): lambda s, b: None,
        }
        young_until = time.monotonic() + YOUNG_SECONDS
        while True:
            message = self._next_message(state.session.idle_in_transaction_limit())
            if message is None:
                return
            kind, body = message
            if kind == ord("X"):
                return
            handler = handlers.get(kind)
            if handler is None:
                self._fatal("08P01", f"unexpected message type {chr(kind)!r}")
                return
            if state.skipping and kind != ord("S"):
                continue
            if young_until and time.monotonic() < young_until:
                self._take_turn()  # a new connection's work takes turns with other new ones
            else:
                young_until = 0.0
            try:
                handler(state, body)
            except (ValueError, UnicodeDecodeError, struct.error) as exc:
                self._fatal("08P01", f"invalid message format: {exc}")
            finally:
                self._give_turn()

    # -- errors ---------------------------------------------------------------------
    def _error(self, exc: BaseException, sql: str | None = None) -> None:
        f = errors.translate(exc, sql)
        if f.sqlstate == "XX000":
            log.exception("internal error", exc_info=exc)
        else:
            log.info("statement failed: %s %.500s", f.sqlstate, f.message)  # a message may quote 65,535 names
        self._send(codec.error_response(f.severity, f.sqlstate, f.message, f.hint, f.position, f.detail))

    # -- simple query -------------------------------------------------------------
    def _query(self, state: ConnState, body: bytes) -> None:
        session = state.session
        try:
            try:
                sql = body.rstrip(b"\x00").decode("utf-8")
            except UnicodeDecodeError as exc:
                raise errors.CharacterNotInRepertoire(
                    f'invalid byte sequence for encoding "UTF8": 0x{body[exc.start:exc.start + 1].hex()}') from exc
            statements = session.split(sql)
        except Exception as exc:
            self._error(exc)
            statements = None
        if statements is not None:
            if not statements:
                self._send(codec.empty_query())
            for stmt in statements:
                try:
                    if stmt.kind is Kind.COPY and self._copy(state, stmt):
                        continue
                    result = session.run(stmt)
                    self._send_result(result, describe=True, formats=[1] if result.binary else [], key=stmt.text)
                except _Closed:
                    raise
                except Exception as exc:
                    self._error(exc, stmt.text)
                    break
        self._ready(state)

    def _ready(self, state: ConnState) -> None:
        """ParameterStatus for parameters SET since the last one (as Postgres reports them), then ReadyForQuery."""
        session = state.session
        session.deliver_notifications()
        out = bytearray()
        for name, value in session.take_reports().items():
            out += codec.parameter_status(name, value)
        out += codec.ready_for_query(session.tx.value)
        self._send(bytes(out), flush=True)

    # -- COPY ---------------------------------------------------------------------------
    def _copy(self, state: ConnState, stmt: Statement) -> bool:
        """Run COPY FROM STDIN / TO STDOUT; False for other COPY forms (DuckDB runs those)."""
        session = state.session
        try:
            spec = copy.parse(stmt)
            if spec is None:
                return False
            if spec.direction == "out":
                self._copy_out(session, spec)
            else:
                self._copy_in(session, spec)
        except _Closed:
            raise
        except Exception:
            copy.mark_failed(session)
            raise
        return True

    def _copy_out(self, session: Session, spec: copy.CopySpec) -> None:
        stmts = split(spec.source_sql())
        if len(stmts) != 1:
            raise errors.MultipleCommands("COPY takes one query")
        result = session.run(stmts[0])
        if result.columns is None:
            raise copy.CopySyntaxError("COPY query must return rows")
        names = [name for name, _ in result.columns]
        self._send(codec.copy_out_response(len(names)))
        count = -1 if spec.header else 0
        for data in copy.out_rows(spec, names, result.rows or iter(())):
            self._send(codec.copy_data(data))
            count += 1
        self._send(codec.copy_done())
        self._send(codec.command_complete(f"COPY {count}"))

    def _copy_in(self, session: Session, spec: copy.CopySpec) -> None:
        session.mark_written()
        columns = copy.target_columns(session, spec)
        sink = copy.CopyIn(spec, [name for name, _ in columns], [oid for _, oid in columns],
                           spool_dir=session.files.spool_dir if session.files is not None else None)
        try:
            self._send(codec.copy_in_response(len(sink.names)), flush=True)
            failure = self._receive_copy(sink)
            if failure is not None:
                raise copy.fail(session, failure)
            count = sink.load(session)
        finally:
            sink.close()
        self._send(codec.command_complete(f"COPY {count}"))

    def _receive_copy(self, sink: copy.CopyIn) -> str | None:
        """CopyData into the sink until CopyDone (None) or CopyFail (its message)."""
        self._give_turn()  # never held while waiting for the client
        while True:
            message = self._next_message()
            if message is None:
                raise _Closed("connection closed during COPY")
            kind, body = message
            if kind == ord("d"):
                sink.write(body)
            elif kind == ord("c"):
                return None
            elif kind == ord("f"):
                return body.rstrip(b"\x00").decode("utf-8", "replace")
            elif kind == ord("X"):
                raise _Closed("terminated during COPY")
            elif kind not in (ord("H"), ord("S")):  # Flush and Sync are ignored during COPY, as Postgres does
                self._send(codec.error_response("ERROR", "08P01",
                                                f"unexpected message type 0x{kind:02X} during COPY from stdin"))
                self._fatal("08P01", "terminating connection because protocol synchronization was lost")

    def _send_result(self, result: Result, *, describe: bool, formats: Sequence[int],
                     rows: Iterator[Sequence[Any]] | None = None, limit: int = 0, sent: int = 0,
                     key: str | None = None) -> int | None:
        """Send rows and CommandComplete; returns the row count if the limit suspended the portal.

        key: the statement's text, under which the server remembers whether it returns only a few rows.
        """
        if result.columns is None:
            self._send(codec.command_complete(result.tag))
            return None
        if describe:
            self._send(codec.row_description(result.columns, formats, result.origins))
        oids = [oid for _, oid in result.columns]
        fmts = [formats[i] if i < len(formats) else (formats[0] if len(formats) == 1 else 0)
                for i in range(len(oids))]
        whole = (result.source is not None or result.batches is not None) and not limit and not sent
        if (whole and not any(fmts) and result.duck_types and all(t in codec.BULK_TEXT_TYPES for t in result.duck_types)
                and not (result.batches is None and key is not None and self.server.few_rows.get(key))):
            # Framed in bulk from Arrow batches: no Python step per row.
            count = 0
            batches = result.batches if result.batches is not None else result.source.to_arrow_reader(BULK_ROWS)
            for batch in batches:
                if batch.num_rows:
                    self._send(codec.data_rows(batch.columns))
                    count += batch.num_rows
        else:
            count = self._send_rows(rows if rows is not None else (result.rows or iter(())), oids, fmts, limit)
            if limit and count >= limit:
                return sent + count
        if whole and key is not None:
            self.server.note_rows(key, count)
        tag = result.tag
        if result.count_rows:
            tag = f"{tag} {count}"  # rows of this Execute, as PostgreSQL counts a resumed portal
        self._send(codec.command_complete(tag))
        return None

    def _send_rows(self, source: Iterator[Sequence[Any]], oids: list[int], fmts: list[int], limit: int) -> int:
        """DataRows one row at a time; stops after `limit` rows when limit is set."""
        options = self._text_options
        encoders = [_encoder(oid, fmt, options) for oid, fmt in zip(oids, fmts)]
        out = bytearray()
        count = 0
        for row in source:
            out += codec.data_row([None if v is None else enc(v) for enc, v in zip(encoders, row)])
            count += 1
            if len(out) >= FLUSH_AT:
                self._send(bytes(out))
                out.clear()
            if limit and count >= limit:
                break
        self._send(bytes(out))
        return count

    # -- extended protocol ------------------------------------------------------------
    def _parse(self, state: ConnState, body: bytes) -> None:
        name, query, oids = codec.parse_parse(body)
        session = state.session
        try:
            stmts = session.split(query)
            if len(stmts) > 1:
                raise errors.MultipleCommands("cannot insert multiple commands into a prepared statement")
            stmt = stmts[0] if stmts else None
            if stmt is not None:
                session.check_not_failed(stmt)
            inferred = session.parameter_types(stmt, oids)
            prepared = Prepared(stmt, inferred if inferred is not None else oids, inferred is not None)
            key = (query, tuple(oids))
            if key not in state.analysed or session.tx is TxState.FAILED:
                _analyse(session, prepared)
                if len(state.analysed) >= 256:
                    state.analysed.clear()
                state.analysed.add(key)
            if name and name in state.statements:
                raise errors.DuplicatePreparedStatement(f'prepared statement "{name}" already exists')
            state.statements[name] = prepared
            self._send(codec.parse_complete())
        except Exception as exc:
            self._fail_extended(state, exc, query)

    def _bind(self, state: ConnState, body: bytes) -> None:
        bind = codec.parse_bind(body)
        try:
            prepared = state.statements.get(bind.statement)
            if prepared is None:
                raise errors.UndefinedPreparedStatement(f'prepared statement "{bind.statement}" does not exist')
            if prepared.statement is not None:
                state.session.check_not_failed(prepared.statement)
            if prepared.checked and len(bind.values) != len(prepared.param_oids):
                raise errors.ProtocolError(
                    f"bind message supplies {len(bind.values)} parameters, but prepared statement "
                    f'"{bind.statement}" requires {len(prepared.param_oids)}')
            if len(bind.param_formats) not in (0, 1, len(bind.values)):
                raise errors.ProtocolError(
                    f"bind message has {len(bind.param_formats)} parameter formats but {len(bind.values)} parameters")
            params = []
            oids, formats = prepared.param_oids, bind.param_formats
            only = formats[0] if len(formats) == 1 else 0
            for i, raw in enumerate(bind.values):
                oid = oids[i] if i < len(oids) else 0
                fmt = formats[i] if i < len(formats) else only
                if raw is None:
                    params.append(None)
                elif fmt == 1:
                    params.append(codec.decode_binary(raw, oid))
                else:
                    params.append(types.parse_text_param(raw.decode("utf-8"), oid))
            if bind.portal and bind.portal in state.portals:
                raise errors.DuplicateCursor(f'cursor "{bind.portal}" already exists')
            state.portals[bind.portal] = Portal(prepared, params, bind.result_formats)
            self._send(codec.bind_complete())
        except Exception as exc:
            self._fail_extended(state, exc)

    def _describe(self, state: ConnState, body: bytes) -> None:
        what, name = body[:1], body[1:].rstrip(b"\x00").decode("utf-8")
        session = state.session
        try:
            if what == b"S":
                prepared = state.statements.get(name)
                if prepared is None:
                    raise errors.UndefinedPreparedStatement(f'prepared statement "{name}" does not exist')
                self._check_describe(state, prepared.statement)
                columns = prepared.columns  # found at Parse when DuckDB could tell
                if columns is None and prepared.statement is not None:
                    try:
                        columns = session.describe(prepared.statement, None, prepared.param_oids)
                    except CannotDescribe:
                        columns = None
                out = codec.parameter_description(prepared.param_oids)
                origins = session.origins(prepared.statement, columns) if columns else None
                self._send(out + (codec.row_description(columns, [], origins) if columns else codec.no_data()))
            elif what == b"P":
                portal = state.portals.get(name)
                declared = session.cursors.get(name) if portal is None else None
                if declared is not None:  # a cursor DECLAREd in SQL is a portal too
                    self._send(codec.row_description(declared.columns, [1] if declared.binary else []))
                    return
                if portal is None:
                    raise errors.UndefinedCursor(f'portal "{name}" does not exist')
                self._check_describe(state, portal.prepared.statement)
                columns = self._portal_columns(state, portal)
                origins = session.origins(portal.prepared.statement, columns) if columns else None
                self._send(codec.row_description(columns, portal.result_formats, origins) if columns
                           else codec.no_data())
                portal.described = True
            else:
                raise ValueError(f"invalid Describe target {what!r}")
        except ValueError:
            raise
        except Exception as exc:
            self._fail_extended(state, exc)

    def _check_describe(self, state: ConnState, stmt: Statement | None) -> None:
        """Postgres refuses to describe a row-returning statement in a failed transaction (25P02)."""
        if stmt is not None and stmt.kind in (Kind.ROWS, Kind.SHOW):
            state.session.check_not_failed(stmt)

    def _portal_columns(self, state: ConnState, portal: Portal) -> list[tuple[str, int]] | None:
        """A portal's result columns: from DuckDB's binder where it can tell, else by running it (once)."""
        stmt = portal.prepared.statement
        if stmt is None:
            return None
        if portal.result is None:
            try:
                return state.session.describe(stmt, portal.params, portal.prepared.param_oids)
            except CannotDescribe:
                self._run_portal(state, portal)
        assert portal.result is not None
        return portal.result.columns

    def _portal_cursor(self, state: ConnState, name: str) -> cursors.Cursor | None:
        """A protocol portal as a cursor, for FETCH and MOVE in SQL (asyncpg's Cursor.forward)."""
        portal = state.portals.get(name) if name else None
        if portal is None or portal.prepared.statement is None or portal.prepared.statement.kind is not Kind.ROWS:
            return None
        self._run_portal(state, portal)
        if portal.result is None or portal.result.columns is None:
            return None
        # The rest is kept apart from the session's connection, which the next statement reuses.
        portal.rows = iter(list(portal.rows or ()))

        def forget() -> None:  # CLOSE in SQL closes the portal
            state.portals.pop(name, None)

        return cursors.Cursor(name, portal.result.columns, portal.rows, hold=False, binary=False,
                              in_transaction=True, on_close=forget)

    def _run_portal(self, state: ConnState, portal: Portal) -> None:
        stmt = portal.prepared.statement
        if stmt is not None and stmt.kind is Kind.COPY and copy.parse(stmt) is not None:
            return  # COPY runs at Execute; Describe says NoData
        if portal.result is None and portal.prepared.statement is not None:
            portal.result = state.session.run(portal.prepared.statement, portal.params)
            portal.rows = portal.result.rows

    def _execute(self, state: ConnState, body: bytes) -> None:
        r = codec.Reader(body)
        name, limit = r.cstr(), r.int32()
        portal = state.portals.get(name)
        try:
            if portal is None:
                raise errors.UndefinedCursor(f'portal "{name}" does not exist')
            if portal.prepared.statement is None:
                self._send(codec.empty_query())
                return
            if portal.prepared.statement.kind is Kind.COPY and self._copy(state, portal.prepared.statement):
                return
            if portal.done:
                # Postgres answers a finished portal with an empty completion of the same command.
                assert portal.result is not None
                self._send(codec.command_complete(
                    portal.result.tag if portal.result.columns is None else "SELECT 0"))
                return
            self._run_portal(state, portal)
            assert portal.result is not None
            suspended = self._send_result(portal.result, describe=False, formats=portal.result_formats,
                                          rows=portal.rows, limit=max(limit, 0), sent=portal.sent,
                                          key=portal.prepared.statement.text)
            if suspended is not None:
                if portal.sent == 0 and portal.rows is not None:
                    # Keep the rest apart from the session's cursor, which the next statement reuses.
                    portal.rows = iter(list(portal.rows))
                portal.sent = suspended
                self._send(codec.portal_suspended())
            else:
                portal.done = True
        except _Closed:
            raise
        except Exception as exc:
            sql = portal.prepared.statement.text if portal and portal.prepared.statement else None
            self._fail_extended(state, exc, sql)

    def _close(self, state: ConnState, body: bytes) -> None:
        what, name = body[:1], body[1:].rstrip(b"\x00").decode("utf-8")
        if what == b"S":
            state.statements.pop(name, None)
        elif what == b"P":
            state.portals.pop(name, None)
            declared = state.session.cursors.pop(name, None)  # a cursor DECLAREd in SQL is a portal too
            if declared is not None:
                declared.close()
        else:
            raise ValueError(f"invalid Close target {what!r}")
        self._send(codec.close_complete())

    def _sync(self, state: ConnState, body: bytes) -> None:
        state.skipping = False
        state.portals.pop("", None)
        if state.session.tx.value == b"I":
            # Portals live until the end of their transaction.
            state.portals.clear()
        self._ready(state)

    def _fail_extended(self, state: ConnState, exc: BaseException, sql: str | None = None) -> None:
        self._error(exc, sql)
        state.session.fail()
        state.skipping = True
        self.flush()  # as Postgres does: a client waiting on Flush (asyncpg) must see the error now

    @property
    def _text_options(self) -> types.TextOptions:
        state = getattr(self, "_state", None)
        if state is None:
            return types.DEFAULT
        try:
            digits = int(state.session.settings.get("extra_float_digits", "1"))
        except ValueError:
            digits = 1
        return types.TextOptions(extra_float_digits=digits)


def _encoder(oid: int, fmt: int, options: types.TextOptions) -> Callable[[Any], bytes]:
    """How one column's values become bytes on the wire, chosen once per result."""
    if fmt == 1:
        return lambda v: codec.encode_binary(v, oid)
    if oid in (types.INT2, types.INT4, types.INT8):
        return lambda v: str(v).encode("utf-8")
    return lambda v: v.encode("utf-8") if type(v) is str else types.to_text(v, oid, options).encode("utf-8")


def _analyse(session: Session, prepared: Prepared) -> None:
    """What PostgreSQL reports at Parse: syntax errors, an aborted transaction, unknown tables and columns.

    Clients parse the same text again for every execution; a text that passed once on this connection is not
    analysed again (an error from a later schema change then comes at Execute).
    """
    stmt = prepared.statement
    if stmt is None:
        return
    registry = session.executor.registry
    # A semantic statement is checked when it runs: describing it would open a query context (and its NOTICEs).
    semantic = dialect.has_semantic_words(stmt.text, registry.infix, registry.by_function.keys())
    if stmt.words[:1] and stmt.words[0] in cursors.SESSION_WORDS:
        return  # the session reads these itself
    if stmt.kind in (Kind.OTHER, Kind.DML) and not semantic:
        session.cursor.extract_statements(stmt.text)  # syntax only; DuckDB's ParserException is 42601
    if stmt.kind is Kind.ROWS and not semantic:
        try:
            prepared.columns = session.describe(stmt, None, prepared.param_oids)
        except CannotDescribe as exc:
            cause = exc.__cause__
            if isinstance(cause, (duckdb.ParserException, duckdb.CatalogException, duckdb.BinderException)):
                raise cause from None
            # Errors that need the parameters' values surface at Bind or Execute instead.
            log.debug("statement not described at Parse: %s", exc)


class MeansqlServer(BuenaVistaServer):
    """Threaded pg-wire server; one thread per connection."""

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 overflows while the accept thread starts handler threads: connects
    # then wait for a SYN retransmit (1 s, 3 s, ...). PostgreSQL listens with 2 × max_connections.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], app: Any, *, max_message_size: int = 1 << 30,
                 users: dict[str, auth.Verifier] | None = None, ssl_context: ssl.SSLContext | None = None,
                 max_connections: int = 100, login_timeout: float = 60.0, proxy: Proxy | None = None,
                 tls_end_point: bytes | None = None) -> None:
        super().__init__(address, conn=None)  # type: ignore[arg-type]
        self.proxy = proxy
        self.RequestHandlerClass = MeansqlHandler
        self.app = app
        self.max_message_size = max_message_size
        self.users = users or {}
        self.mock_nonce = auth.mock_nonce(self.users.values())
        self.ssl_context = ssl_context
        self.tls_end_point = tls_end_point if ssl_context is not None else None  # SCRAM-SHA-256-PLUS binding data
        self.max_connections = max_connections
        # Sockets before start-up is done are not sessions (as in PostgreSQL), but they are threads: cap them too.
        self.max_sockets = 2 * max_connections + 256
        self.login_clock = LoginClock(login_timeout)
        self.workers = Workers("meansql-connection")
        # The work of new connections (their start-up packet, their session, and their messages in their first
        # second) runs one at a time, and while it keeps coming it takes at most YOUNG_SHARE of the wall clock:
        # each thread that wants the interpreter lock makes every other wait longer, and a storm of new or
        # malformed connections would otherwise crowd established sessions out (and keep a core busy, so the
        # kernel too makes their wake-ups wait). A turn is held only while working, never while waiting for the
        # client's bytes. A connection goes ahead without a turn when the one held has lasted LONG_TURN already
        # (a statement at work, say a first query waiting for the model), and when it waited GATE_PATIENCE.
        self.startup_lane = Lane(YOUNG_SHARE, YOUNG_PAUSE, LONG_TURN)
        self._states: dict[int, ConnState] = {}
        self._lock = threading.Lock()
        self._sessions = 0
        self._sockets = 0
        self.few_rows: dict[str, bool] = {}  # by statement text: did its last whole result have few rows?

    def verify_request(self, request: Any, client_address: Any) -> bool:
        # Where we listen is the user's choice (--host); how many sockets we hold is ours.
        with self._lock:
            if self._sockets >= self.max_sockets:
                refuse = True
            else:
                self._sockets += 1
                refuse = False
        if refuse:
            try:
                request.sendall(codec.error_response("FATAL", "53300", "sorry, too many clients already"))
            except OSError:
                pass  # it is closed next either way
            return False
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        self.workers.submit(lambda: self.process_request_thread(request, client_address))

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._sockets -= 1

    def note_rows(self, text: str, count: int) -> None:
        """Remember whether a statement's text returned only a few rows: its next result then goes out row by
        row, since an Arrow reader costs more to set up (about 0.3 ms) than a handful of rows take one by one."""
        few = count < codec.SMALL_BATCH
        if self.few_rows.get(text) is not few:
            if len(self.few_rows) >= 4096:
                self.few_rows.clear()
            self.few_rows[text] = few

    def take_slot(self) -> bool:
        with self._lock:
            if self._sessions >= self.max_connections:
                return False
            self._sessions += 1
            return True

    def release_slot(self) -> None:
        with self._lock:
            self._sessions -= 1

    def server_close(self) -> None:
        self.login_clock.stop()
        super().server_close()

    def register(self, session: Session) -> ConnState:
        with self._lock:
            pid = secrets.randbelow(2**31 - 2) + 1
            while pid in self._states:
                pid = secrets.randbelow(2**31 - 2) + 1
            state = ConnState(session, pid, secrets.randbits(32))
            self._states[pid] = state
        return state

    def forget(self, state: ConnState) -> None:
        with self._lock:
            self._states.pop(state.pid, None)

    def cancel(self, pid: int, secret: int) -> None:
        if self.proxy is not None:
            self.proxy.cancel(pid, secret)
            return
        with self._lock:
            state = self._states.get(pid)
        if state is not None and secrets.compare_digest(state.secret.to_bytes(4, "big"), secret.to_bytes(4, "big")):
            state.session.cancel()



class Lane:
    """Work that takes turns, one at a time; while others wait for a turn, the lane rests after each turn so that
    it takes at most `share` of the wall clock. The rest is in proportion to the turn's length, at most `max_pause`
    seconds, and only when another turn was wanted meanwhile: a lone client never waits for it. A turn held for
    `long_turn` seconds already is not waited for: take() then goes ahead without one.

    Waiters sleep in a plain lock, not in Python code (as in a threading.Semaphore, whose every release and time-out
    runs Python under the interpreter lock), and the lane rests with its lock held, so nothing runs in the pause.
    """

    def __init__(self, share: float, max_pause: float, long_turn: float) -> None:
        self._lock = threading.Lock()
        self._count = threading.Lock()  # guards _waiting
        self._waiting = 0  # threads in take() that found the lane held
        self._rest = 1.0 / share - 1.0
        self._max_pause = max_pause
        self._long_turn = long_turn
        self._free_at = 0.0  # monotonic time the lane's rest ends
        self._since = 0.0  # when the turn being held started

    def take(self, patience: float) -> bool:
        """True with a turn held (give it back with give()), False when the turn held is a long one or none came
        within `patience` seconds."""
        if not self._lock.acquire(blocking=False):
            if time.monotonic() - self._since >= self._long_turn:
                return False
            with self._count:
                self._waiting += 1
            try:
                if not self._lock.acquire(timeout=patience):
                    return False
            finally:
                with self._count:
                    self._waiting -= 1
        self._since = now = time.monotonic()  # the rest counts as part of the turn for those who come meanwhile
        if self._free_at > now:
            time.sleep(self._free_at - now)
            self._since = time.monotonic()
        return True

    def give(self) -> None:
        now = time.monotonic()
        if self._waiting:
            self._free_at = now + min((now - self._since) * self._rest, self._max_pause)
        self._lock.release()


class Workers:
    """Threads that serve connections, kept a little while for the next one.

    Starting a thread costs the accepting thread a clone and a hand-shake with the new thread, once per
    connection; a burst of short connections (a pool opening, a scanner, fuzzing) pays it once per worker
    instead. A worker idle for `idle_timeout` seconds ends, so the thread count goes back down when clients leave.
    """

    def __init__(self, name: str, idle_timeout: float = 2.0) -> None:
        self.name = name
        self.idle_timeout = idle_timeout
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0  # workers waiting for a job that none has been handed yet
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._jobs.put(job)
                return
        threading.Thread(target=self._work, args=(job,), name=self.name, daemon=True).start()

    def _work(self, job: Callable[[], None] | None) -> None:
        while job is not None:
            job()
            job = None  # its handler and socket go now, not when the next job comes
            with self._lock:
                self._idle += 1
            job = self._next()

    def _next(self) -> Callable[[], None] | None:
        try:
            return self._jobs.get(timeout=self.idle_timeout)
        except queue.Empty:
            with self._lock:
                try:
                    return self._jobs.get_nowait()  # handed over just as the wait ended
                except queue.Empty:
                    self._idle -= 1
                    return None


class LoginClock:
    """Shuts down sockets that have not finished start-up and authentication in time.

    PostgreSQL's authentication_timeout; one thread for all connections. Shutting
    the socket down wakes the handler's blocked read, which then ends the connection.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._deadlines: dict[int, tuple[float, socket.socket]] = {}
        self._fired: dict[int, socket.socket] = {}  # shut down; kept until done() in case start() brings a new socket
        self._cond = threading.Condition()
        self._stopped = False
        self._wakes_at = 0.0  # when the clock thread wakes next (monotonic)
        self._thread = threading.Thread(target=self._run, name="meansql-login-clock", daemon=True)
        self._thread.start()

    def start(self, key: object, sock: socket.socket) -> None:
        """Watch sock (again after a TLS handshake replaced it, keeping the first deadline)."""
        with self._cond:
            deadline = self._deadlines.get(id(key), (time.monotonic() + self.timeout, sock))[0]
            if id(key) in self._fired:
                deadline = 0.0  # past its time already
            self._deadlines[id(key)] = (deadline, sock)
            if deadline < self._wakes_at:
                # Only a deadline before the one the clock sleeps towards wakes it: with one timeout for all,
                # that is almost never, so a storm of connections does not wake this thread once each.
                self._cond.notify()

    def done(self, key: object) -> None:
        with self._cond:
            self._deadlines.pop(id(key), None)
            self._fired.pop(id(key), None)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                expired = [k for k, (deadline, _) in self._deadlines.items() if deadline <= now]
                for k in expired:
                    _, sock = self._deadlines.pop(k)
                    self._fired[k] = sock
                    log.info("closing a connection that did not log in within %s s", self.timeout)
                    try:
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # not SSLSocket.shutdown: no TLS state change
                    except OSError:
                        pass  # already closed by the peer
                nearest = min((d for d, _ in self._deadlines.values()), default=now + 3600)
                self._wakes_at = max(nearest, now + 0.01)
                self._cond.wait(self._wakes_at - now)
