"""Events of the PostgreSQL store: the outbox written by its triggers, NOTIFY, and publishers of several processes."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import wait_for
from tests.e2e.test_events import RedisProcess, Subscriber
from tests.training.test_stores import new_database, pg  # noqa: F401 (a fixture)
from training import examples
from training.events import Publisher
from training.models import ExampleFilter
from training.pgattach import AttachedStore
from training.pgstore import PostgresStore

Process = tuple[PostgresStore, AttachedStore]


@pytest.fixture()
def url(pg: Any) -> str:  # noqa: F811 (the fixture imported above)
    return new_database(pg)


@pytest.fixture()
def processes(url: str) -> Iterator[list[Process]]:
    """Two meansql processes' stores on one PostgreSQL database."""
    opened: list[Process] = []
    for _ in range(2):
        pg_store = PostgresStore(url)
        pg_store.init()
        opened.append((pg_store, AttachedStore(pg_store)))
    yield opened
    for pg_store, attached in opened:
        attached.close()
        pg_store.close()


def test_a_plain_sql_write_gets_its_label_rows_outbox_row_and_notify(url: str, processes: list[Process]) -> None:
    _, attached = processes[0]
    with psycopg.connect(url, autocommit=True) as listener, psycopg.connect(url, autocommit=True) as client:
        listener.execute("LISTEN training_events")
        row = client.execute(
            "INSERT INTO training_examples (input_text, labels, domain, quality_score) "
            "VALUES ('from psql', ARRAY['sql', 'door'], 'ops', 70) RETURNING id::text"
        ).fetchone()
        assert row is not None
        example_id = row[0]
        client.execute("UPDATE training_examples SET domain = 'infra', labels = ARRAY['sql'] WHERE id = %s", [example_id])
        got = [json.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=2)]
        assert [(e["event_type"], e["aggregate_id"]) for e in got] == [
            ("training_example.created", example_id),
            ("training_example.updated", example_id),
        ]
        assert got[0]["payload"]["domain"] == "ops" and got[0]["payload"]["quality_score"] == 70
        assert got[1]["payload"] == {"updated_fields": ["domain", "labels"]}  # psql names no fields: those that changed
        # The API sees the SQL door's row, its label filter included.
        items, total = examples.list_examples(attached, ExampleFilter(labels=["sql"]))
        assert total == 1 and items[0].domain == "infra" and items[0].labels == ["sql"]
        assert examples.list_examples(attached, ExampleFilter(labels=["door"]))[1] == 0
        client.execute("DELETE FROM training_examples WHERE id = %s", [example_id])
        assert client.execute("SELECT count(*) FROM training_example_labels").fetchone() == (0,)
        assert client.execute("SELECT event_type FROM training_events ORDER BY seq").fetchall() == [
            ("training_example.created",),
            ("training_example.updated",),
            ("training_example.deleted",),
        ]


def test_a_failed_write_leaves_no_event(url: str, processes: list[Process]) -> None:
    _, attached = processes[0]
    examples.create(attached, {"input_text": "one", "source_trace_hash": "h"})
    with pytest.raises(examples.DuplicateExample):
        examples.create(attached, {"input_text": "two", "source_trace_hash": "h"})
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT event_type FROM training_events").fetchall() == [("training_example.created",)]


def test_two_processes_publish_each_event_once_and_wait_out_a_redis_outage(processes: list[Process], caplog: pytest.LogCaptureFixture) -> None:
    redis_server = RedisProcess().start(listening=False)  # down for the publishers (TCP), up for the subscriber
    sub = Subscriber(redis_server.unix_url)
    publishers = [Publisher(attached, redis_server.url, outbox=pg_store, retry_seconds=0.1, batch=7).start() for pg_store, attached in processes]
    expected: list[tuple[str, str]] = []
    try:
        with caplog.at_level(logging.WARNING, logger="training.events"):
            for i in range(40):
                created, _ = examples.create(processes[i % 2][1], {"input_text": f"example {i}", "domain": "d"})
                expected.append(("training_example.created", str(created.id)))
            examples.update(processes[0][1], expected[0][1], {"domain": "e"})
            examples.delete(processes[1][1], expected[1][1])
            trace = f"trace-{uuid.uuid4().hex}"
            processes[0][1].annotate([trace], verified=True)
            expected += [
                ("training_example.updated", expected[0][1]),
                ("training_example.deleted", expected[1][1]),
                ("training_annotation.upserted", trace),
            ]
            wait_for(lambda: "unreachable" in caplog.text, what="the outage to be logged")
            assert sub.poll() == []
            redis_server.listen()
            wait_for(lambda: len(sub.poll()) >= len(expected), what="every event", timeout=30)
            wait_for(lambda: "redis is back" in caplog.text, what="the end of the outage to be logged")
        with psycopg.connect(processes[0][0].url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM training_events WHERE published_at IS NULL").fetchone() == (0,)
        for p in publishers:
            p.flush()  # nothing left to send twice
        received = sub.poll()
    finally:
        for p in publishers:
            p.stop()
        redis_server.stop()
    assert sorted((e["event_type"], e["aggregate_id"]) for e in received) == sorted(expected)
    assert next(e for e in received if e["event_type"] == "training_example.updated")["payload"] == {"updated_fields": ["domain"]}


def test_published_events_leave_the_outbox_after_the_retention(url: str, processes: list[Process]) -> None:
    pg_store, attached = processes[0]
    old = [str(examples.create(attached, {"input_text": f"old {i}"})[0].id) for i in range(3)]
    sent: list[Any] = []
    assert pg_store.deliver(10, lambda rows: sent.extend(rows) or True) == 3
    with psycopg.connect(url, autocommit=True) as conn:
        # Within the retention (a week by default) published rows stay, marked.
        assert conn.execute("SELECT count(*), count(published_at) FROM training_events").fetchone() == (3, 3)
        pg_store.event_retention = 0.0
        new = [str(examples.create(attached, {"input_text": f"new {i}"})[0].id) for i in range(2)]
        assert pg_store.deliver(1, lambda rows: sent.extend(rows) or True) == 1
        # The three published before this transaction are gone; the one it published and the unpublished stay.
        rows = conn.execute("SELECT aggregate_id, published_at IS NOT NULL FROM training_events ORDER BY seq").fetchall()
        assert rows == [(new[0], True), (new[1], False)]
        assert pg_store.deliver(10, lambda rows: sent.extend(rows) or True) == 1
        assert conn.execute("SELECT aggregate_id FROM training_events").fetchall() == [(new[1],)]
    assert [r[3] for r in sent] == [*old, *new]
