"""Per-connection state: session id, SET parameters, transaction state, statements.

A session runs each statement on its own DuckDB cursor. Statements with a
semantic operator are parsed with the meansql dialect and rewritten; the rest
go to DuckDB as written.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from semantic_ops import dialect, functions, planner, rewrite
from semantic_ops.errors import QueryCanceled, SemanticTypeError
from semantic_ops.executor import Executor, QueryContext
from server.errors import InFailedTransaction, MultipleCommands, UndefinedParameter, UndefinedParameterNumber
from server.pgwire import types
from server.statements import Kind, Statement, split
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
    "timezone": "UTC",
    "server_version": "15.0",
    "server_encoding": "UTF8",
    "integer_datetimes": "on",
    "transaction_isolation": "read committed",
    "default_transaction_isolation": "read committed",
    "lc_messages": "C",
    "is_superuser": "on",
    "max_identifier_length": "63",
}

_SET = re.compile(r"^SET\s+(?:SESSION\s+|LOCAL\s+)?([\w.\"]+)\s*(?:=|\s+TO\s+)\s*(.+?)\s*;?\s*$", re.I | re.S)
_SHOW = re.compile(r"^SHOW\s+([\w.\"]+)\s*;?\s*$", re.I)
_RESET = re.compile(r"^RESET\s+([\w.\"]+)\s*;?\s*$", re.I)
_SHOW_LIKE = re.compile(r"^SHOW\s+TABLES\s+LIKE\s+('(?:[^']|'')*')\s*;?\s*$", re.I)


def session_name() -> str:
    """A readable session id such as sql-clever-fox-3f2a."""
    return f"sql-{secrets.choice(_ADJECTIVES)}-{secrets.choice(_ANIMALS)}-{secrets.token_hex(2)}"


class TxState(enum.Enum):
    IDLE = b"I"
    IN_TRANSACTION = b"T"
    FAILED = b"E"


@dataclass
class Result:
    """What one statement gives the client: columns and rows, or just a tag."""

    tag: str
    columns: list[tuple[str, int]] | None = None
    rows: Iterator[Sequence[Any]] | None = None
    count_rows: bool = False  # the tag takes the number of rows sent


def _unquote(name: str) -> str:
    return name.strip('"').lower()


def _setting_value(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1].replace("''", "'")
    return raw


class Session:
    """One client connection's view of meansql."""

    def __init__(self, store: Store, executor: Executor, *, user: str = "", database: str = "") -> None:
        self.id = session_name()
        self.store = store
        self.executor = executor
        self.cursor = store.cursor()
        self.user = user
        self.database = database
        self.settings: dict[str, str] = dict(CLIENT_PARAMETERS)
        self.tx = TxState.IDLE
        self.notice: Callable[[str, str], None] = lambda severity, message: None
        self._current: QueryContext | None = None
        self._running = False
        self._cancel_reason = "user request"
        self._lock = threading.Lock()

    # -- statements -------------------------------------------------------
    def split(self, sql: str) -> list[Statement]:
        return split(sql)

    def run(self, stmt: Statement, params: Sequence[Any] | None = None) -> Result:
        """Run one statement; errors propagate (and mark a transaction failed)."""
        kind = stmt.kind
        if self.tx is TxState.FAILED and kind not in (Kind.ROLLBACK, Kind.COMMIT):
            raise InFailedTransaction(
                "current transaction is aborted, commands ignored until end of transaction block"
            )
        try:
            return self._run(stmt, kind, params)
        except BaseException:
            if self.tx is TxState.IN_TRANSACTION:
                self.tx = TxState.FAILED
            raise

    def _run(self, stmt: Statement, kind: Kind, params: Sequence[Any] | None) -> Result:
        if kind is Kind.BEGIN:
            if self.tx is TxState.IDLE:
                self.cursor.execute("BEGIN TRANSACTION")
                self.tx = TxState.IN_TRANSACTION
            else:
                self.notice("WARNING", "there is already a transaction in progress")
            return Result("BEGIN")
        if kind in (Kind.COMMIT, Kind.ROLLBACK):
            return self._end_transaction(kind)
        if kind is Kind.SET and (r := self._set(stmt.text)) is not None:
            return r
        if kind is Kind.SHOW and (r := self._show(stmt.text)) is not None:
            return r
        if kind is Kind.RESET and (m := _RESET.match(stmt.text)):
            name = _unquote(m.group(1))
            if name in CLIENT_PARAMETERS:
                self.settings[name] = CLIENT_PARAMETERS[name]
            else:
                self.settings.pop(name, None)
            return Result("RESET")
        return self._execute(stmt, kind, params)

    def _end_transaction(self, kind: Kind) -> Result:
        if self.tx is TxState.IDLE:
            self.notice("WARNING", "there is no transaction in progress")
            return Result("COMMIT" if kind is Kind.COMMIT else "ROLLBACK")
        failed = self.tx is TxState.FAILED
        self.tx = TxState.IDLE
        if kind is Kind.COMMIT and not failed:
            self.cursor.execute("COMMIT")
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
        if name in CLIENT_PARAMETERS or name.startswith("meansql."):
            self.settings[name] = value
            return Result("SET")
        return None  # a DuckDB setting

    def _show(self, text: str) -> Result | None:
        m = _SHOW.match(text)
        if m:
            name = _unquote(m.group(1))
            if name in self.settings:
                return Result("SHOW", [(name, types.TEXT)], iter([(self.settings[name],)]))
            if name.startswith("meansql."):
                raise UndefinedParameter(f'unrecognized configuration parameter "{name}"')
        return None

    # -- DuckDB -----------------------------------------------------------------
    def _translate(self, stmt: Statement, params: Sequence[Any] | None = None
                   ) -> tuple[str, QueryContext | None, list[planner.Stage]]:
        """The DuckDB text of a statement, rewritten if it has a semantic operator, and its stages."""
        registry = self.executor.registry
        text = stmt.text
        if m := _SHOW_LIKE.match(text):
            return f"SELECT name FROM (SHOW TABLES) WHERE name LIKE {m.group(1)}", None, []
        if not dialect.has_semantic_words(text, registry.infix, [*registry.by_function.keys(), functions.VECTOR_SEARCH]):
            if stmt.kind is Kind.DML and stmt.words[:2] == ("INSERT", "INTO"):
                text = _annotation_upsert(text)
            return text, None, []
        ctx = self.executor.begin(self.id, self.notice, self.settings)
        try:
            parsed = dialect.parse(text, registry.infix)
            if len(parsed) != 1:
                raise MultipleCommands("one statement at a time, please")
            signatures = registry.signatures()
            bound = _bind(parsed[0], params) if params else parsed[0]
            tree, _plan = rewrite.rewrite(bound, signatures, ctx.query_id)
            stages = planner.plan(tree, [s.udf_name for s in signatures.values()])
        except BaseException:
            self.executor.end(ctx)
            raise
        return dialect.to_duckdb(tree), ctx, stages

    def _execute(self, stmt: Statement, kind: Kind, params: Sequence[Any] | None) -> Result:
        text, ctx, stages = self._translate(stmt, params)
        # A semantic statement has its parameters bound as literals (its stages run without them).
        args = list(params) if params and ctx is None else None
        cur = self.cursor
        timer = self._start_timer()
        with self._lock:
            self._current = ctx
            self._running = True
        try:
            if ctx is not None and stages:
                self.executor.prepare(ctx, stages, lambda sql: cur.execute(sql, args).fetchall())
            cur.execute(text, args)
            if ctx is not None:
                # Semantic results are materialised so every answer is judged and
                # logged before the first row goes out.
                rows: list[Any] | None = cur.fetchall() if cur.description else None
        except duckdb.Error as exc:
            if ctx is not None and ctx.error is not None:
                raise ctx.error from exc
            if isinstance(exc, duckdb.InterruptException):
                raise QueryCanceled(f"canceling statement due to {self._cancel_reason}") from exc
            if ctx is not None and isinstance(exc, duckdb.BinderException):
                raise self._argument_error(exc) from exc
            raise
        finally:
            with self._lock:
                self._running = False
            if timer is not None:
                timer.cancel()
            if ctx is not None:
                self._finish(ctx)
            self._cancel_reason = "user request"
        description = cur.description
        if description is None:
            return Result(stmt.tag)
        if kind is Kind.DML and [d[0] for d in description] == ["Count"]:
            (count,) = cur.fetchone() or (0,)
            return Result(("INSERT 0 " if stmt.words[0] == "INSERT" else f"{stmt.words[0]} ") + str(count))
        if kind is Kind.OTHER and [d[0] for d in description] == ["Count"]:
            return Result(stmt.tag)
        columns = [(d[0], types.oid_of(str(d[1]))) for d in description]
        if ctx is not None:
            return Result("SELECT", columns, iter(rows or []), count_rows=True)
        return Result("SELECT", columns, _stream(cur), count_rows=True)

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

    def describe(self, stmt: Statement, n_params: int) -> list[tuple[str, int]] | None:
        """Result columns of a statement, found without running it."""
        if stmt.kind is not Kind.ROWS:
            return None
        text, ctx, _stages = self._translate(stmt)
        if ctx is not None:
            self.executor.end(ctx)
        cur = self.store.cursor()
        try:
            rows = cur.execute(f"DESCRIBE {text}", [None] * n_params if n_params else None).fetchall()
        finally:
            cur.close()
        return [(r[0], types.oid_of(str(r[1]))) for r in rows]

    def _finish(self, ctx: QueryContext) -> None:
        with self._lock:
            self._current = None
        self.executor.end(ctx)

    def _start_timer(self) -> threading.Timer | None:
        ms = _duration_ms(self.settings.get("statement_timeout", "0"))
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
            self.cursor.interrupt()

    def close(self) -> None:
        try:
            if self.tx is not TxState.IDLE:
                self.cursor.execute("ROLLBACK")
        except duckdb.Error:
            pass  # the connection is going away; nothing to keep
        self.cursor.close()


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)?\s*$", re.I)
_UNIT_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000}


def _duration_ms(value: str) -> float:
    """A Postgres duration setting ('200ms', '2s', '1min', plain milliseconds) in milliseconds."""
    m = _DURATION.match(value)
    if not m:
        return 0
    return float(m.group(1)) * _UNIT_MS[(m.group(2) or "ms").lower()]


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
            return _literal(next(positional, None))
        return node

    return tree.transform(replace)


def _stream(cur: duckdb.DuckDBPyConnection, size: int = 2048) -> Iterator[Sequence[Any]]:
    while True:
        chunk = cur.fetchmany(size)
        if not chunk:
            return
        yield from chunk


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
