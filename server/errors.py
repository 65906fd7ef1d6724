"""The one table that turns any exception into an ErrorResponse's fields.

Our own errors carry ``sqlstate``; DuckDB's and sqlglot's are looked up here by
class and message. Only framing and authentication errors are FATAL; the
session survives everything else.
"""

from __future__ import annotations

import re
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
    """ROLLBACK TO SAVEPOINT: DuckDB keeps no savepoints."""


class UndefinedPreparedStatement(MeansqlError, code="26000"):
    """Bind or Describe named a prepared statement that does not exist."""


class UndefinedCursor(MeansqlError, code="34000"):
    """Execute or Describe named a portal that does not exist."""


class DuplicatePreparedStatement(MeansqlError, code="42P05"):
    """Parse named a prepared statement that already exists."""


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


# (exception class, message pattern or None, sqlstate); first match wins.
_DUCKDB_TABLE: list[tuple[type[BaseException], str | None, str]] = [
    (duckdb.InterruptException, None, "57014"),
    (duckdb.ParserException, None, "42601"),
    (duckdb.CatalogException, r"Table with name|Table .* does not exist|View with name", "42P01"),
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
    (duckdb.ConversionException, None, "22P02"),
    (duckdb.OutOfRangeException, None, "22003"),
    (duckdb.InvalidTypeException, None, "42804"),
    (duckdb.TypeMismatchException, None, "42804"),
    (duckdb.TransactionException, r"aborted", "25P02"),
    (duckdb.TransactionException, r"[Cc]onflict", "40001"),
    (duckdb.TransactionException, None, "25000"),
    (duckdb.PermissionException, None, "42501"),
    (duckdb.IOException, None, "58030"),
    (duckdb.OutOfMemoryException, None, "53200"),
    (duckdb.NotImplementedException, None, "0A000"),
    (duckdb.InvalidInputException, None, "22023"),
]

_PREFIX = re.compile(r"^[A-Za-z ]+ Error: ")
_LINE = re.compile(r"\n\s*LINE \d+:.*", re.S)


def _clean(text: str) -> str:
    """DuckDB's message without its class prefix and source excerpt."""
    text = _LINE.sub("", text)
    return _PREFIX.sub("", text.strip()).strip()


def translate(exc: BaseException) -> ErrorFields:
    """ErrorResponse fields for any exception."""
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
        position = None
        # DuckDB reports "at or near" with a LINE excerpt; keep the message short.
        for cls, pattern, code in _DUCKDB_TABLE:
            if isinstance(exc, cls) and (pattern is None or re.search(pattern, text)):
                return ErrorFields("ERROR", code, _clean(text), position=position)
        return ErrorFields("ERROR", "XX000", _clean(text))
    return ErrorFields("ERROR", "XX000", f"internal error: {type(exc).__name__}: {exc}")
