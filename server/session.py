"""Per-connection state: session id, SET parameters, transaction state, statements.

A session runs each statement on its own DuckDB cursor. Statements with a
semantic operator are parsed with the meansql dialect and rewritten; the rest
go to DuckDB as written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import enum
import json
import logging
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

from semantic_ops import dialect, functions, planner, rewrite
from semantic_ops.errors import QueryCanceled, SemanticTypeError
from semantic_ops.executor import Executor, QueryContext
from server import catalog, cursors, file_access, training_sql
from server import parameters as pgsettings
from server.errors import (
    DuplicateCursor,
    InFailedTransaction,
    MultipleCommands,
    NoActiveTransaction,
    SavepointsNotSupported,
    UndefinedCursor,
    UndefinedParameter,
    UndefinedParameterNumber,
    UndefinedSavepoint,
)
from server.pgwire import params as pgparams
from server.pgwire import types
from server.statements import Kind, Statement, split, split_tokens
from training import events
from training import labels as label_rows
from training.errors import MeansqlError
from training.store import Store

log = logging.getLogger(__name__)

_ADJECTIVES = ("clever", "quiet", "brave", "calm", "eager", "gentle", "happy", "lucky", "proud", "swift",
               "bright", "keen", "merry", "noble", "witty", "bold", "fair", "kind", "wise", "jolly")
_ANIMALS = ("fox", "owl", "otter", "lynx", "heron", "badger", "whale", "falcon", "panda", "raven",
            "yak", "koala", "bison", "crane", "gecko", "ibis", "lemur", "moose", "newt", "seal")

# Parameters clients set and read; meansql keeps them per session.
CLIENT_PARAMETERS: dict[str, str] = {
    "application_name": "",
    "client_encoding": "UTF8",
    "datestyle": "ISO, MDY",
    "extra_float_digits": "1",
    "intervalstyle": "postgres",
    "search_path": '"$user", public',
    "standard_conforming_strings": "on",
    "statement_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
    "timezone": "UTC",
    "server_version": "15.0",
    "server_encoding": "UTF8",
    "integer_datetimes": "on",
    "transaction_isolation": "read committed",
    "default_transaction_isolation": "read committed",
    "lc_messages": "C",
    "is_superuser": "on",
    "max_identifier_length": "63",
    "jit": "off",  # asyncpg reads it before type introspection and turns it off when on
}

_SET = re.compile(r"^SET\s+(?:SESSION\s+|LOCAL\s+)?([\w.\"]+)\s*(?:=|\s+TO\s+)\s*(.+?)\s*;?\s*$", re.I | re.S)
_SHOW = re.compile(r"^SHOW\s+([\w.\"]+)\s*;?\s*$", re.I)
_SHOW_ISOLATION = re.compile(r"^SHOW\s+TRANSACTION\s+ISOLATION\s+LEVEL\s*;?\s*$", re.I)
_RESET = re.compile(r"^RESET\s+([\w.\"]+)\s*;?\s*$", re.I)
_LISTEN = re.compile(r'^(LISTEN|UNLISTEN)\s+(\*|[A-Za-z_][\w$]*|"[^"]+")\s*;?\s*$', re.I)
# `SELECT 1` and the like: the statements connection pools and health checks send to see that a server answers.
_CONSTANT_INTS = re.compile(r"^SELECT\s+([+-]?\d+(?:\s*,\s*[+-]?\d+)*)\s*;?\s*$", re.I)
_SHOW_LIKE = re.compile(r"^SHOW\s+TABLES\s+LIKE\s+('(?:[^']|'')*')\s*;?\s*$", re.I)


_SAVEPOINT = re.compile(
    r'^(?:SAVEPOINT|RELEASE(?:\s+SAVEPOINT)?|ROLLBACK(?:\s+(?:WORK|TRANSACTION))?\s+TO(?:\s+SAVEPOINT)?)\s+'
    r'([A-Za-z_][\w$]*|"(?:[^"]|"")+")\s*;?\s*$', re.I)


@dataclass(frozen=True)
class _Savepoint:
    name: str
    clean: bool  # set before the transaction changed anything: rolling back to it is rolling back the lot
    cursors: set[str]  # cursors open when it was set


def session_name() -> str:
    """A readable session id such as sql-clever-fox-3f2a."""
    return f"sql-{secrets.choice(_ADJECTIVES)}-{secrets.choice(_ANIMALS)}-{secrets.token_hex(2)}"


class TxState(enum.Enum):
    IDLE = b"I"
    IN_TRANSACTION = b"T"
    FAILED = b"E"


@dataclass(frozen=True)
class _Copy:
    """A semantic statement over a temporary copy of the rows its plain conjuncts keep (planner.keep)."""

    create: str
    drop: str
    stages: list[planner.Stage]  # those of the statement over the table
    whole: Callable[[], str]  # the DuckDB text of the statement over the table


@dataclass
class Result:
    """What one statement gives the client: columns and rows, or just a tag."""

    tag: str
    columns: list[tuple[str, int]] | None = None
    rows: Iterator[Sequence[Any]] | None = None
    count_rows: bool = False  # the tag takes the number of rows sent
    source: Any = None  # the DuckDB cursor `rows` streams from, untouched: the wire may read it as Arrow
    duck_types: list[str] | None = None  # DuckDB type names of the columns, when `source` is set
    binary: bool = False  # rows go out in binary format whatever the client asked (a BINARY cursor's FETCH)
    origins: list[tuple[int, int]] | None = None  # per column: table OID and column number, or (0, 0)
    batches: Any = None  # the same rows as Arrow batches (a cursor's FETCH): the wire may frame them in bulk


def _unquote(name: str) -> str:
    return name.strip('"').lower()


def _setting_value(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1].replace("''", "'")
    return raw


class Session:
    """One client connection's view of meansql."""

    def __init__(self, store: Store, executor: Executor, *, user: str = "", database: str = "",
                 files: file_access.Lock | None = None, setups: threading.Semaphore | None = None) -> None:
        self.id = session_name()
        self.files = files  # the server's lock on its files; None for the owner's local CLI (full access)
        self.store = store
        self.executor = executor
        self._duck: duckdb.DuckDBPyConnection | None = None  # made on first use: see `cursor`
        self._setups = setups or contextlib.nullcontext()  # shared by the sessions whose set-ups take turns
        self.user = user
        self.database = database
        self.settings: dict[str, str] = dict(CLIENT_PARAMETERS)
        self.reports: dict[str, str] = {}  # ParameterStatus the client is owed before ReadyForQuery
        self.tx = TxState.IDLE
        self.notice: Callable[[str, str], None] = _no_notice
        self._current: QueryContext | None = None
        self._running = False
        self._cancel_reason = "user request"
        self._lock = threading.Lock()
        self._active: duckdb.DuckDBPyConnection | None = None  # running the current statement (a cancel interrupts it)
        # SQL cursors by name; protocol portals (kept by the connection) are looked up through find_portal.
        self.cursors: dict[str, cursors.Cursor] = {}
        self.find_portal: Callable[[str], cursors.Cursor | None] = _no_portal
        self._tx_wrote = False  # the open transaction changed something only its own connection sees
        self._has_temp = False  # temporary objects exist, visible on the session's connection only
        # Copy the rows a planned semantic statement keeps before judging (planner.keep): proxy mode, where each
        # read of a table crosses the network, sets it.
        self.keep_rows = False
        self._savepoints: list[_Savepoint] = []
        self._origins: dict[str, list[tuple[int, int]] | None] = {}  # by statement text; DDL here clears it
        self._as_written: set[str] = set()  # statement texts DuckDB runs unchanged (no operator, catalog, rewrite)
        self._parsed: dict[str, Any] = {}  # DuckDB's parse of such texts (queries and DML), by text
        self._duck_database: str | None = None
        self._lookup: duckdb.DuckDBPyConnection | None = None
        # LISTEN/NOTIFY: channels listened to, notifications waiting for the session to be idle,
        # and events of this session's open transaction (handed on at COMMIT).
        self.notify: Callable[[str, str], None] | None = None
        self.listening: set[str] = set()
        self._waiting: list[tuple[str, str]] = []
        self._tx_events: list[dict[str, Any]] = []

    @property
    def cursor(self) -> duckdb.DuckDBPyConnection:
        """The session's DuckDB connection, made and set up on first use.

        Setting one up costs about a millisecond of DuckDB work (a connection and three statements, each with its
        commit); a connection that never gets as far as a statement (a client that only logs in, a malformed or
        dropped one) does not pay it, and the set-ups of many new sessions take turns (`setups`) rather than
        crowd out the statements of established ones.
        """
        cur = self._duck
        if cur is None:
            with self._setups:
                cur = self.store.cursor()
                try:
                    pgsettings.prepare_cursor(cur)
                except BaseException:
                    cur.close()
                    raise
            self._duck = cur
        return cur

    # -- statements -------------------------------------------------------
    def split(self, sql: str) -> list[Statement]:
        return split(sql)

    def check_not_failed(self, stmt: Statement | None) -> None:
        """25P02 for anything but COMMIT/ROLLBACK in a failed transaction (Parse and Bind check it too)."""
        if self.tx is TxState.FAILED and (stmt is None or stmt.kind not in (Kind.ROLLBACK, Kind.COMMIT)):
            raise InFailedTransaction(
                "current transaction is aborted, commands ignored until end of transaction block"
            )

    def fail(self) -> None:
        """An error outside a statement (Parse, Bind, Describe) inside a transaction fails it."""
        if self.tx is TxState.IN_TRANSACTION:
            self.tx = TxState.FAILED

    def run(self, stmt: Statement, params: Sequence[Any] | None = None) -> Result:
        """Run one statement; errors propagate (and mark a transaction failed)."""
        kind = stmt.kind
        self.check_not_failed(stmt)
        self._note_private(stmt, kind)
        try:
            if self.files is not None:
                file_access.check(stmt)
            return self._run(stmt, kind, params)
        except BaseException:
            if self.tx is TxState.IN_TRANSACTION:
                self.tx = TxState.FAILED
            raise

    def _note_private(self, stmt: Statement, kind: Kind) -> None:
        """Remember what another DuckDB connection could not see: writes of the open transaction, temp objects."""
        if stmt.words[:1] and stmt.words[0] in _SESSION_ONLY:
            return
        if kind is Kind.OTHER:
            self._origins.clear()
        if self._parsed and (not stmt.words or stmt.words[0] not in _PARSE_ONCE) and \
                kind not in (Kind.BEGIN, Kind.COMMIT, Kind.ROLLBACK):
            self._parsed.clear()  # a setting or extension may read text differently from now on
        if kind in (Kind.DML, Kind.OTHER, Kind.COPY):
            self.mark_written()
            if stmt.words[:1] == ("CREATE",) and {"TEMP", "TEMPORARY"} & set(stmt.words):
                self._has_temp = True

    def mark_written(self) -> None:
        """The open transaction changed data (COPY FROM STDIN tells it here too)."""
        if self.tx is not TxState.IDLE:
            self._tx_wrote = True

    def _run(self, stmt: Statement, kind: Kind, params: Sequence[Any] | None) -> Result:
        if stmt.words[:1] and stmt.words[0] in cursors.WORDS:
            return self._cursor_statement(stmt, params)
        if kind is Kind.BEGIN:
            if self.tx is TxState.IDLE:
                self.cursor.execute("BEGIN TRANSACTION")
                self.tx = TxState.IN_TRANSACTION
                self._tx_wrote = False
                self._savepoints = []
            else:
                self.notice("WARNING", "there is already a transaction in progress")
            return Result("BEGIN")
        if stmt.words[:1] == ("DEALLOCATE",):
            # Prepared statements live with the connection and end with Close or the connection.
            return Result("DEALLOCATE ALL" if stmt.words[1:2] == ("ALL",) else "DEALLOCATE")
        if stmt.words[:1] in (("SAVEPOINT",), ("RELEASE",)) or (stmt.words[:1] == ("ROLLBACK",)
                                                                and "TO" in stmt.words[1:3]):
            return self._savepoint(stmt)
        if kind in (Kind.COMMIT, Kind.ROLLBACK):
            return self._end_transaction(kind)
        if kind is Kind.SET and (r := self._set(stmt.text)) is not None:
            return r
        if kind is Kind.SHOW and (r := self._show(stmt.text)) is not None:
            return r
        if kind is Kind.RESET and (m := _RESET.match(stmt.text)):
            name = _unquote(m.group(1))
            names = [n for n in CLIENT_PARAMETERS if n in pgsettings.SETTABLE] if name == "all" else [name]
            for n in names:
                if n in CLIENT_PARAMETERS:
                    self.assign(n, CLIENT_PARAMETERS[n])
                elif n.startswith("meansql."):
                    self.settings.pop(n, None)
                else:
                    return self._execute(stmt, kind, params)
            return Result("RESET")
        if (m := _LISTEN.match(stmt.text)) is not None:
            return self._listen(m.group(1).upper(), m.group(2))
        if kind is Kind.ROWS and (constant := constant_row(stmt.text)) is not None:
            return Result("SELECT", constant[0], iter([constant[1]]), count_rows=True)
        return self._execute(stmt, kind, params)

    def _savepoint(self, stmt: Statement) -> Result:
        """SAVEPOINT, RELEASE and ROLLBACK TO SAVEPOINT.

        DuckDB keeps no savepoints. A savepoint set before the transaction changed anything can still be rolled
        back to: the DuckDB transaction is rolled back and a new one begun, which is the state the savepoint saw.
        After earlier changes that would lose them, so ROLLBACK TO is refused (0A000) and the transaction fails.
        """
        m = _SAVEPOINT.match(stmt.text)
        if m is None:
            raise cursors.SqlSyntaxError(f"syntax error in {stmt.words[0]}: expected a savepoint name")
        verb = {"SAVEPOINT": "SAVEPOINT", "RELEASE": "RELEASE SAVEPOINT"}.get(stmt.words[0], "ROLLBACK TO SAVEPOINT")
        name = cursors.name_of(m.group(1))
        if self.tx is TxState.IDLE:
            raise NoActiveTransaction(f"{verb} can only be used in transaction blocks")
        if verb == "SAVEPOINT":
            self._savepoints.append(_Savepoint(name, not self._tx_wrote, set(self.cursors)))
            return Result("SAVEPOINT")
        index = next((i for i in range(len(self._savepoints) - 1, -1, -1) if self._savepoints[i].name == name), None)
        if index is None:
            raise UndefinedSavepoint(f'savepoint "{name}" does not exist')
        if verb == "RELEASE SAVEPOINT":
            del self._savepoints[index:]
            return Result("RELEASE")
        point = self._savepoints[index]
        if not point.clean:
            raise SavepointsNotSupported(
                "ROLLBACK TO SAVEPOINT is not supported after changes made before the savepoint",
                hint="DuckDB keeps no savepoints: ROLLBACK the whole transaction and run it again")
        del self._savepoints[index + 1:]
        try:
            self.cursor.execute("ROLLBACK")
        except duckdb.TransactionException:
            pass  # DuckDB ended the aborted transaction already
        self.cursor.execute("BEGIN TRANSACTION")
        self.tx = TxState.IN_TRANSACTION
        self._tx_wrote = False
        self._tx_events = []
        for cname in set(self.cursors) - point.cursors:  # cursors declared after the savepoint go with it
            self.cursors.pop(cname).close()
        return Result("ROLLBACK")

    # -- cursors ------------------------------------------------------------------
    def _cursor_statement(self, stmt: Statement, params: Sequence[Any] | None) -> Result:
        verb = stmt.words[0]
        if verb == "DECLARE":
            return self._declare(cursors.parse_declare(stmt.text), params)
        if verb == "CLOSE":
            name = cursors.parse_close(stmt.text)
            if name is None:
                for cur in self.cursors.values():
                    cur.close()
                self.cursors.clear()
                return Result("CLOSE CURSOR ALL")
            self._cursor(name).close()
            self.cursors.pop(name, None)
            return Result("CLOSE CURSOR")
        fetch = cursors.parse_fetch(stmt.text)
        cur = self._cursor(fetch.name)
        if not cur.scroll and fetch.how == "forward" and fetch.count != 0:  # streamed, never held
            if fetch.verb == "MOVE":
                return Result(f"MOVE {cur.skip(fetch.count)}")
            if cur.bulk:
                batches = cur.take_batches(fetch.count)
                return Result("FETCH", cur.columns, cursors.rows_of(batches), count_rows=True, binary=cur.binary,
                              batches=batches, duck_types=cur.duck_types)
            return Result("FETCH", cur.columns, cur.take(fetch.count), count_rows=True, binary=cur.binary)
        rows = cur.fetch(fetch)
        if fetch.verb == "MOVE":
            return Result(f"MOVE {len(rows)}")
        return Result("FETCH", cur.columns, iter(rows), count_rows=True, binary=cur.binary)

    def _cursor(self, name: str) -> cursors.Cursor:
        cur = self.cursors.get(name) or self.find_portal(name)
        if cur is None:
            raise UndefinedCursor(f'cursor "{name}" does not exist')
        return cur

    def _declare(self, spec: cursors.Declare, params: Sequence[Any] | None) -> Result:
        if self.tx is TxState.IDLE and not spec.hold:
            raise NoActiveTransaction("DECLARE CURSOR can only be used in transaction blocks")
        if spec.name in self.cursors or self.find_portal(spec.name) is not None:
            raise DuplicateCursor(f'cursor "{spec.name}" already exists')
        stmts = split(spec.query)
        if len(stmts) != 1 or stmts[0].kind is not Kind.ROWS:
            raise cursors.SqlSyntaxError("DECLARE CURSOR takes one SELECT or VALUES query")
        query = stmts[0]
        own = (self.tx is not TxState.IDLE and self._tx_wrote) or self._has_temp
        conn: duckdb.DuckDBPyConnection | None = None
        if not own:
            conn = self._cursor_connection()
            try:
                result = self._execute(query, query.kind, params, on=conn)
            except BaseException:
                conn.close()
                raise
            if result.source is None:  # a semantic query: its rows are judged and held already
                conn.close()
                conn = None
        else:
            # Rows only this session's connection sees: taken now, as PostgreSQL's snapshot would show them.
            result = self._execute(query, query.kind, params)
            result.rows = iter(list(result.rows or ()))
        assert result.columns is not None
        bulk = (conn is not None and result.source is not None and not spec.scroll and result.duck_types is not None
                and all(t in cursors.BULK_TYPES for t in result.duck_types))
        self.cursors[spec.name] = cursors.Cursor(
            spec.name, result.columns, result.rows or iter(()), hold=spec.hold, binary=spec.binary,
            scroll=spec.scroll, in_transaction=self.tx is not TxState.IDLE, connection=conn, duck_types=result.duck_types,
            batches=result.source.to_arrow_reader(cursors.BULK_ROWS) if bulk else None)
        return Result("DECLARE CURSOR")

    def _cursor_connection(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection of its own for a cursor, set up as the session's."""
        conn = self.store.cursor()
        try:
            pgsettings.prepare_cursor(conn)
            pgsettings.apply_timezone(conn, self.settings["timezone"])
        except BaseException:
            conn.close()
            raise
        return conn

    def _end_cursors(self, *, committed: bool) -> None:
        """At the end of a transaction: cursors without HOLD close; a ROLLBACK also drops those it declared."""
        for name, cur in list(self.cursors.items()):
            if not cur.hold or (cur.in_transaction and not committed):
                cur.close()
                del self.cursors[name]
            else:
                cur.in_transaction = False

    def _end_transaction(self, kind: Kind) -> Result:
        if self.tx is TxState.IDLE:
            self.notice("WARNING", "there is no transaction in progress")
            return Result("COMMIT" if kind is Kind.COMMIT else "ROLLBACK")
        failed = self.tx is TxState.FAILED
        self.tx = TxState.IDLE
        self._tx_wrote = False
        self._savepoints = []
        self._end_cursors(committed=kind is Kind.COMMIT and not failed)
        tx_events, self._tx_events = self._tx_events, []
        if kind is Kind.COMMIT and not failed:
            self.cursor.execute("COMMIT")
            self.store.committed(tx_events)
            return Result("COMMIT")
        try:
            self.cursor.execute("ROLLBACK")
        except duckdb.TransactionException:
            pass  # DuckDB may have ended the aborted transaction already
        return Result("ROLLBACK")

    def _set(self, text: str) -> Result | None:
        m = _SET.match(text)
        if not m:
            return None
        name, value = _unquote(m.group(1)), _setting_value(m.group(2))
        if name in CLIENT_PARAMETERS:
            self.assign(name, CLIENT_PARAMETERS[name] if value.upper() == "DEFAULT" else value)
            return Result("SET")
        if name.startswith("meansql."):
            self.settings[name] = value
            return Result("SET")
        return None  # a DuckDB setting

    def assign(self, name: str, value: str) -> str:
        """Set a client parameter as Postgres would: checked, normalised, reported if it is GUC_REPORT."""
        value = pgsettings.normalise(name, value, self.settings)
        if name == "timezone":
            pgsettings.apply_timezone(self.cursor, value)
        self.settings[name] = value
        if name in pgsettings.REPORTED:
            self.reports[pgsettings.display_name(name)] = value
        return value

    def take_reports(self) -> dict[str, str]:
        """The ParameterStatus messages owed since the last call."""
        out, self.reports = self.reports, {}
        return out

    def _show(self, text: str) -> Result | None:
        if _SHOW_ISOLATION.match(text):
            text = "SHOW transaction_isolation"
        m = _SHOW.match(text)
        if m:
            name = _unquote(m.group(1))
            if name == "all":
                rows = sorted((pgsettings.display_name(n), v, "") for n, v in self.settings.items())
                return Result("SHOW", [("name", types.TEXT), ("setting", types.TEXT), ("description", types.TEXT)],
                              iter(rows))
            if name in self.settings:
                return Result("SHOW", [(pgsettings.display_name(name), types.TEXT)], iter([(self.settings[name],)]))
            if name.startswith("meansql."):
                raise UndefinedParameter(f'unrecognized configuration parameter "{name}"')
        return None

    # -- DuckDB -----------------------------------------------------------------
    def _translate(self, stmt: Statement, params: Sequence[Any] | None = None, *, run: bool = True
                   ) -> tuple[str, QueryContext | None, list[planner.Stage], _Copy | None]:
        """The DuckDB text of a statement, rewritten if it has a semantic operator, and its stages; and the
        same over a copy of its kept rows (`keep_rows`, when it is to `run` rather than be described)."""
        registry = self.executor.registry
        text = stmt.text
        if text in self._as_written:
            return text, None, [], None
        if m := _SHOW_LIKE.match(text):
            return f"SELECT name FROM (SHOW TABLES) WHERE name LIKE {m.group(1)}", None, [], None
        if not self._maybe_semantic(text) or \
                not dialect.has_semantic_words(text, registry.infix, [*registry.by_function.keys(), functions.VECTOR_SEARCH]):
            if stmt.kind is Kind.DML and stmt.words[:2] == ("INSERT", "INTO"):
                text = _annotation_upsert(text)
            elif catalog.mentions_catalog(text):
                text = self._catalog_text(text)
            out = self._postgres_semantics(stmt, text)
            if out == stmt.text and not catalog.mentions_catalog(out) and \
                    (stmt.kind not in (Kind.ROWS, Kind.DML) or not pgsettings.needs_rewrite(out)):
                # Nothing in it depends on the session: the next run of this text skips the looks above.
                if len(self._as_written) >= 1024:
                    self._as_written.clear()
                self._as_written.add(out)
            return out, None, [], None
        ctx = self.executor.begin(self.id, self.notice, self.settings)
        try:
            parsed = dialect.parse(text, registry.infix)
            if len(parsed) != 1:
                raise MultipleCommands("one statement at a time, please")
            signatures = registry.signatures()
            bound = _bind(parsed[0], params) if params else parsed[0]
            search = self.executor.vector_search
            tree, _plan = rewrite.rewrite(bound, signatures, ctx.query_id, search=search.on(self.cursor) if search else None)
            udfs = [s.udf_name for s in signatures.values()]
            stages = planner.plan(tree, udfs)
            kept = planner.keep(tree, udfs, _KEPT) if run and stages and self.keep_rows and self.tx is TxState.IDLE else None
        except BaseException:
            self.executor.end(ctx)
            raise
        if kept is not None:  # the statement over the copy; the one over the table only if the copy cannot be made
            whole = tree
            copy = _Copy(kept.create, kept.drop, stages, lambda: self._postgres_semantics(stmt, dialect.to_duckdb(whole)))
            return self._postgres_semantics(stmt, dialect.to_duckdb(kept.tree)), ctx, planner.plan(kept.tree, udfs), copy
        return self._postgres_semantics(stmt, dialect.to_duckdb(tree)), ctx, stages, None

    def _postgres_semantics(self, stmt: Statement, text: str) -> str:
        """Division by zero as an error, current_setting()/set_config() on the session; not in DDL, whose
        text DuckDB stores (a view must not depend on this session's temporary macro)."""
        if stmt.kind not in (Kind.ROWS, Kind.DML):
            return text
        return pgsettings.rewrite(text, self._config_call)

    def _config_call(self, name: str, args: list[str | None]) -> str | None:
        """current_setting(name [, missing_ok]) and set_config(name, value, is_local) on client parameters."""
        key = (args[0] or "").lower() if args else ""
        if name == "current_setting":
            if key in self.settings:
                return self.settings[key]
            if key.startswith("meansql.") or (len(args) > 1 and (args[1] or "").lower() in ("true", "t")):
                if len(args) > 1 and (args[1] or "").lower() in ("true", "t"):
                    return None
                raise UndefinedParameter(f'unrecognized configuration parameter "{key}"')
            raise pgsettings.NotOurs
        if key in CLIENT_PARAMETERS:
            return self.assign(key, args[1] or "" if len(args) > 1 else "")
        if key.startswith("meansql."):
            self.settings[key] = args[1] or "" if len(args) > 1 else ""
            return self.settings[key]
        raise UndefinedParameter(f'unrecognized configuration parameter "{key}"')

    def parameter_types(self, stmt: Statement | None, given: list[int]) -> list[int] | None:
        """ParameterDescription OIDs of a statement, or None when its text cannot be read."""
        if stmt is None:
            return list(given)
        if stmt.words[:1] == ("DECLARE",):
            try:
                inner = split(cursors.parse_declare(stmt.text).query)
            except MeansqlError:
                inner = []
            if len(inner) == 1:
                stmt = inner[0]
        try:
            parsed = dialect.parse(stmt.text, self.executor.registry.infix)
        except Exception:  # noqa: BLE001 - DuckDB reports the error when the statement runs
            parsed = []
        if len(parsed) != 1:
            # Text sqlglot cannot read: count $n by token; their types stay the client's or text.
            seen = pgparams.from_tokens(stmt.text)
            n = max(max(seen, default=-1) + 1, len(given))
            return [(given[i] if i < len(given) else 0) or seen.get(i) or types.TEXT for i in range(n)]
        return pgparams.infer(parsed[0], self._columns_of, given, self._type_of_query)

    def _type_of_query(self, sql: str) -> str | None:
        try:
            rows = self.cursor.execute(f"DESCRIBE {sql}").fetchall()
        except duckdb.Error:
            return None  # not a question DuckDB can answer alone; the parameter stays text
        return str(rows[0][1]) if len(rows) == 1 else None

    def _columns_of(self, table: str) -> dict[str, str]:
        rows = self.cursor.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE lower(table_name) = ? "
            "ORDER BY schema_name = 'main' DESC, column_index", [table]).fetchall()
        out: dict[str, str] = {}
        for name, duck in rows:
            out.setdefault(str(name).lower(), str(duck))
        return out

    def _maybe_semantic(self, text: str) -> bool:
        """A cheap first look before tokenizing: text without any operator word has no semantic operator."""
        registry = self.executor.registry
        lower = text.lower()
        return (any(w.lower() in lower for w in registry.infix) or any(f.lower() in lower for f in registry.by_function)
                or functions.VECTOR_SEARCH.lower() in lower)

    def _catalog_text(self, text: str) -> str:
        """A statement reading pg_catalog or session values, rewritten for meansql's catalog."""
        # Made for each statement: a Rewriter kept on the session, with callbacks that hold the session, would make
        # each session a reference cycle that only a garbage collection frees (see close()).
        rewriter = catalog.Rewriter(self.settings, lambda: self.user or "postgres", lambda: self.database or "default")
        try:
            return rewriter.rewrite(text)
        except sqlglot.errors.ParseError:
            # Not a catalog query sqlglot can read (a user's table named pg_x, DuckDB-only syntax):
            # DuckDB reads it as written and reports its own error if it cannot either.
            return text

    def _execute(self, stmt: Statement, kind: Kind, params: Sequence[Any] | None,
                 on: duckdb.DuckDBPyConnection | None = None) -> Result:
        text, ctx, stages, kept = self._translate(stmt, params)
        if kind is Kind.DML and "training_" in text.lower() and (door := training_sql.plan(text)):
            if ctx is not None and door.table == "training_examples":
                # Its label rows and events follow the returned ids, which a semantic statement's plan does not give.
                raise training_sql.FeatureNotSupported(
                    "semantic operators in INSERT, UPDATE or DELETE on training_examples are not supported",
                    hint="SELECT the ids with the operator first, then change those rows by id")
            if ctx is None:
                return self._training_dml(door, params)
        # A semantic statement has its parameters bound as literals (its stages run without them).
        args = _positional(text, params) if params and ctx is None else None
        cur = on if on is not None and ctx is None else self.cursor
        timer = self._start_timer()
        with self._lock:
            self._current = ctx
            self._active = cur
            self._running = True
        snapshot = False
        try:
            if kept is not None:
                # The kept rows are read once, in one statement; the stages and the query read that copy.
                try:
                    cur.execute(kept.create)
                except duckdb.BinderException as exc:
                    if "empty set of columns" not in str(exc):
                        raise
                    # No column of the table is named: the statement over the table reports what it lacks.
                    text, stages, kept = kept.whole(), kept.stages, None
            # The planned stages and the query read one snapshot: a row committed by another session between
            # them would otherwise reach the query with no answer judged for it.
            snapshot = bool(ctx is not None and stages and self.tx is TxState.IDLE and kept is None)
            if snapshot:
                cur.execute("BEGIN TRANSACTION")
            if ctx is not None and stages:
                self.executor.prepare(ctx, stages, lambda sql: cur.execute(sql, args).fetchall())
            reuse = self._parsed.get(text) if args is None and cur is self.cursor else None
            query = reuse if reuse is not None else text
            if self.tx is TxState.IDLE and not snapshot:
                _autocommit(cur, query, args, text)
            else:
                cur.execute(query, args)
            if ctx is not None:
                # Semantic results are materialised so every answer is judged and
                # logged before the first row goes out.
                rows: list[Any] | None = cur.fetchall() if cur.description else None
            description = cur.description
            if snapshot:
                snapshot = False
                cur.execute("COMMIT")
        except duckdb.Error as exc:
            if ctx is not None and ctx.error is not None:
                raise ctx.error from exc
            if isinstance(exc, duckdb.InterruptException):
                raise QueryCanceled(f"canceling statement due to {self._cancel_reason}") from exc
            if ctx is not None and isinstance(exc, duckdb.BinderException):
                raise self._argument_error(exc) from exc
            raise
        finally:
            if snapshot:
                try:
                    cur.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # DuckDB ended the failed transaction already
            if kept is not None:
                try:
                    cur.execute(kept.drop)
                except duckdb.Error as exc:  # an interrupted connection: the next statement's CREATE replaces it
                    log.debug("kept rows not dropped: %s", exc)
            with self._lock:
                self._running = False
            if timer is not None:
                timer.cancel()
            if ctx is not None:
                self._finish(ctx)
            self._cancel_reason = "user request"
        if reuse is None and args is None and cur is self.cursor and stmt.words[:1] and \
                stmt.words[0] in _PARSE_ONCE and text in self._as_written:
            self._keep_parsed(text)
        if description is None:
            return Result(stmt.tag)
        if kind is Kind.DML and [d[0] for d in description] == ["Count"]:
            (count,) = cur.fetchone() or (0,)
            return Result(("INSERT 0 " if stmt.words[0] == "INSERT" else f"{stmt.words[0]} ") + str(count))
        if kind is Kind.OTHER and [d[0] for d in description] in (["Count"], ["Success"]):
            return Result(stmt.tag)  # DuckDB answers DDL with a row (CREATE: Count, DROP and CHECKPOINT: Success)
        if kind is Kind.COPY and [d[0] for d in description] == ["Count"]:
            (count,) = cur.fetchone() or (0,)
            return Result(f"COPY {count}")
        columns = _columns(stmt, [(d[0], str(d[1])) for d in description])
        if ctx is not None:
            return Result("SELECT", columns, iter(rows or []), count_rows=True)
        duck_types = [str(d[1]) for d in description]
        return Result("SELECT", columns, _stream(cur, _DATED.intersection(duck_types) and _ARROW_ROWS.issuperset(duck_types)),
                      count_rows=True, source=cur, duck_types=duck_types, origins=self.origins(stmt, columns))

    def _keep_parsed(self, text: str) -> None:
        """Keep DuckDB's parse of a statement text that ran as written: its next runs skip DuckDB's parser,
        about a quarter of what a short query costs DuckDB."""
        try:
            parsed = self.cursor.extract_statements(text)  # leaves the result being read untouched
        except duckdb.Error:
            return  # it ran, so this is not expected; the text is simply parsed again next time
        if len(parsed) == 1:
            if len(self._parsed) >= 256:
                self._parsed.clear()
            self._parsed[text] = parsed[0]

    def _training_dml(self, door: training_sql.Plan, params: Sequence[Any] | None) -> Result:
        """DML on a training table, with its outbox events in the same transaction."""
        cur = self.cursor
        own = self.tx is TxState.IDLE

        def once() -> tuple[list[Any], list[Any]]:
            if own:
                cur.execute("BEGIN TRANSACTION")
            try:
                rows = cur.execute(door.sql, list(params) if params else None).fetchall()
                if door.table == "training_examples":
                    label_rows.sync(cur, door.labels, [str(r[0]) for r in rows])
                changes = door.events(rows)
                events.record(cur, changes)
                if own:
                    cur.execute("COMMIT")
                return rows, changes
            except BaseException:
                if own:
                    try:
                        cur.execute("ROLLBACK")
                    except duckdb.Error:
                        pass  # DuckDB ended the failed transaction already
                raise

        # Inside the client's transaction a lost race fails the statement, as it would in PostgreSQL.
        rows, changes = _retry_lost_races(once, upsert="ON CONFLICT" in door.sql.upper(), attempts=CONFLICT_RETRIES if own else 1)
        if own:
            self.store.committed(changes)
        else:
            self._tx_events.extend(changes)
        return Result(f"INSERT 0 {len(rows)}" if door.verb == "INSERT" else f"{door.verb} {len(rows)}")

    # -- LISTEN / NOTIFY ----------------------------------------------------------
    def _listen(self, verb: str, name: str) -> Result:
        channel = name.strip('"') if name.startswith('"') else name.lower()
        with self._lock:
            was = bool(self.listening)
            if verb == "LISTEN":
                self.listening.add(channel)
            elif channel == "*":
                self.listening.clear()
            else:
                self.listening.discard(channel)
            now = bool(self.listening)
        if now and not was:
            self.store.event_hooks.append(self._on_events)
        elif was and not now:
            self._unhook()
        return Result(verb)

    def _unhook(self) -> None:
        try:
            self.store.event_hooks.remove(self._on_events)
        except ValueError:
            pass  # never listened

    def _on_events(self, changes: list[dict[str, Any]]) -> None:
        """Committed events (any thread): sent at once to an idle session, else before its next ReadyForQuery."""
        if events.CHANNEL not in self.listening:
            return
        with self._lock:
            self._waiting.extend((events.CHANNEL, json.dumps(e)) for e in changes)
            idle = not self._running and self.tx is TxState.IDLE
        if idle:
            self.deliver_notifications()

    def deliver_notifications(self) -> None:
        """Send waiting notifications, unless a transaction is open (PostgreSQL delivers them after it ends)."""
        notify = self.notify  # close() may drop it meanwhile
        if notify is None or self.tx is not TxState.IDLE:
            return
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for channel, payload in waiting:
            notify(channel, payload)

    def _argument_error(self, exc: duckdb.BinderException) -> Exception:
        """DuckDB's 'no function matches' for an operator, in the operator's own words."""
        m = re.search(r"'meansql_(\w+)\(([^)]*)\)'", str(exc))
        if not m or m.group(1) not in self.executor.registry.by_function:
            return exc
        sig = self.executor.registry.function(m.group(1)).signature()
        got = [t.strip().replace("STRING_LITERAL", "VARCHAR").replace("INTEGER_LITERAL", "INTEGER")
               for t in m.group(2).split(",")][1:]
        wrong = [f"{n} is {g}" for n, want, g in zip(sig.arg_names, sig.arg_types, got) if g != want]
        word = sig.infix or sig.name
        return SemanticTypeError(
            f"{word} needs {', '.join(t.lower() for t in sig.arg_types)} arguments: {'; '.join(wrong) or ', '.join(got)}",
            hint=f"cast the argument, e.g. id::TEXT {word} '...', or call {sig.usage}",
        )

    def describe(self, stmt: Statement, params: Sequence[Any] | None = None,
                 param_oids: Sequence[int] = ()) -> list[tuple[str, int]] | None:
        """Result columns of a statement, found without running it (None: no rows).

        Raises CannotDescribe when only running the statement would tell.
        """
        kind = stmt.kind
        if stmt.words[:1] == ("FETCH",):
            # PostgreSQL describes a FETCH by its cursor, and one it cannot find as returning no rows.
            try:
                return self._cursor(cursors.parse_fetch(stmt.text).name).columns
            except (UndefinedCursor, cursors.SqlSyntaxError):
                return None
        if stmt.words[:1] and stmt.words[0] in cursors.WORDS:
            return None
        if kind is Kind.SHOW:
            m = _SHOW.match(stmt.text)
            name = _unquote(m.group(1)) if m else ""
            if name == "all":
                return [("name", types.TEXT), ("setting", types.TEXT), ("description", types.TEXT)]
            if name in self.settings:
                return [(pgsettings.display_name(name), types.TEXT)]
            raise CannotDescribe(stmt.text)
        if kind is Kind.DML and "RETURNING" in stmt.text.upper():
            raise CannotDescribe(stmt.text)
        if kind is Kind.ROWS and (constant := constant_row(stmt.text)) is not None:
            return constant[0]
        if kind is not Kind.ROWS or _SHOW_LIKE.match(stmt.text) or stmt.words[0] in _UNDESCRIBABLE:
            if kind is Kind.ROWS:
                raise CannotDescribe(stmt.text)
            return None
        text, ctx, _stages, _kept = self._translate(stmt, run=False)
        if ctx is not None:
            self.executor.end(ctx)
        n = max(len(param_oids), len(params or ()), pgparams_count(text))
        args = list(params) if params is not None else [_sample(o) for o in param_oids]
        args += [None] * (n - len(args))
        try:
            rows = self.cursor.execute(f"DESCRIBE {text}", args or None).fetchall()
        except duckdb.Error as exc:
            raise CannotDescribe(str(exc)) from exc
        return _columns(stmt, [(r[0], str(r[1])) for r in rows])

    def origins(self, stmt: Statement | None, columns: list[tuple[str, int]]) -> list[tuple[int, int]] | None:
        """Table OID and column number of each result column that is a table's column, as PostgreSQL reports
        them in RowDescription (pgjdbc's getTableName, isAutoIncrement): for a SELECT from one table whose
        columns are plain column references or *; None where that is not plain to see."""
        if stmt is None or stmt.words[:1] != ("SELECT",) or catalog.mentions_catalog(stmt.text):
            return None
        if stmt.text not in self._origins:
            if len(self._origins) >= 256:
                self._origins.clear()
            try:
                self._origins[stmt.text] = self._find_origins(stmt.text)
            except (sqlglot.errors.SqlglotError, duckdb.Error):
                self._origins[stmt.text] = None
        found = self._origins[stmt.text]
        return found if found is not None and len(found) == len(columns) else None

    def _find_origins(self, text: str) -> list[tuple[int, int]] | None:
        tree = sqlglot.parse_one(text, read="postgres")
        if not isinstance(tree, exp.Select) or tree.args.get("joins") or tree.args.get("with_"):
            return None
        source = tree.args.get("from_")
        table = source.this if isinstance(source, exp.From) else None
        if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier) or table.catalog:
            return None
        schema = "main" if table.db.lower() in ("", "public") else table.db
        if self._lookup is None:
            # Its own connection: the session's may be streaming the very result these describe.
            self._lookup = self.store.cursor()
        rows = self._lookup.execute(
            "SELECT table_oid, lower(column_name), column_index FROM duckdb_columns() "
            "WHERE lower(table_name) = lower(?) AND lower(schema_name) = lower(?) AND database_name = ?"
            " ORDER BY column_index", [table.name, schema, self._database_name()]).fetchall()
        if not rows or len({r[0] for r in rows}) != 1:
            return None
        numbers = {name: (int(oid), int(index)) for oid, name, index in rows}
        out: list[tuple[int, int]] = []
        for projection in tree.expressions:
            inner = projection.this if isinstance(projection, exp.Alias) else projection
            if isinstance(inner, exp.Star):
                out += [(int(oid), int(index)) for oid, _name, index in rows]
            elif isinstance(inner, exp.Column) and isinstance(inner.this, exp.Star):
                out += [(int(oid), int(index)) for oid, _name, index in rows]
            elif isinstance(inner, exp.Column) and inner.table.lower() in ("", table.alias_or_name.lower()):
                out.append(numbers.get(inner.name.lower(), (0, 0)))
            else:
                out.append((0, 0))
        return out

    def _database_name(self) -> str:
        if self._duck_database is None:
            row = self.cursor.execute("SELECT current_database()").fetchone() if self._lookup is None else \
                self._lookup.execute("SELECT current_database()").fetchone()
            self._duck_database = str(row[0]) if row else ""
        return self._duck_database

    def _finish(self, ctx: QueryContext) -> None:
        with self._lock:
            self._current = None
        self.executor.end(ctx)

    def idle_in_transaction_limit(self) -> float | None:
        """Seconds this session may wait for its next message inside a transaction block (None: no limit)."""
        if self.tx is TxState.IDLE:
            return None
        ms = _duration_ms(self.settings.get("idle_in_transaction_session_timeout", "0"))
        return ms / 1000 if ms > 0 else None

    def _start_timer(self) -> threading.Timer | None:
        value = self.settings.get("statement_timeout", "0")
        if value == "0":
            return None
        ms = _duration_ms(value)
        if ms <= 0:
            return None
        timer = threading.Timer(ms / 1000, self.cancel, kwargs={"reason": "statement timeout"})
        timer.daemon = True
        timer.start()
        return timer

    # -- control ------------------------------------------------------------------
    def cancel(self, reason: str = "user request") -> None:
        """Stop the running statement (CancelRequest or statement_timeout) and its pending model calls."""
        with self._lock:
            if not self._running:
                return
            ctx = self._current
            self._cancel_reason = reason
            if ctx is not None:
                ctx.cancel_reason = reason
                ctx.cancel.set()
            if self._active is not None:
                self._active.interrupt()

    def close(self) -> None:
        self._unhook()
        # The connection's callbacks hold the connection, which holds this session: dropping them here lets reference
        # counting free both at once. Left in place, every session that ever ran became a reference cycle of some
        # 35 objects (handler, socket, buffers, state, closures) that waited for a collection of generation 1 or 2;
        # those ran every few hundred milliseconds under a burst of short connections and held the interpreter lock
        # for 3-19 ms each, which other sessions' statements then waited out.
        self.notice = _no_notice
        self.notify = None
        self.find_portal = _no_portal
        for cur in self.cursors.values():
            cur.close()
        self.cursors.clear()
        if self._lookup is not None:
            self._lookup.close()
        if self._duck is None:
            return
        try:
            if self.tx is not TxState.IDLE:
                self._duck.execute("ROLLBACK")
        except duckdb.Error:
            pass  # the connection is going away; nothing to keep
        self._duck.close()


