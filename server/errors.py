"""The one table that turns any exception into an ErrorResponse's fields.

Our own errors carry ``sqlstate``; DuckDB's and sqlglot's are looked up here by
class and message. Only framing and authentication errors are FATAL; the
session survives everything else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from training.errors import MeansqlError


@dataclass(frozen=True)
class ErrorFields:
    severity: str
    sqlstate: str
    message: str
    hint: str | None = None
    position: int | None = None
    detail: str | None = None


class ProtocolViolation(MeansqlError, code="08P01"):
    """The client broke the wire protocol; the connection is closed."""

    severity = "FATAL"


class InFailedTransaction(MeansqlError, code="25P02"):
    """A statement arrived after an error inside an explicit transaction."""


class NoActiveTransaction(MeansqlError, code="25P01"):
    """SAVEPOINT outside a transaction block."""


class SavepointsNotSupported(MeansqlError, code="0A000"):
    """ROLLBACK TO SAVEPOINT after changes made before it: DuckDB keeps no savepoints."""


class UndefinedSavepoint(MeansqlError, code="3B001"):
    """RELEASE or ROLLBACK TO a savepoint that was not set."""


class UndefinedPreparedStatement(MeansqlError, code="26000"):
    """Bind or Describe named a prepared statement that does not exist."""


class DuplicatePreparedStatement(MeansqlError, code="42P05"):
    """Parse named a prepared statement that already exists."""


class DuplicateCursor(MeansqlError, code="42P03"):
    """Bind named a portal that already exists."""


class UndefinedCursor(MeansqlError, code="34000"):
    """Execute or Describe named a portal that does not exist."""


class BindMismatch(MeansqlError, code="08P01"):
    """Bind supplied a different number of parameters than the statement declares (the session survives)."""


class CharacterNotInRepertoire(MeansqlError, code="22021"):
    """Query text or COPY data that is not valid UTF-8."""


class MultipleCommands(MeansqlError, code="42601"):
    """A prepared statement holds more than one command."""


class UndefinedParameterNumber(MeansqlError, code="42P02"):
    """A statement refers to $n beyond the parameters bound."""


class UndefinedParameter(MeansqlError, code="42704"):
    """SHOW of a configuration parameter nobody set."""


class InvalidParameterValue(MeansqlError, code="22023"):
    """SET of a configuration parameter to a value it cannot take."""


class CantChangeRuntimeParam(MeansqlError, code="55P02"):
    """SET of a parameter fixed at start-up (server_version, server_encoding, ...)."""


class InvalidTextRepresentation(MeansqlError, code="22P02"):
    """A text value that does not read as its type."""


class InvalidBinaryRepresentation(MeansqlError, code="22P03"):
    """A binary parameter whose bytes do not fit its type."""


class FeatureNotSupported(MeansqlError, code="0A000"):
    """Something Postgres does that meansql does not."""


class InsufficientPrivilege(MeansqlError, code="42501"):
    """A statement that would touch the server's files, extensions or locked configuration."""


class SqlSyntaxError(MeansqlError, code="42601"):
    """A statement meansql reads itself (DECLARE, FETCH, ...) that does not follow its grammar."""


class ObjectNotInPrerequisiteState(MeansqlError, code="55000"):
    """An object that cannot do what was asked in its state (a forward-only cursor asked to go back)."""


class ProtocolError(MeansqlError, code="08P01"):
    """A frontend message that breaks the extended protocol's rules (the session survives)."""


# SQLSTATEs of the warnings the session sends as NOTICEs, by message.
NOTICE_CODES = {
    "there is no transaction in progress": "25P01",
    "there is already a transaction in progress": "25001",
}


# (exception class, message pattern or None, sqlstate); first match wins.
_DUCKDB_TABLE: list[tuple[type[BaseException], str | None, str]] = [
    (duckdb.InterruptException, None, "57014"),
    (duckdb.ParserException, None, "42601"),
    (duckdb.CatalogException, r"Table with name|Table .* does not exist|View with name", "42P01"),
    (duckdb.CatalogException, r"Type with name", "42704"),
    (duckdb.CatalogException, r"Scalar Function with name|Function with name|function .* does not exist", "42883"),
    (duckdb.CatalogException, r"already exists", "42P07"),
    (duckdb.CatalogException, r"Schema with name", "3F000"),
    (duckdb.CatalogException, None, "42704"),
    (duckdb.BinderException, r"Referenced column|column .* not found|does not have a column", "42703"),
    (duckdb.BinderException, r"No function matches", "42883"),
    (duckdb.BinderException, None, "42601"),
    (duckdb.ConstraintException, r"Duplicate key|PRIMARY KEY|UNIQUE", "23505"),
    (duckdb.ConstraintException, r"NOT NULL", "23502"),
    (duckdb.ConstraintException, r"CHECK", "23514"),
    (duckdb.ConstraintException, r"foreign key", "23503"),
    (duckdb.ConstraintException, None, "23000"),
    (duckdb.ConversionException, r"out of range|Overflow", "22003"),
    (duckdb.ConversionException, None, "22P02"),
    (duckdb.OutOfRangeException, None, "22003"),
    (duckdb.InvalidTypeException, None, "42804"),
    (duckdb.TypeMismatchException, None, "42804"),
    (duckdb.TransactionException, r"aborted", "25P02"),
    (duckdb.TransactionException, r"[Cc]onflict", "40001"),
    (duckdb.TransactionException, r"Failed to commit: .*(PRIMARY KEY|UNIQUE|[Dd]uplicate key)", "23505"),
    (duckdb.TransactionException, None, "25000"),
    (duckdb.PermissionException, None, "42501"),
    (duckdb.IOException, None, "58030"),
    (duckdb.OutOfMemoryException, None, "53200"),
    (duckdb.NotImplementedException, None, "0A000"),
    (duckdb.InvalidInputException, r"division by zero", "22012"),
    (duckdb.InvalidInputException, r"configuration has been locked|Cannot enable external access|"
                                   r"when enable_external_access is disabled", "42501"),
    (duckdb.InvalidInputException, None, "22023"),
]

