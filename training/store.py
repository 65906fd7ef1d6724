"""The DuckDB store: one database file, one writer thread, read cursors on demand.

DuckDB allows one writing process per file, and inside it writes are cheapest
when batched: log rows queue to a single thread that commits them one
transaction per batch and resolves each caller's future once its rows are
durable (the WAL is synced on commit).
"""

from __future__ import annotations

import importlib.util
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from training import schema
from training.errors import DatabaseLocked, StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")
Cursor = duckdb.DuckDBPyConnection
_STOP = object()


def _open(path: str) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(path)
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            raise DatabaseLocked(
                f"the database file {path} is held by another process "
                f"(a running `meansql serve`?): {text.splitlines()[0]}",
                hint="talk to the running server instead: --url postgresql://localhost:15432/default",
            ) from exc
        raise StoreError(f"cannot open {path}: {text}") from exc
    except duckdb.Error as exc:
        raise StoreError(
            f"cannot open {path}: {exc}",
            hint=f"if the write-ahead log {path}.wal is damaged, move it aside "
            f"(mv {path}.wal {path}.wal.bad) and start again; rows after the last checkpoint are in it",
        ) from exc


def insert_rows(cur: Cursor, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert many rows at once through an Arrow table (executemany costs milliseconds a row)."""
    if not rows:
        return
    data = pa.table({name: pa.array([r[i] for r in rows]) for i, name in enumerate(columns)})
    view = f"_meansql_rows_{threading.get_ident()}"
    cur.register(view, data)
    try:
        quoted = ", ".join(f'"{c}"' for c in columns)
        cur.execute(f"INSERT INTO {table} ({quoted}) SELECT {quoted} FROM {view}")
    finally:
        cur.unregister(view)



def extension_file(name: str) -> Path | None:
    """The file of DuckDB extension `name` shipped by the installed PyPI package duckdb-extension-<name>, if any."""
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        found = sorted(Path(base).glob(f"extensions/v{duckdb.__version__}/{name}.duckdb_extension"))
        if found:
            return found[0]
    return None

class Store:
    """A DuckDB database file holding the user's tables, logs and training data."""

    # Whether the database itself writes label rows and outbox events with each example write (pgattach.py).
    triggers = False

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = _open(self.path)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="meansql-writer", daemon=True)
        self._writer_cursor = self._db.cursor()
        self._closed = False
        # Called with the events of each committed change (events.py); hooks must not block.
        self.event_hooks: list[Callable[[list[dict[str, Any]]], None]] = []
        # Called first by close(): background work on read cursors stops before the file closes.
        self.closing: list[Callable[[], None]] = []
        # Full-text index state (examples.py): when it was built, and a lock so one build runs at a time.
        self.fts_extension: bool | None = None
        self.fts_built_at: Any = None
        self.fts_lock = threading.Lock()
        self._writer.start()

    # -- set-up ---------------------------------------------------------
    def init(self) -> int:
        """Create or migrate the schema; idempotent. Returns the schema version."""
        cur = self._db.cursor()
        try:
            cur.execute(schema.CREATE_VERSION_TABLE)
            row = cur.execute("SELECT max(version) FROM schema_version").fetchone()
            current = int(row[0]) if row and row[0] is not None else 0
            for version in sorted(schema.MIGRATIONS):
                if version <= current:
                    continue
                cur.execute("BEGIN")
                for statement in schema.MIGRATIONS[version]:
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
                cur.execute("COMMIT")
                current = version
            # DDL only at start-up, followed by a checkpoint, so the WAL holds data only.
            cur.execute("CHECKPOINT")
            return current
        finally:
            cur.close()

    def note_updated(self, cur: Cursor, fields: Sequence[str]) -> None:
        """Before an example's update: the fields it names (for the database's trigger, when it has one)."""

    def update(self, cur: Cursor, sql: str, params: Sequence[Any]) -> None:
        """Run an UPDATE of training_examples (SQL both DuckDB and PostgreSQL read) in cur's transaction."""
        cur.execute(sql, params)

    def cursor(self) -> Cursor:
        """A new connection to the same database, for one thread's use."""
        if self._closed:
            raise StoreError("the store is closed")
        return self._db.cursor()

    @property
    def database(self) -> duckdb.DuckDBPyConnection:
        return self._db

    def committed(self, events: list[dict[str, Any]]) -> None:
        """Hand the events of a committed change to every hook (LISTENing sessions, the publisher)."""
        if not events:
            return
        for hook in list(self.event_hooks):
            try:
                hook(events)
            except Exception as exc:  # a broken listener must not fail the write that already committed
                log.warning("event hook failed: %s", exc)

    # -- the writer -----------------------------------------------------
    def write(self, fn: Callable[[Cursor], T]) -> Future[T]:
        """Run fn(cursor) on the writer thread inside a transaction shared with its batch."""
        fut: Future[T] = Future()
        if self._closed:
            fut.set_exception(StoreError("the store is closed"))
            return fut
        self._queue.put((fn, fut))
        return fut

    def append_logs(self, rows: list[tuple[Any, ...]]) -> Future[None]:
        """Append unified_logs rows; the future resolves once they are committed."""
        return self.write(lambda cur: insert_rows(cur, "unified_logs", schema.LOG_FIELDS, rows))

    def _write_loop(self) -> None:
        cur = self._writer_cursor
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while True:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._run_batch(cur, batch)
            if stop:
                return

    def _run_batch(self, cur: Cursor, batch: list[tuple[Callable[[Cursor], Any], Future[Any]]]) -> None:
        results: list[Any] = []
        try:
            cur.execute("BEGIN")
            for fn, _ in batch:
                results.append(fn(cur))
            cur.execute("COMMIT")
        except Exception as exc:  # one bad write must not take its batch-mates down
            log.warning("write batch of %d failed (%s); retrying one by one", len(batch), exc)
            try:
                cur.execute("ROLLBACK")
            except duckdb.Error:
                pass  # no transaction left to roll back
            if len(batch) > 1:
                for one in batch:
                    self._run_batch(cur, [one])
            else:
                batch[0][1].set_exception(exc)
            return
        for (_, fut), result in zip(batch, results):
            fut.set_result(result)

    def close(self) -> None:
        """Finish queued writes, checkpoint and close the file."""
        if self._closed:
            return
        for stop in list(self.closing):
            stop()
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join(timeout=30)
        try:
            self._db.execute("CHECKPOINT")
        except duckdb.Error as exc:
            log.warning("checkpoint at close failed: %s", exc)
        self._writer_cursor.close()
        self._db.close()