def _no_notice(severity: str, message: str) -> None:
    """Where notices go while no connection takes them (before one is wired, after close)."""


def _no_portal(name: str) -> cursors.Cursor | None:
    return None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)?\s*$", re.I)
_UNIT_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000}


def _duration_ms(value: str) -> float:
    """A Postgres duration setting ('200ms', '2s', '1min', plain milliseconds) in milliseconds."""
    m = _DURATION.match(value)
    if not m:
        return 0
    return float(m.group(1)) * _UNIT_MS[(m.group(2) or "ms").lower()]


def constant_row(text: str) -> tuple[list[tuple[str, int]], tuple[int, ...]] | None:
    """Columns and row of a SELECT of integer literals only (`SELECT 1`), as PostgreSQL types and names them; None
    for anything else. Such a statement is answered without DuckDB: a health check costs no more than a round trip."""
    m = _CONSTANT_INTS.match(text)
    if m is None:
        return None
    values = tuple(int(v) for v in re.split(r"\s*,\s*", m.group(1)))
    if not all(-(1 << 63) <= v < 1 << 63 for v in values):
        return None  # numeric: left to DuckDB
    # PostgreSQL folds the minus into the literal: -2147483648 is an integer, 2147483648 a bigint.
    return [("?column?", types.INT4 if -(1 << 31) <= v < 1 << 31 else types.INT8) for v in values], values


