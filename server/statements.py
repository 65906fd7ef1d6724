"""Splitting a query string into statements and telling what each one is.

Splitting uses sqlglot's tokenizer, so a semicolon or a keyword inside a string
literal, a dollar-quoted body or a comment never counts.
"""

from __future__ import annotations

import enum
import functools
import threading
from dataclasses import dataclass

from sqlglot.dialects.dialect import Dialect
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import TokenError
from sqlglot.tokens import Token, TokenType


class ThreadTokenizer(threading.local):
    """A sqlglot tokenizer for each thread: one keeps the text it scans and its position in itself, so two
    connections tokenizing at once through one instance read each other's text ("Error tokenizing 'COPY (...)
    TO STDOU'" under load)."""

    def __init__(self, dialect: type[Dialect]) -> None:
        self._tokenizer = dialect().tokenizer_class()

    def tokenize(self, sql: str) -> list[Token]:
        return self._tokenizer.tokenize(sql)


_TOKENIZER = ThreadTokenizer(Postgres)


class Kind(enum.Enum):
    ROWS = "rows"          # returns a result set (SELECT, SHOW, VALUES, ...)
    DML = "dml"            # INSERT/UPDATE/DELETE: a row count
    BEGIN = "begin"
    COMMIT = "commit"
    ROLLBACK = "rollback"
    SET = "set"
    RESET = "reset"
    SHOW = "show"
    COPY = "copy"          # COPY: FROM STDIN / TO STDOUT run by the connection, the rest by DuckDB
    OTHER = "other"        # DDL and the rest: a command tag only


_ROW_WORDS = {"SELECT", "WITH", "VALUES", "TABLE", "FROM", "DESCRIBE", "SUMMARIZE", "PRAGMA",
              "EXPLAIN", "CALL", "PIVOT", "UNPIVOT", "FETCH"}


@dataclass(frozen=True)
class Statement:
    """One statement's text and what kind it is."""

    text: str
    words: tuple[str, ...]  # the first few words, upper case

    @functools.cached_property  # Statements are cached by text (split), so each is classified once
    def kind(self) -> Kind:
        first = self.words[0] if self.words else ""
        if first in ("BEGIN", "START"):
            return Kind.BEGIN
        if first in ("COMMIT", "END"):
            return Kind.COMMIT
        if first in ("ROLLBACK", "ABORT"):
            return Kind.ROLLBACK
        if first == "SET":
            return Kind.SET
        if first == "RESET":
            return Kind.RESET
        if first == "SHOW":
            return Kind.SHOW
        if first == "COPY":
            return Kind.COPY
        if first in ("INSERT", "UPDATE", "DELETE"):
            return Kind.DML
        if first in _ROW_WORDS or first == "(":
            return Kind.ROWS
        return Kind.OTHER

    @functools.cached_property
    def tag(self) -> str:
        """The command tag Postgres sends for statements without a row count."""
        words = [w for w in self.words if w not in ("OR", "REPLACE", "TEMP", "TEMPORARY", "UNIQUE")]
        if not words:
            return ""
        if words[0] in ("CREATE", "DROP", "ALTER") and len(words) > 1:
            return f"{words[0]} {words[1]}"
        return words[0]


def _words(tokens: list[Token]) -> tuple[str, ...]:
    out = []
    for tok in tokens[:4]:
        out.append("(" if tok.token_type == TokenType.L_PAREN else tok.text.upper())
    return tuple(out)


def split_tokens(sql: str) -> list[Token]:
    """The tokens of a query string (empty when it does not tokenize)."""
    try:
        return list(_TOKENIZER.tokenize(sql))
    except TokenError:
        return []


def split(sql: str) -> list[Statement]:
    """Statements of a query string, empty ones dropped."""
    return list(_split(sql))


@functools.lru_cache(maxsize=1024)
def _split(sql: str) -> tuple[Statement, ...]:
    # Clients send the same texts again and again (pools' health checks, ORMs); Statements are frozen.
    return tuple(_split_uncached(sql))


def _split_uncached(sql: str) -> list[Statement]:
    try:
        tokens = _TOKENIZER.tokenize(sql)
    except TokenError:
        # Let the database report the error on the text as written.
        stripped = sql.strip().rstrip(";").strip()
        return [Statement(stripped, tuple(stripped.split()[:4]))] if stripped else []
    statements: list[Statement] = []
    start = 0
    current: list[Token] = []
    for tok in tokens:
        if tok.token_type == TokenType.SEMICOLON:
            text = sql[start:tok.start].strip()
            if current:
                statements.append(Statement(text, _words(current)))
            start, current = tok.end + 1, []
        else:
            current.append(tok)
    if current:
        statements.append(Statement(sql[start:].strip(), _words(current)))
    return statements
