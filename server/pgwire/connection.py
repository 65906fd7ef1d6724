"""The connection: buenavista's socket server and handler, with the parts that fall short replaced.

Replaced from buenavista 0.5.0: the message loop (type byte and length checked
before a body is read), start-up (SSLRequest refused cleanly, cancel keys from
``secrets``, a cancel interrupts the query instead of closing the session),
errors (SQLSTATE, hint, position), NOTICEs, multi-statement simple queries and
the extended protocol (skip to Sync after an error).
"""

from __future__ import annotations

import logging
import secrets
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from buenavista.postgres import BuenaVistaHandler, BuenaVistaServer

from server import errors
from server.pgwire import codec, types
from server.session import Result, Session
from server.statements import Statement

log = logging.getLogger(__name__)

FLUSH_AT = 64 * 1024


class _Closed(Exception):
    """The peer went away or must be dropped."""


@dataclass
class Prepared:
    statement: Statement | None  # None: the empty query
    param_oids: list[int]


@dataclass
class Portal:
    prepared: Prepared
    params: list[Any]
    result_formats: list[int]
    result: Result | None = None
    rows: Iterator[Sequence[Any]] | None = None
    sent: int = 0
    described: bool = False


@dataclass
class ConnState:
    session: Session
    pid: int
    secret: int
    statements: dict[str, Prepared] = field(default_factory=dict)
    portals: dict[str, Portal] = field(default_factory=dict)
    skipping: bool = False  # after an error in extended mode, until Sync