def _columns(stmt: Statement, described: list[tuple[str, str]]) -> list[tuple[str, int]]:
    """RowDescription columns from DuckDB's names and types, with the catalog's OIDs where DuckDB has no such type."""
    special = catalog.column_oids(stmt.text) if stmt.kind is Kind.ROWS else {}
    return [(name, special.get(name) or types.oid_of(duck)) for name, duck in described]


def _literal(value: Any) -> exp.Expr:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float | decimal.Decimal):
        return exp.Literal.number(value)
    if isinstance(value, list | tuple):
        return exp.Array(expressions=[_literal(v) for v in value])
    if isinstance(value, dt.datetime | dt.date | dt.time):
        kind = "TIMESTAMP" if isinstance(value, dt.datetime) else type(value).__name__.upper()
        return exp.cast(exp.Literal.string(value.isoformat()), kind)
    return exp.Literal.string(str(value))


def _bind(tree: exp.Expr, params: Sequence[Any]) -> exp.Expr:
    """Replace $n and ? placeholders with the bound values, as sqlglot literals."""
    positional = iter(params)

    def replace(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Parameter) and isinstance(node.this, exp.Literal) and node.this.is_int:
            index = int(node.this.this) - 1
            if not 0 <= index < len(params):
                raise UndefinedParameterNumber(f"there is no parameter ${index + 1}")
            return _literal(params[index])
        if isinstance(node, exp.Placeholder):
            index = pgparams.parameter_index(node)
            if index is not None:
                if not 0 <= index < len(params):
                    raise UndefinedParameterNumber(f"there is no parameter ${index + 1}")
                return _literal(params[index])
            return _literal(next(positional, None))
        return node

    return tree.transform(replace)