_PREFIX = re.compile(r"^[A-Za-z ]+ Error: ")
_LINE = re.compile(r"\n\s*LINE \d+:.*", re.S)
_CARET = re.compile(r"LINE (\d+): (.*)\n( *)\^")


def _position(text: str, sql: str | None) -> int | None:
    """The 1-based character position of DuckDB's caret in the statement, as Postgres' P field."""
    if sql is None:
        return None
    m = _CARET.search(text)
    if not m:
        return len(sql) + 1 if "at end of input" in text else None
    line, excerpt, column = int(m.group(1)), m.group(2), len(m.group(3)) - len(f"LINE {m.group(1)}: ")
    lines = sql.split("\n")
    if line > len(lines) or excerpt.startswith("..."):
        return None
    return sum(len(x) + 1 for x in lines[:line - 1]) + column + 1


_INT_NAMES = {"INT16": "smallint", "INT32": "integer", "INT64": "bigint", "DOUBLE": "double precision",
              "FLOAT": "real", "BOOL": "boolean", "DATE": "date", "TIMESTAMP": "timestamp", "UUID": "uuid"}

_FILE_HINT = ("send data with COPY ... FROM STDIN and read it with COPY (query) TO STDOUT (psql's \\copy); "
              "the server's own files are for the server's owner")

# DuckDB's wording → Postgres' (message, hint-or-detail); what DuckDB adds ("Did you mean", candidates) is the hint.
_WORDING: list[tuple[re.Pattern[str], Callable[[re.Match[str]], tuple[str, str | None, str | None]]]] = [
    (re.compile(r'^Table with name (\S+) does not exist!\s*(.*)$', re.S),
     lambda m: (f'relation "{m.group(1)}" does not exist', m.group(2) or None, None)),
    (re.compile(r'^Referenced column "([^"]+)" not found in FROM clause!\s*(.*)$', re.S),
     lambda m: (f'column "{m.group(1)}" does not exist', m.group(2).replace("\n", " ") or None, None)),
    (re.compile(r"^Could not convert string '(.*)' to (\w+)$", re.S),
     lambda m: (f'invalid input syntax for type {_INT_NAMES.get(m.group(2), m.group(2).lower())}: "{m.group(1)}"',
                None, None)),
    (re.compile(r'^Cannot access (?:file|directory) "(.*)" - file system operations are disabled by configuration',
                re.S),
     lambda m: (f'permission denied for "{m.group(1)}": clients cannot read or write files or URLs through the '
                "meansql server", _FILE_HINT, None)),
    (re.compile(r"^Loading external extensions is disabled"),
     lambda m: ("permission denied to load extensions: clients cannot install or load DuckDB extensions on the "
                "meansql server", None, None)),
    (re.compile(r'^Cannot change configuration option "(\w+)" - the configuration has been locked'),
     lambda m: (f'permission denied to set parameter "{m.group(1)}"', None, None)),
    (re.compile(r"^(Cannot enable external access|Cannot change allowed_\w+ when enable_external_access)"),
     lambda m: ("permission denied to change file access: clients cannot read or write files on the meansql "
                "server", None, None)),
    (re.compile(r'^Duplicate key "(\w+): (.*)" violates (?:primary key|unique) constraint\.?', re.S),
     lambda m: ("duplicate key value violates unique constraint", None,
                f"Key ({m.group(1)})=({m.group(2)}) already exists.")),
    (re.compile(r"^NOT NULL constraint failed: (?:(\w+)\.)?(\w+)$"),
     lambda m: (f'null value in column "{m.group(2)}" of relation "{m.group(1)}" violates not-null constraint',
                None, None)),
]


def _wording(text: str) -> tuple[str, str | None, str | None]:
    for pattern, render in _WORDING:
        m = pattern.match(text)
        if m:
            return render(m)
    return text, None, None


def _clean(text: str) -> str:
    """DuckDB's message without its class prefix and source excerpt."""
    text = _LINE.sub("", text)
    return _PREFIX.sub("", text.strip()).strip()


def translate(exc: BaseException, sql: str | None = None) -> ErrorFields:
    """ErrorResponse fields for any exception (sql: the statement text, for a position)."""
    from server.pgwire import types

    if isinstance(exc, types.InvalidTextRepresentation):
        return ErrorFields("ERROR", "22P02", str(exc))
    if isinstance(exc, MeansqlError):
        return ErrorFields(exc.severity, exc.sqlstate, exc.message, exc.hint, exc.position)
    try:
        import sqlglot.errors

        if isinstance(exc, sqlglot.errors.ParseError):
            return ErrorFields("ERROR", "42601", str(exc).splitlines()[0])
    except ImportError:  # pragma: no cover - sqlglot is a dependency
        pass
    if isinstance(exc, duckdb.Error):
        text = str(exc)
        # DuckDB reports "at or near" with a LINE excerpt and a caret; keep the message short.
        position = _position(text, sql)
        for cls, pattern, code in _DUCKDB_TABLE:
            if isinstance(exc, cls) and (pattern is None or re.search(pattern, text)):
                message, hint, detail = _wording(_clean(text))
                return ErrorFields("ERROR", code, message, hint=hint, position=position, detail=detail)
        return ErrorFields("ERROR", "XX000", _clean(text))
    return ErrorFields("ERROR", "XX000", f"internal error: {type(exc).__name__}: {exc}")
