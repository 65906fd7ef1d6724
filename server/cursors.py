"""SQL cursors: DECLARE, FETCH, MOVE and CLOSE as PostgreSQL reads them.

A cursor's rows come from a DuckDB result held open (read with fetchmany), on a
DuckDB connection of its own when the session's transaction has nothing the
cursor must see that another connection cannot (its own uncommitted writes, its
temporary tables); otherwise the rows are taken on the session's connection
when the cursor is declared. A SCROLL cursor keeps the rows it has read, so it
can also move backward and to absolute or relative positions; the others scan
forward only, as PostgreSQL's NO SCROLL cursors do.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from server.errors import ObjectNotInPrerequisiteState, SqlSyntaxError
from server.pgwire import codec

_NAME = r'(?:[A-Za-z_][\w$]*|"(?:[^"]|"")+")'
_DECLARE = re.compile(
    rf"^DECLARE\s+({_NAME})\s+((?:(?:BINARY|INSENSITIVE|ASENSITIVE|NO\s+SCROLL|SCROLL)\s+)*)CURSOR\s+"
    rf"(?:(WITH|WITHOUT)\s+HOLD\s+)?FOR\s+(.+?)\s*;?\s*$",
    re.I | re.S,
)
_FETCH = re.compile(rf"^(FETCH|MOVE)\s+(?:(.*?)\s+)??(?:(?:FROM|IN)\s+)?({_NAME})\s*;?\s*$", re.I | re.S)
_CLOSE = re.compile(rf"^CLOSE\s+(ALL|{_NAME})\s*;?\s*$", re.I)

ALL = -1  # a count meaning every remaining row
BULK_ROWS = 8_192  # rows per Arrow batch a bulk cursor reads
# Types whose Arrow values are the Python values DuckDB's fetch gives (HUGEINT would come back as Decimal).
BULK_TYPES = codec.BULK_TEXT_TYPES - {"HUGEINT"}

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
    scroll: bool = False


@dataclass(frozen=True)
class Fetch:
    verb: str  # FETCH or MOVE
    name: str
    count: int  # rows (ALL for every remaining row), or the position of ABSOLUTE / RELATIVE
    how: str = "forward"  # forward, backward, absolute or relative


def parse_declare(text: str) -> Declare:
    m = _DECLARE.match(text)
    if m is None:
        raise SqlSyntaxError("syntax error in DECLARE: expected DECLARE name [BINARY] [NO SCROLL] CURSOR [WITH HOLD | WITHOUT HOLD] FOR query")
    options = " ".join(m.group(2).upper().split())
    scroll = re.search(r"(?<!NO )SCROLL", options) is not None
    return Declare(name_of(m.group(1)), m.group(4), (m.group(3) or "").upper() == "WITH", "BINARY" in options, scroll)


def parse_fetch(text: str) -> Fetch:
    m = _FETCH.match(text)
    if m is None:
        raise SqlSyntaxError(f"syntax error in {text.split()[0].upper()}: expected a direction and a cursor name")
    verb, direction, name = m.group(1).upper(), " ".join((m.group(2) or "").upper().split()), m.group(3)
    how, count = _direction(direction)
    return Fetch(verb, name_of(name), count, how)


def _direction(direction: str) -> tuple[str, int]:
    """(how, count) of a FETCH/MOVE direction, as PostgreSQL's grammar reads it."""
    fixed = {"": ("forward", 1), "NEXT": ("forward", 1), "FORWARD": ("forward", 1), "ALL": ("forward", ALL),
             "FORWARD ALL": ("forward", ALL), "PRIOR": ("backward", 1), "BACKWARD": ("backward", 1),
             "BACKWARD ALL": ("backward", ALL), "FIRST": ("absolute", 1), "LAST": ("absolute", -1)}
    if direction in fixed:
        return fixed[direction]
    words = direction.split()
    if re.fullmatch(r"[+-]?\d+", words[-1]) and len(words) <= 2:
        n = int(words[-1])
        head = words[0] if len(words) == 2 else ""
        if head in ("", "FORWARD"):
            return ("forward", n) if n >= 0 else ("backward", -n)
        if head == "BACKWARD":
            return ("backward", n) if n >= 0 else ("forward", -n)
        if head in ("ABSOLUTE", "RELATIVE"):
            return head.lower(), n
    raise SqlSyntaxError(f'syntax error at or near "{words[0]}"')


def rows_of(batches: Iterator[pa.RecordBatch]) -> Iterator[Sequence[Any]]:
    """Python rows of Arrow batches."""
    for batch in batches:
        yield from zip(*(codec.pylist(column) for column in batch.columns))


def parse_close(text: str) -> str | None:
    """The cursor CLOSE names; None for CLOSE ALL."""
    m = _CLOSE.match(text)
    if m is None:
        raise SqlSyntaxError("syntax error in CLOSE: expected CLOSE name or CLOSE ALL")
    return None if m.group(1).upper() == "ALL" else name_of(m.group(1))