def _positional(text: str, params: Sequence[Any]) -> list[Any] | dict[str, Any]:
    """Parameters for DuckDB, which refuses values for $n the text does not use (PostgreSQL allows them)."""
    if text.count("$") >= len(params):
        return list(params)
    used: set[int] = set()
    tokens = split_tokens(text)
    if any(tok.token_type == TokenType.PLACEHOLDER for tok in tokens):
        return list(params)  # `?` placeholders take the values in order
    for tok, nxt in zip(tokens, tokens[1:]):
        if tok.token_type == TokenType.PARAMETER and nxt.token_type == TokenType.NUMBER and nxt.text.isdigit():
            used.add(int(nxt.text))
    return {str(n): params[n - 1] for n in sorted(used) if 0 < n <= len(params)}


_KEPT = "meansql_kept_rows"  # the temporary copy of a semantic statement's kept rows (planner.keep)
# Statements whose DuckDB parse the session keeps (see _keep_parsed).
_PARSE_ONCE = frozenset({"SELECT", "WITH", "VALUES", "FROM", "TABLE", "(", "INSERT", "UPDATE", "DELETE"})
_SESSION_ONLY = cursors.WORDS | {"SAVEPOINT", "RELEASE"}  # statements the session answers without DuckDB


class CannotDescribe(Exception):
    """Only running the statement tells its result columns."""