class MeansqlHandler(BuenaVistaHandler):
    """One client connection."""

    server: MeansqlServer

    def setup(self) -> None:
        super().setup()
        self._out = bytearray()
        self._wlock = threading.Lock()

    # -- I/O --------------------------------------------------------------
    def _read(self, n: int) -> bytes:
        data = self.rfile.read(n)
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
            if state is not None:
                self.server.forget(state)
                state.session.close()

    def _startup(self) -> ConnState | None:
        while True:
            (length,) = struct.unpack("!i", self._read(4))
            if not codec.STARTUP_MIN <= length <= codec.STARTUP_MAX:
                raise _Closed(f"invalid startup packet length {length}")
            body = self._read(length - 4)
            (code,) = struct.unpack("!i", body[:4])
            if code in (codec.SSL_REQUEST, codec.GSS_REQUEST):
                self._send(b"N", flush=True)
                continue
            if code == codec.CANCEL_REQUEST:
                if len(body) == 12:
                    pid, secret = struct.unpack("!II", body[4:12])
                    self.server.cancel(pid, secret)
                return None
            if code != codec.PROTOCOL_3:
                self._fatal("0A000", f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
            try:
                params = codec.parse_startup(body[4:])
            except UnicodeDecodeError:
                self._fatal("08P01", "invalid startup packet: parameters are not UTF-8")
            return self._login(params)

    def _login(self, params: dict[str, str]) -> ConnState:
        app = self.server.app
        session = app.new_session(user=params.get("user", ""), database=params.get("database", ""))
        if "application_name" in params:
            session.settings["application_name"] = params["application_name"]
        state = self.server.register(session)
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
        self._send(bytes(out), flush=True)
        return state

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
        }
        limit = self.server.max_message_size
        while True:
            head = self.rfile.read(5)
            if not head:
                return
            if len(head) < 5:
                raise _Closed("truncated message header")
            kind = head[0]
            (length,) = struct.unpack("!i", head[1:5])
            if kind not in codec.KNOWN_TYPES:
                self._fatal("08P01", f"invalid frontend message type {kind}")
            cap = codec.SMALL_MESSAGE_LIMIT if kind in codec.SMALL_TYPES else limit
            if length < 4 or length > cap:
                self._fatal("08P01", f"invalid message length {length} for message type {chr(kind)!r}")
            body = self._read(length - 4)
            if kind == ord("X"):
                return
            handler = handlers.get(kind)
            if handler is None:
                self._fatal("08P01", f"unexpected message type {chr(kind)!r}")
                return
            if state.skipping and kind != ord("S"):
                continue
            try:
                handler(state, body)
            except (ValueError, UnicodeDecodeError, struct.error) as exc:
                self._fatal("08P01", f"invalid message format: {exc}")

    # -- errors ---------------------------------------------------------------------
    def _error(self, exc: BaseException) -> None:
        f = errors.translate(exc)
        if f.sqlstate == "XX000":
            log.exception("internal error", exc_info=exc)
        else:
            log.info("statement failed: %s %s", f.sqlstate, f.message)
        self._send(codec.error_response(f.severity, f.sqlstate, f.message, f.hint, f.position, f.detail))

    # -- simple query -------------------------------------------------------------
    def _query(self, state: ConnState, body: bytes) -> None:
        session = state.session
        try:
            sql = body.rstrip(b"\x00").decode("utf-8")
            statements = session.split(sql)
        except Exception as exc:
            self._error(exc)
            statements = None
        if statements is not None:
            if not statements:
                self._send(codec.empty_query())
            for stmt in statements:
                try:
                    result = session.run(stmt)
                    self._send_result(result, describe=True, formats=[])
                except Exception as exc:
                    self._error(exc)
                    break
        session.deliver_notifications()
        self._send(codec.ready_for_query(session.tx.value), flush=True)

    def _send_result(self, result: Result, *, describe: bool, formats: Sequence[int],
                     rows: Iterator[Sequence[Any]] | None = None, limit: int = 0, sent: int = 0) -> int | None:
        """Send rows and CommandComplete; returns the row count if the limit suspended the portal."""
        if result.columns is None:
            self._send(codec.command_complete(result.tag))
            return None
        if describe:
            self._send(codec.row_description(result.columns, formats))
        oids = [oid for _, oid in result.columns]
        fmts = [formats[i] if i < len(formats) else (formats[0] if len(formats) == 1 else 0)
                for i in range(len(oids))]
        encoders = [
            (lambda v, o=oid: codec.encode_binary(v, o)) if fmt == 1 else
            (lambda v: types.to_text(v).encode("utf-8"))
            for oid, fmt in zip(oids, fmts)
        ]
        source = rows if rows is not None else (result.rows or iter(()))
        count = 0
        for row in source:
            self._send(codec.data_row([None if v is None else enc(v) for enc, v in zip(encoders, row)]))
            count += 1
            if limit and count >= limit:
                return sent + count
        tag = result.tag
        if result.count_rows:
            tag = f"{tag} {sent + count}"
        self._send(codec.command_complete(tag))
        return None

    # -- extended protocol ------------------------------------------------------------
    def _parse(self, state: ConnState, body: bytes) -> None:
        name, query, oids = codec.parse_parse(body)
        try:
            stmts = state.session.split(query)
            if len(stmts) > 1:
                raise errors.MultipleCommands("cannot insert multiple commands into a prepared statement")
            state.statements[name] = Prepared(stmts[0] if stmts else None, oids)
            self._send(codec.parse_complete())
        except Exception as exc:
            self._fail_extended(state, exc)

    def _bind(self, state: ConnState, body: bytes) -> None:
        bind = codec.parse_bind(body)
        try:
            prepared = state.statements.get(bind.statement)
            if prepared is None:
                raise errors.UndefinedPreparedStatement(f'prepared statement "{bind.statement}" does not exist')
            params = []
            for i, raw in enumerate(bind.values):
                oid = prepared.param_oids[i] if i < len(prepared.param_oids) else 0
                fmt = bind.param_formats[i] if i < len(bind.param_formats) else (
                    bind.param_formats[0] if len(bind.param_formats) == 1 else 0)
                if raw is None:
                    params.append(None)
                elif fmt == 1:
                    params.append(codec.decode_binary(raw, oid))
                else:
                    params.append(types.parse_text_param(raw.decode("utf-8"), oid))
            state.portals[bind.portal] = Portal(prepared, params, bind.result_formats)
            self._send(codec.bind_complete())
        except Exception as exc:
            self._fail_extended(state, exc)

    def _describe(self, state: ConnState, body: bytes) -> None:
        what, name = body[:1], body[1:].rstrip(b"\x00").decode("utf-8")
        try:
            if what == b"S":
                prepared = state.statements.get(name)
                if prepared is None:
                    raise errors.UndefinedPreparedStatement(f'prepared statement "{name}" does not exist')
                oids = [oid or types.TEXT for oid in prepared.param_oids]
                self._send(codec.parameter_description(oids))
                columns = state.session.describe(prepared.statement, len(oids)) if prepared.statement else None
                self._send(codec.row_description(columns, []) if columns else codec.no_data())
            elif what == b"P":
                portal = state.portals.get(name)
                if portal is None:
                    raise errors.UndefinedCursor(f'portal "{name}" does not exist')
                self._run_portal(state, portal)
                result = portal.result
                if result is None or result.columns is None:
                    self._send(codec.no_data())
                else:
                    self._send(codec.row_description(result.columns, portal.result_formats))
                portal.described = True
            else:
                raise ValueError(f"invalid Describe target {what!r}")
        except ValueError:
            raise
        except Exception as exc:
            self._fail_extended(state, exc)

    def _run_portal(self, state: ConnState, portal: Portal) -> None:
        if portal.result is None and portal.prepared.statement is not None:
            portal.result = state.session.run(portal.prepared.statement, portal.params)
            portal.rows = portal.result.rows

    def _execute(self, state: ConnState, body: bytes) -> None:
        r = codec.Reader(body)
        name, limit = r.cstr(), r.int32()
        try:
            portal = state.portals.get(name)
            if portal is None:
                raise errors.UndefinedCursor(f'portal "{name}" does not exist')
            if portal.prepared.statement is None:
                self._send(codec.empty_query())
                return
            self._run_portal(state, portal)
            assert portal.result is not None
            suspended = self._send_result(portal.result, describe=False, formats=portal.result_formats,
                                          rows=portal.rows, limit=max(limit, 0), sent=portal.sent)
            if suspended is not None:
                portal.sent = suspended
                self._send(codec.portal_suspended())
            else:
                portal.result = Result("SELECT", portal.result.columns, iter(()), count_rows=True) \
                    if portal.result.columns is not None else portal.result
        except Exception as exc:
            self._fail_extended(state, exc)

    def _close(self, state: ConnState, body: bytes) -> None:
        what, name = body[:1], body[1:].rstrip(b"\x00").decode("utf-8")
        if what == b"S":
            state.statements.pop(name, None)
        elif what == b"P":
            state.portals.pop(name, None)
        else:
            raise ValueError(f"invalid Close target {what!r}")
        self._send(codec.close_complete())

    def _sync(self, state: ConnState, body: bytes) -> None:
        state.skipping = False
        state.portals.pop("", None)
        state.session.deliver_notifications()
        self._send(codec.ready_for_query(state.session.tx.value), flush=True)

    def _fail_extended(self, state: ConnState, exc: BaseException) -> None:
        self._error(exc)
        state.skipping = True


class MeansqlServer(BuenaVistaServer):
    """Threaded pg-wire server; one thread per connection."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: Any, *, max_message_size: int = 1 << 30) -> None:
        super().__init__(address, conn=None)  # type: ignore[arg-type]
        self.RequestHandlerClass = MeansqlHandler
        self.app = app
        self.max_message_size = max_message_size
        self._states: dict[int, ConnState] = {}
        self._lock = threading.Lock()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return True  # where we listen is the user's choice (--host)

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
        with self._lock:
            state = self._states.get(pid)
        if state is not None and secrets.compare_digest(state.secret.to_bytes(4, "big"), secret.to_bytes(4, "big")):
            state.session.cancel()

