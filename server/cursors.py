"""SQL cursors: DECLARE, FETCH, MOVE and CLOSE as PostgreSQL reads them.

A cursor's rows come from a DuckDB result held open (read with fetchmany), on a
DuckDB connection of its own when the session's transaction has nothing the
cursor must see that another connection cannot (its own uncommitted writes, its
temporary tables); otherwise the rows are taken on the session's connection
when the cursor is declared. Cursors scan forward only.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from server.errors import FeatureNotSupported, ObjectNotInPrerequisiteState, SqlSyntaxError

_NAME = r'(?:[A-Za-z_][\w$]*|"(?:[^"]|"")+")'
_DECLARE = re.compile(
    rf"^DECLARE\s+({_NAME})\s+((?:(?:BINARY|INSENSITIVE|ASENSITIVE|NO\s+SCROLL|SCROLL)\s+)*)CURSOR\s+"
    rf"(?:(WITH|WITHOUT)\s+HOLD\s+)?FOR\s+(.+?)\s*;?\s*$",
    re.I | re.S,
)
_FETCH = re.compile(rf"^(FETCH|MOVE)\s+(?:(.*?)\s+)??(?:(?:FROM|IN)\s+)?({_NAME})\s*;?\s*$", re.I | re.S)
_CLOSE = re.compile(rf"^CLOSE\s+(ALL|{_NAME})\s*;?\s*$", re.I)

ALL = -1  # a count meaning every remaining row

WORDS = frozenset({"DECLARE", "FETCH", "MOVE", "CLOSE"})
# Statements the session answers itself, which DuckDB's parser does not know.
SESSION_WORDS = WORDS | {"SAVEPOINT", "RELEASE", "DEALLOCATE", "LISTEN", "UNLISTEN"}


def name_of(raw: str) -> str:
    """A cursor name as PostgreSQL keeps it: quoted names as written, the rest in lower case."""
    if raw.startswith('"'):
        return raw[1:-1].replace('""', '"')
    return raw.lower()


@dataclass(frozen=True)
class Declare:
    name: str
    query: str
    hold: bool
    binary: bool


@dataclass(frozen=True)
class Fetch:
    verb: str  # FETCH or MOVE
    name: str
    count: int  # rows forward; ALL for every remaining row


def parse_declare(text: str) -> Declare:
    m = _DECLARE.match(text)
    if m is None:
        raise SqlSyntaxError("syntax error in DECLARE: expected DECLARE name [BINARY] [NO SCROLL] CURSOR [WITH HOLD | WITHOUT HOLD] FOR query")
    options = " ".join(m.group(2).upper().split())
    if re.search(r"(?<!NO )SCROLL", options):
        raise FeatureNotSupported("SCROLL cursors are not supported", hint="declare the cursor NO SCROLL and fetch forward")
    return Declare(name_of(m.group(1)), m.group(4), (m.group(3) or "").upper() == "WITH", "BINARY" in options)


def parse_fetch(text: str) -> Fetch:
    m = _FETCH.match(text)
    if m is None:
        raise SqlSyntaxError(f"syntax error in {text.split()[0].upper()}: expected a direction and a cursor name")
    verb, direction, name = m.group(1).upper(), " ".join((m.group(2) or "").upper().split()), m.group(3)
    return Fetch(verb, name_of(name), _count(direction))


def _count(direction: str) -> int:
    """Rows forward for a FETCH/MOVE direction; backward and absolute moves are refused."""
    if direction in ("", "NEXT", "FORWARD"):
        return 1
    if direction in ("ALL", "FORWARD ALL"):
        return ALL
    words = direction.split()
    number = words[-1]
    if words[:-1] in ([], ["FORWARD"]) and re.fullmatch(r"[+-]?\d+", number):
        n = int(number)
        if n > 0:
            return n
        if n == 0:
            raise FeatureNotSupported("FETCH 0 (the current row again) is not supported")
    if words[0] in ("PRIOR", "BACKWARD", "FIRST", "LAST", "ABSOLUTE", "RELATIVE") or direction.startswith(("-", "FORWARD -")):
        raise ObjectNotInPrerequisiteState("cursor can only scan forward", hint="Declare it with SCROLL option to enable backward scan.")
    raise SqlSyntaxError(f'syntax error at or near "{words[0]}"')


def parse_close(text: str) -> str | None:
    """The cursor CLOSE names; None for CLOSE ALL."""
    m = _CLOSE.match(text)
    if m is None:
        raise SqlSyntaxError("syntax error in CLOSE: expected CLOSE name or CLOSE ALL")
    return None if m.group(1).upper() == "ALL" else name_of(m.group(1))


class Cursor:
    """An open cursor: its columns and the rows not fetched yet."""

    def __init__(
        self,
        name: str,
        columns: list[tuple[str, int]],
        rows: Iterator[Sequence[Any]],
        *,
        hold: bool,
        binary: bool,
        in_transaction: bool,
        connection: duckdb.DuckDBPyConnection | None = None,
        duck_types: list[str] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.columns = columns
        self.duck_types = duck_types
        self.hold = hold
        self.binary = binary
        self.in_transaction = in_transaction  # declared in the open transaction (a ROLLBACK removes it)
        self._rows = rows
        self._connection = connection
        self._on_close = on_close

    def take(self, count: int) -> Iterator[Sequence[Any]]:
        """The next `count` rows (ALL: the rest), read as they are sent."""
        return self._rows if count == ALL else itertools.islice(self._rows, count)

    def skip(self, count: int) -> int:
        """Move forward without sending rows; the number of rows passed."""
        return sum(1 for _ in self.take(count))

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
        if self._connection is not None:
            self._connection.close()
            self._connection = None