_UNDESCRIBABLE = {"DESCRIBE", "SUMMARIZE", "PRAGMA", "EXPLAIN", "CALL"}

_SAMPLES: dict[int, Any] = {
    types.BOOL: False, types.INT2: 0, types.INT4: 0, types.INT8: 0, types.FLOAT4: 0.0, types.FLOAT8: 0.0,
    types.NUMERIC: decimal.Decimal(0), types.TEXT: "", types.VARCHAR: "", types.DATE: dt.date(2000, 1, 1),
    types.TIME: dt.time(0), types.TIMESTAMP: dt.datetime(2000, 1, 1),
    types.TIMESTAMPTZ: dt.datetime(2000, 1, 1, tzinfo=dt.UTC), types.INTERVAL: dt.timedelta(0),
    types.UUID: uuid.UUID(int=0), types.BYTEA: b"",
}


def _sample(oid: int) -> Any:
    """A value of a parameter's type, so DuckDB can bind a statement to DESCRIBE it."""
    return _SAMPLES.get(oid)


def pgparams_count(text: str) -> int:
    try:
        return pgparams.count(sqlglot.parse_one(text, read="duckdb"))
    except sqlglot.errors.SqlglotError:
        return 0


# A statement that lost a write-write race with another session's transaction (DuckDB checks at commit time).
_WRITE_CONFLICT = re.compile(r"[Cc]onflict|Failed to commit")
_DUPLICATE = re.compile(r"[Dd]uplicate key")
_RETRY_LOCK = threading.Lock()
CONFLICT_RETRIES = 12
_T = TypeVar("_T")


