"""Events of the curated store: an outbox written with each change, delivered after commit.

Every create, update and delete of a training example and every annotation
writes one outbox row in the transaction of the change (``record``). After the
commit the writer hands the events to the store's hooks: pg-wire sessions that
LISTEN get them at once (as PostgreSQL delivers NOTIFY, only to sessions
listening when the change commits), and the ``Publisher`` thread sends the
outbox rows to Redis pub/sub, deleting each only once Redis took it. A Redis
outage therefore never fails or loses a write: the rows wait and are retried,
and the gap is logged.

On the PostgreSQL store the database writes the outbox rows itself (triggers,
with a pg_notify in the same transaction), and the publisher of every meansql
process takes them through ``Outbox.deliver``: rows claimed with FOR UPDATE SKIP
LOCKED, marked published in the claim's transaction, so each goes out once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from training import schema
from training.store import Cursor, Store

log = logging.getLogger(__name__)

CHANNEL = "training_events"


def event(event_type: str, aggregate_type: str, aggregate_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The event JSON of the TrainingExampleService (event_type, aggregate_type, aggregate_id, payload)."""
    return {"event_type": event_type, "aggregate_type": aggregate_type, "aggregate_id": aggregate_id,
            "payload": dict(payload)}


def example_created(row: Mapping[str, Any]) -> dict[str, Any]:
    payload = {k: _plain(row.get(k)) for k in ("execution_id", "agent_id", "source_type", "quality_score", "domain",
                                                "cascade_id", "cell_name")}
    return event("training_example.created", "training_example", str(row["id"]), payload)


def example_updated(example_id: str, fields: Iterable[str]) -> dict[str, Any]:
    return event("training_example.updated", "training_example", example_id, {"updated_fields": sorted(fields)})


def example_deleted(example_id: str) -> dict[str, Any]:
    return event("training_example.deleted", "training_example", example_id, {})


def annotation_upserted(trace_id: str, trainable: Any, verified: Any, confidence: Any) -> dict[str, Any]:
    return event("training_annotation.upserted", "training_annotation", trace_id,
                 {"trainable": trainable, "verified": verified, "confidence": confidence})


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def record(cur: Cursor, events: Sequence[Mapping[str, Any]]) -> None:
    """Write events to the outbox inside the caller's transaction."""
    if not events:
        return
    from training.store import insert_rows

    insert_rows(cur, "training_events", schema.EVENT_FIELDS,
                [(e["event_type"], e["aggregate_type"], e["aggregate_id"], json.dumps(e["payload"])) for e in events])


Row = tuple[Any, ...]
Send = Callable[[Sequence[Row]], bool]


class Outbox(Protocol):
    """Where the publisher takes events from: the DuckDB file's table, or PostgreSQL's shared by many processes."""

    def deliver(self, batch: int, send: Send) -> int:
        """Hand up to `batch` waiting events (seq, event_type, aggregate_type, aggregate_id, payload JSON text) to
        send; those it took (True) leave the outbox. Returns how many left."""

    def watch(self, wake: threading.Event, stop: threading.Event) -> None:
        """Set `wake` whenever events may have been written elsewhere, until `stop` is set."""


class FileOutbox:
    """The DuckDB file's outbox: this process is its only writer, so rows are read, sent, then deleted."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def deliver(self, batch: int, send: Send) -> int:
        cur = self.store.cursor()
        try:
            rows = cur.execute(schema.PENDING_EVENTS, [batch]).fetchall()
        finally:
            cur.close()
        if not rows or not send(rows):
            return 0
        last = rows[-1][0]
        self.store.write(lambda c: c.execute(schema.DELETE_EVENTS, [last])).result()
        return len(rows)

    def watch(self, wake: threading.Event, stop: threading.Event) -> None:
        """Nothing to watch: every write comes through this process's store hooks."""


class Publisher:
    """Sends outbox rows to Redis pub/sub (with retries); what Redis took leaves the outbox."""

    def __init__(self, store: Store, redis_url: str | None, *, channel: str = CHANNEL, retry_seconds: float = 0.5,
                 batch: int = 1000, outbox: Outbox | None = None) -> None:
        self.store = store
        self.outbox: Outbox = outbox or FileOutbox(store)
        self.redis_url = redis_url
        self.channel = channel
        self.retry_seconds = retry_seconds
        self.batch = batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._client: Any = None
        self._down_since: float | None = None
        self._thread = threading.Thread(target=self._loop, name="meansql-events", daemon=True)
        self._watcher = threading.Thread(target=self.outbox.watch, args=(self._wake, self._stop),
                                         name="meansql-events-watch", daemon=True)
        store.event_hooks.append(lambda events: self._wake.set())

    def start(self) -> Publisher:
        self._wake.set()  # rows left over from before a restart go out first
        self._thread.start()
        self._watcher.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in (self._thread, self._watcher):
            if thread.is_alive():
                thread.join(timeout=10)
        if self._client is not None:
            self._client.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self.retry_seconds if self._down_since is not None else 5.0)
            self._wake.clear()
            try:
                while not self._stop.is_set() and self.flush():
                    pass
            except Exception as exc:  # keep the thread alive; rows stay in the outbox
                log.warning("event publisher: %s", exc)

    def flush(self) -> bool:
        """Deliver one batch of outbox rows; True when a full batch went out (more may wait)."""
        send: Send = self._send if self.redis_url is not None else (lambda rows: True)
        return self.outbox.deliver(self.batch, send) == self.batch

    def _send(self, rows: Sequence[tuple[Any, ...]]) -> bool:
        import redis

        try:
            if self._client is None:
                self._client = redis.Redis.from_url(self.redis_url or "", socket_timeout=2, socket_connect_timeout=2)
            pipe = self._client.pipeline(transaction=False)
            for _seq, event_type, aggregate_type, aggregate_id, payload in rows:
                body = {"event_type": event_type, "aggregate_type": aggregate_type, "aggregate_id": aggregate_id,
                        "payload": json.loads(payload) if payload else {}}
                pipe.publish(self.channel, json.dumps(body))
            pipe.execute()
        except redis.RedisError as exc:
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("redis at %s is unreachable (%s); %d+ event(s) wait in the outbox and will be retried",
                            self.redis_url, exc, len(rows))
            self._client = None
            return False
        if self._down_since is not None:
            log.warning("redis is back after %.1f s; delivering the events that waited",
                        time.monotonic() - self._down_since)
            self._down_since = None
        return True
