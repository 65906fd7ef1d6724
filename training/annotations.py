"""Marking logged model calls as training examples (last write wins per trace)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from training import events, schema
from training.errors import InvalidAnnotation

if TYPE_CHECKING:
    from training.store import Store


def check_confidence(confidence: float | None) -> None:
    if confidence is not None and not 0.0 <= confidence <= 1.0:
        raise InvalidAnnotation(f"confidence must be between 0 and 1, got {confidence}")


def annotate(
    store: Store,
    trace_ids: Sequence[str],
    *,
    trainable: bool = True,
    verified: bool = False,
    confidence: float | None = 1.0,
    notes: str | None = None,
    tags: Sequence[str] | None = None,
) -> int:
    """Upsert annotations for trace_ids through the store's writer; returns how many."""
    check_confidence(confidence)
    rows = [
        [tid, trainable, verified, confidence, notes, list(tags) if tags is not None else None]
        for tid in trace_ids
    ]

    outbox = [events.annotation_upserted(tid, trainable, verified, confidence) for tid in trace_ids]
    from training.pgattach import AttachedStore

    if isinstance(store, AttachedStore):  # the PostgreSQL store's view writes the row and its outbox event
        n = store.annotate(trace_ids, trainable=trainable, verified=verified, confidence=confidence, notes=notes, tags=tags)
        store.committed(outbox)
        return n

    def upsert(cur: object) -> None:
        for row in rows:
            cur.execute(schema.UPSERT_ANNOTATION, row)  # type: ignore[attr-defined]
        events.record(cur, outbox)  # type: ignore[arg-type]

    store.write(upsert).result()
    store.committed(outbox)
    return len(rows)


def mark_as_trainable(
    trace_ids: Sequence[str],
    trainable: bool = True,
    verified: bool = False,
    confidence: float | None = 1.0,
    notes: str | None = None,
    tags: Sequence[str] | None = None,
    *,
    db: str | Path | None = None,
    url: str | None = None,
) -> int:
    """Mark logged calls as training examples.

    With ``url`` the annotation goes over the wire to a running meansql server
    (plain SQL, as any client would send it); otherwise the DuckDB file ``db``
    (default ``./meansql.duckdb``) is opened directly.
    """
    check_confidence(confidence)
    if url is not None:
        import psycopg

        tag_list = list(tags or [])
        # One parameter per tag (a text[] parameter's type is not inferred from the column yet), in SQL that
        # DuckDB and PostgreSQL both read: a proxy relays it to its PostgreSQL store.
        tags_sql = f"CAST(ARRAY[{', '.join(['%s'] * len(tag_list))}] AS text[])" if tags is not None else "NULL"
        with psycopg.connect(url, autocommit=True) as conn:
            for tid in trace_ids:
                conn.execute(
                    "INSERT INTO training_annotations "
                    "(trace_id, trainable, verified, confidence, notes, tags) "
                    f"VALUES (%s, %s, %s, %s, %s, {tags_sql})",
                    (tid, trainable, verified, confidence, notes, *tag_list),
                )
        return len(trace_ids)
    from training.store import Store

    store = Store(db or "meansql.duckdb")
    try:
        store.init()
        return annotate(
            store, trace_ids, trainable=trainable, verified=verified,
            confidence=confidence, notes=notes, tags=tags,
        )
    finally:
        store.close()
