"""The training store in PostgreSQL: the `meansql` schema, shared by any number of meansql processes.

Each call commits on its caller's thread over a small pool of connections
(PostgreSQL takes concurrent writers, so no writer thread is needed): log rows
go in with COPY, cache rows with ON CONFLICT DO NOTHING, in one transaction
that is durable before the caller uses an answer. Claims on values being
judged expire unless renewed, and a heartbeat thread renews this process's
claims, so a process that dies mid-call blocks a value for one `claim_ttl` at
most.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from training import pg_schema, retrieval, schema
from training.errors import StoreError
from training.retrieval import Example, Selection

log = logging.getLogger(__name__)

Row = tuple[Any, ...]


def describe(url: str) -> str:
    """user@host:port/dbname of a PostgreSQL URL, without its password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the PostgreSQL store"
    user = f"{info['user']}@" if info.get("user") else ""
    return f"postgresql://{user}{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


# A transaction PostgreSQL aborted to break a deadlock wrote nothing: it is run again.
DEADLOCK_RETRIES = 5
# Published events stay in the outbox this long (seconds: to see what went out), then a publisher deletes them.
EVENT_RETENTION = 7 * 24 * 3600.0
PRUNE_EVERY = 600.0  # seconds between two prunings by one process


class _Pool:
    """At most `size` connections (autocommit), reused; a broken one is dropped and the next use reconnects."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        self._slots.acquire()
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = self._connect()
            try:
                yield conn
            except psycopg.OperationalError:
                conn.close()
                raise
            if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.close()
                return
            with self._lock:
                if self._closed:
                    conn.close()
                else:
                    self._idle.append(conn)
        finally:
            self._slots.release()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10, application_name="meansql store")
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to the store at {describe(self.url)}: {_first_line(exc)}",
                hint="check store_url (default in proxy mode: the upstream URL)",
            ) from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class PostgresStore:
    """The training store in a PostgreSQL database's `meansql` schema."""

    def __init__(self, url: str, *, pool_size: int = 8, claim_ttl: float = 30.0, event_retention: float = EVENT_RETENTION) -> None:
        self.url = url
        self.where = describe(url)
        self.claim_ttl = claim_ttl
        self.event_retention = event_retention  # seconds a published event stays in the outbox
        self._pruned_at = float("-inf")  # time.monotonic() of this process's last pruning of the outbox
        self.process = uuid.uuid4().hex  # claims of this process, renewed together
        self._pool = _Pool(url, pool_size)
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._heartbeat_lock = threading.Lock()

    # -- set-up -------------------------------------------------------------
    def init(self) -> int:
        """Create or migrate the meansql schema and put it on the database's search_path; returns the version.

        Safe when several processes run it at once: the migrations run under a transaction-level advisory lock.
        """
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute(pg_schema.LOCK)
                conn.execute(pg_schema.CREATE_SCHEMA)
                conn.execute(pg_schema.CREATE_VERSION_TABLE)
                row = conn.execute(pg_schema.CURRENT_VERSION).fetchone()
                current = int(row[0]) if row else 0
                for version in sorted(pg_schema.MIGRATIONS):
                    if version <= current:
                        continue
                    for statement in pg_schema.MIGRATIONS[version]:
                        conn.execute(statement)
                    conn.execute(pg_schema.RECORD_VERSION, [version])
                    current = version
                self._search_path(conn)
                return current
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StoreError(
                f"cannot create or migrate the meansql schema at {self.where}: {_first_line(exc)}",
                hint="run `meansql db init --url postgresql://...` once as the database's owner",
            ) from None
        except psycopg.Error as exc:
            raise StoreError(f"cannot create or migrate the meansql schema at {self.where}: {_first_line(exc)}") from None

    def _search_path(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute(pg_schema.DATABASE_SEARCH_PATH).fetchone()
        assert row is not None
        value, database = str(row[0]), str(row[1])
        items = [item.strip() for item in value.split(",") if item.strip()]
        if any(item.strip('"') == pg_schema.SCHEMA for item in items):
            return
        # The value is the database's own setting, already in SQL list syntax.
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET search_path = {}").format(sql.Identifier(database), sql.SQL(", ".join([*items, pg_schema.SCHEMA])))
        )

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except StoreError:
            raise
        except psycopg.Error as exc:
            raise StoreError(f"the store at {self.where} failed: {_first_line(exc)}") from exc

    # -- calls and the cache ------------------------------------------------------
    def commit_calls(self, logs: Sequence[Row], answers: Sequence[Row], *, owner: str | None = None, release: Sequence[str] = ()) -> None:
        if not logs and not answers and not (owner and release):
            return
        for attempt in range(DEADLOCK_RETRIES):
            try:
                self._commit_calls(logs, sorted(answers, key=lambda r: r[0]), owner, sorted(release))
                return
            except StoreError as exc:
                if attempt == DEADLOCK_RETRIES - 1 or not isinstance(exc.__cause__, psycopg.errors.DeadlockDetected):
                    raise

    def _commit_calls(self, logs: Sequence[Row], answers: Sequence[Row], owner: str | None, release: Sequence[str]) -> None:
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in schema.LOG_FIELDS)
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            if logs:
                with cur.copy(sql.SQL(pg_schema.LOG_COPY).format(columns=columns)) as copy:
                    for row in logs:
                        copy.write_row(row)
            if answers:
                cur.executemany(pg_schema.CACHE_INSERT, [tuple(r) for r in answers])
            if owner is not None and release:
                cur.execute(pg_schema.RELEASE, [list(release), owner])

    def append_logs(self, rows: Sequence[Row]) -> None:
        self.commit_calls(rows, [])

    def cache_lookup(self, keys: Sequence[str]) -> dict[str, Any]:
        if not keys:
            return {}
        with self._conn() as conn:
            rows = conn.execute(pg_schema.CACHE_LOOKUP, [list(keys)]).fetchall()
        return {k: v for k, v in rows}

    def claim(self, keys: Sequence[str], owner: str) -> set[str]:
        if not keys:
            return set()
        self._start_heartbeat()
        args = {"owner": owner, "process": self.process, "ttl": self.claim_ttl, "keys": sorted(keys)}
        for attempt in range(DEADLOCK_RETRIES):
            try:
                with self._conn() as conn:
                    rows = conn.execute(pg_schema.CLAIM, args).fetchall()
                return {r[0] for r in rows}
            except StoreError as exc:
                if attempt == DEADLOCK_RETRIES - 1 or not isinstance(exc.__cause__, psycopg.errors.DeadlockDetected):
                    raise
        return set()

    def release(self, keys: Sequence[str], owner: str) -> None:
        for attempt in range(DEADLOCK_RETRIES if keys else 0):
            try:
                with self._conn() as conn:
                    conn.execute(pg_schema.RELEASE, [sorted(keys), owner])
                return
            except StoreError as exc:
                if attempt == DEADLOCK_RETRIES - 1 or not isinstance(exc.__cause__, psycopg.errors.DeadlockDetected):
                    raise

    def _start_heartbeat(self) -> None:
        with self._heartbeat_lock:
            if self._heartbeat is None and not self._stop.is_set():
                self._heartbeat = threading.Thread(target=self._renew, name="meansql-claims", daemon=True)
                self._heartbeat.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.claim_ttl / 3):
            try:
                with self._conn() as conn:
                    conn.execute(pg_schema.RENEW, [self.claim_ttl, self.process])
            except StoreError as exc:  # the next beat tries again; claims lapse only after a whole ttl
                log.warning("renewing claims failed: %s", exc.message)

    # -- examples and annotations --------------------------------------------------
    def example_candidates(self, *, cascade_id: str, cell_name: str, min_confidence: float, verified_only: bool) -> list[Example]:
        with self._conn() as conn:
            return retrieval.fetch_candidates(
                conn,
                cascade_id=cascade_id,
                cell_name=cell_name,
                min_confidence=min_confidence,
                verified_only=verified_only,
                sql=pg_schema.SELECT_EXAMPLE_CANDIDATES,
            )

    def curated_examples(
        self, *, cascade_id: str, cell_name: str, strategy: str, limit: int, min_quality: float, min_confidence: float, criterion: str | None
    ) -> list[Example]:
        """Curated examples of one operator cell, at most `limit`, same criterion first, in strategy order."""
        query = pg_schema.SELECT_CURATED_CANDIDATES.format(order=pg_schema.CURATED_ORDER[strategy])
        with self._conn() as conn:
            rows = conn.execute(
                query,
                {
                    "cascade_id": cascade_id,
                    "cell_name": cell_name,
                    "min_quality": min_quality,
                    "min_confidence": min_confidence,
                    "criterion": criterion,
                    "limit": limit,
                },
            ).fetchall()
        return [
            Example(
                trace_id=r[0],
                input=r[1] or "",
                criterion=r[2],
                output=r[3] or "",
                confidence=r[4],
                verified=True,
                timestamp=r[5],
                source="curated",
            )
            for r in rows
        ]

    def select_examples(
        self,
        *,
        cascade_id: str,
        cell_name: str,
        strategy: str,
        limit: int,
        min_confidence: float,
        verified_only: bool,
        criterion: str | None,
        source: str,
        min_quality: float,
    ) -> Selection:
        candidates: list[Example] = []
        if source in ("logs", "both"):
            candidates += self.example_candidates(
                cascade_id=cascade_id, cell_name=cell_name, min_confidence=min_confidence, verified_only=verified_only
            )
        if source in ("curated", "both"):
            candidates += self.curated_examples(
                cascade_id=cascade_id,
                cell_name=cell_name,
                strategy=strategy,
                limit=limit,
                min_quality=min_quality,
                min_confidence=min_confidence,
                criterion=criterion,
            )
        return retrieval.rank(candidates, strategy=strategy, limit=limit, criterion=criterion)

    def annotate(
        self,
        trace_ids: Sequence[str],
        *,
        trainable: bool = True,
        verified: bool = False,
        confidence: float | None = 1.0,
        notes: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> int:
        from training.annotations import check_confidence

        check_confidence(confidence)
        rows = [(tid, trainable, verified, confidence, notes, list(tags) if tags is not None else None) for tid in trace_ids]
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(pg_schema.UPSERT_ANNOTATION, rows)  # the view's trigger upserts and writes the event
        return len(rows)

    # -- the event outbox (events.Outbox) ------------------------------------------------
    def deliver(self, batch: int, send: Callable[[Sequence[Row]], bool]) -> int:
        """Claim unpublished events no other process holds (SKIP LOCKED), send them, mark them published in the
        same transaction: each event goes out once however many processes publish. Unsent, the claim ends."""
        sent = 0
        with self._conn() as conn, conn.transaction():
            rows = conn.execute(pg_schema.CLAIM_EVENTS, [batch]).fetchall()
            if rows and send(rows):
                conn.execute(pg_schema.MARK_EVENTS, [[r[0] for r in rows]])
                sent = len(rows)
                self._prune(conn)
        return sent

    def _prune(self, conn: psycopg.Connection[Any]) -> None:
        """Delete events published more than event_retention seconds ago, at most once per PRUNE_EVERY seconds
        per process (whichever publisher prunes, the rows go once; a published row is never claimed again)."""
        now = time.monotonic()
        if now - self._pruned_at < min(PRUNE_EVERY, self.event_retention):
            return
        self._pruned_at = now
        conn.execute(pg_schema.PRUNE_EVENTS, [self.event_retention])

    def watch(self, wake: threading.Event, stop: threading.Event, *, poll: float = 1.0) -> None:
        """Set `wake` on every NOTIFY of training_events (a write by any process, or psql), until `stop` is set."""
        while not stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=10,
                                     application_name="meansql events") as conn:
                    conn.execute(pg_schema.LISTEN_EVENTS)
                    wake.set()  # events written while not listening
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=poll, stop_after=1):
                            wake.set()
            except psycopg.Error as exc:
                log.warning("listening for events at %s failed (%s); again in %.0f s", self.where, _first_line(exc), poll)
                stop.wait(poll)

    def calibration(self, cascade_id: str, criterion: str | None) -> float | None:
        with self._conn() as conn:
            row = conn.execute(pg_schema.CALIBRATION_LOOKUP, [cascade_id, criterion]).fetchone()
        return float(row[0]) if row else None

    def save_calibration(self, rows: Sequence[Row]) -> None:
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(pg_schema.CALIBRATION_INSERT, [tuple(r) for r in rows])

    def close(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=10)
        self._pool.close()