class Cursor:
    """An open cursor: its columns, and where it stands in its rows.

    The position counts as PostgreSQL's does: 0 before the first row, k on row k, and
    one past the last row once the rows ran out.
    """

    def __init__(
        self,
        name: str,
        columns: list[tuple[str, int]],
        rows: Iterator[Sequence[Any]],
        *,
        hold: bool,
        binary: bool,
        in_transaction: bool,
        scroll: bool = False,
        connection: duckdb.DuckDBPyConnection | None = None,
        duck_types: list[str] | None = None,
        batches: pa.RecordBatchReader | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.columns = columns
        self.duck_types = duck_types
        self.hold = hold
        self.binary = binary
        self.scroll = scroll
        self.in_transaction = in_transaction  # declared in the open transaction (a ROLLBACK removes it)
        # A forward cursor over a DuckDB result of plain types reads it as Arrow batches, which FETCH frames
        # in bulk; otherwise rows, one by one.
        self._batches = None if scroll else batches
        self._left: pa.RecordBatch | None = None  # the part of a batch the last FETCH did not take
        self._rows = rows if self._batches is None else rows_of(self.take_batches(ALL))
        self._seen: list[Sequence[Any]] = []  # a SCROLL cursor's rows read so far
        self._ended = False  # every row has been read
        self._position = 0
        self._connection = connection
        self._on_close = on_close

    @property
    def bulk(self) -> bool:
        """FETCH can hand out Arrow batches (take_batches) rather than rows."""
        return self._batches is not None

    def take(self, count: int) -> Iterator[Sequence[Any]]:
        """The next `count` rows (ALL: the rest), read as they are sent."""
        if self.scroll:
            return iter(self.fetch(Fetch("FETCH", self.name, count)))
        if self._batches is not None:
            return rows_of(self.take_batches(count))
        return self._rows if count == ALL else itertools.islice(self._rows, count)

    def take_batches(self, count: int) -> Iterator[pa.RecordBatch]:
        """The next `count` rows (ALL: the rest) of a bulk cursor, as Arrow batches read as they are sent."""
        reader = self._batches
        if reader is None:
            raise RuntimeError("this cursor reads rows, not batches")
        want = count
        while want == ALL or want > 0:
            if self._left is not None:
                batch, self._left = self._left, None
            else:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
            if want != ALL:
                if batch.num_rows > want:
                    batch, self._left = batch.slice(0, want), batch.slice(want)
                want -= batch.num_rows
            if batch.num_rows:
                yield batch

    def skip(self, count: int) -> int:
        """Move forward without sending rows; the number of rows passed."""
        if self._batches is not None:
            return sum(b.num_rows for b in self.take_batches(count))
        return sum(1 for _ in self.take(count))

    def fetch(self, step: Fetch) -> list[Sequence[Any]]:
        """The rows a FETCH (or MOVE) of a SCROLL cursor passes, moving the cursor as PostgreSQL does."""
        if not self.scroll:
            if step.how == "forward" and step.count != 0:
                return list(self.take(step.count))
            raise ObjectNotInPrerequisiteState("cursor can only scan forward",
                                               hint="Declare it with SCROLL option to enable backward scan.")
        if step.how == "forward" and step.count != 0:
            return self._walk(step.count, 1)
        if step.how == "backward" and step.count != 0:
            return self._walk(step.count, -1)
        if step.how == "absolute":
            target = step.count
            if target < 0:
                self._row(None)
                target = len(self._seen) + 1 + target
            return self._go(max(target, 0))
        return self._go(self._position + (step.count if step.how == "relative" else 0))

    def _row(self, k: int | None) -> Sequence[Any] | None:
        """Row k (1-based) of a SCROLL cursor, reading ahead as needed; None past the end (k None: read all)."""
        while not self._ended and (k is None or len(self._seen) < k):
            nxt = next(self._rows, None)
            if nxt is None:
                self._ended = True
            else:
                self._seen.append(nxt)
        return self._seen[k - 1] if k is not None and 1 <= k <= len(self._seen) else None

    def _go(self, target: int) -> list[Sequence[Any]]:
        if target <= 0:
            self._position = 0
            return []
        row = self._row(target)
        if row is None:
            self._position = len(self._seen) + 1
            return []
        self._position = target
        return [row]

    def _walk(self, count: int, step: int) -> list[Sequence[Any]]:
        out: list[Sequence[Any]] = []
        while count == ALL or len(out) < count:
            target = self._position + step
            row = self._row(target) if target > 0 else None
            if row is None:
                self._position = 0 if step < 0 else len(self._seen) + 1
                break
            self._position = target
            out.append(row)
        return out

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
        if self._connection is not None:
            self._connection.close()
            self._connection = None