def _conflict_pause(attempt: int) -> None:
    """Randomised exponential backoff between attempts of a statement that lost a write conflict (up to 50 ms)."""
    time.sleep(random.uniform(0, min(0.05, 0.001 * 2 ** attempt)))


def _lost_race(exc: BaseException, upsert: bool) -> bool:
    """The statement failed only because another session's transaction touched the same rows first."""
    if isinstance(exc, duckdb.TransactionException):
        return _WRITE_CONFLICT.search(str(exc)) is not None
    # An upsert meets another session's uncommitted row of its key as a duplicate: PostgreSQL would wait for
    # that row and then update it.
    return upsert and isinstance(exc, duckdb.ConstraintException) and _DUPLICATE.search(str(exc)) is not None


def _retry_lost_races(once: Callable[[], _T], *, upsert: bool, attempts: int = CONFLICT_RETRIES) -> _T:
    """Run a statement's own transaction, again while it fails only for losing a write race (nothing was written).

    PostgreSQL makes a second writer of a row wait for the first and then goes on (READ COMMITTED); DuckDB fails
    it instead. A statement outside a transaction block changed nothing when it failed, so running it again is
    what PostgreSQL's wait amounts to: an UPDATE of a row another session just changed, or two upserts of one
    annotation, succeed; a real duplicate key still fails, with 23505, on the next attempt.
    """
    for attempt in range(attempts):
        try:
            # Statements that lost once take turns, so they cannot keep beating each other.
            with _RETRY_LOCK if attempt else contextlib.nullcontext():
                return once()
        except (duckdb.TransactionException, duckdb.ConstraintException) as exc:
            if attempt == attempts - 1 or not _lost_race(exc, upsert):
                raise
            _conflict_pause(attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _autocommit(cur: duckdb.DuckDBPyConnection, query: Any, args: Any, text: str) -> None:
    """Run one statement in its own transaction, again if it lost a write conflict."""
    _retry_lost_races(lambda: cur.execute(query, args), upsert="ON CONFLICT" in text.upper())


# Results with a date or timestamp column are read as Arrow, where +/- infinity survives (DuckDB's Python values
# print it as 9999-12-31), when every column's Arrow value is the Python value DuckDB would give.
_DATED = frozenset({"DATE", "TIMESTAMP"})
_ARROW_ROWS = cursors.BULK_TYPES | _DATED | {"DOUBLE", "FLOAT"}


def _stream(cur: duckdb.DuckDBPyConnection, arrow: bool = False, size: int = 2048) -> Iterator[Sequence[Any]]:
    if arrow:
        yield from cursors.rows_of(iter(cur.to_arrow_reader(size)))
        return
    while True:
        chunk = cur.fetchmany(size)
        yield from chunk
        if len(chunk) < size:
            return  # fetchmany fills its batch unless the result is done: no call to find it empty


def _annotation_upsert(text: str) -> str:
    """INSERT INTO training_annotations becomes an upsert: the last annotation of a trace wins."""
    try:
        tree = sqlglot.parse_one(text, read="duckdb")
    except sqlglot.errors.ParseError:
        return text
    if not isinstance(tree, exp.Insert) or tree.args.get("conflict") is not None:
        return text
    target = tree.this
    table = target.this if isinstance(target, exp.Schema) else target
    if not isinstance(table, exp.Table) or table.name.lower() != "training_annotations":
        return text
    columns = [c.name.lower() for c in target.expressions] if isinstance(target, exp.Schema) else []
    if not columns:
        columns = ["trace_id", "trainable", "verified", "confidence", "notes", "tags"]
    updates = [c for c in columns if c not in ("trace_id", "created_at", "updated_at")]
    sets = ", ".join(f"{c} = excluded.{c}" for c in updates)
    sets = (sets + ", " if sets else "") + "updated_at = now()"
    return f"{tree.sql(dialect='duckdb')} ON CONFLICT (trace_id) DO UPDATE SET {sets}"
