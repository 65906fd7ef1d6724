"""The training API, CLI and events on the PostgreSQL store: several proxies and plain psql see one set of examples."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.clients.conftest import PostgresServer
from tests.conftest import ROOT, ServerProcess, server_env, wait_for
from tests.e2e.test_events import RedisProcess, Subscriber
from tests.e2e.test_store_api import http_url
from tests.proxy.conftest import pg_url


@pytest.fixture()
def tag() -> str:
    """A domain no other test writes, so each test reads its own examples from the shared database."""
    return f"d{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def redis_server() -> Iterator[RedisProcess]:
    r = RedisProcess().start()
    yield r
    r.stop()


def direct(pg: PostgresServer) -> psycopg.Connection[Any]:
    """Plain psql's view: PostgreSQL itself, not through meansql."""
    return psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/postgres", autocommit=True)


def test_http_writes_through_one_proxy_are_seen_by_sql_through_another_and_by_postgresql(
    start_proxy: Callable[..., ServerProcess],
    upstream_pg: PostgresServer,
    tag: str,
) -> None:
    first, second = start_proxy(), start_proxy()
    api = http_url(first)
    body = {
        "input_text": "Is a bamboo brush eco-friendly?",
        "output_text": "yes",
        "domain": tag,
        "labels": ["eco", tag],
        "quality_score": 88,
        "cascade_id": tag,
        "source_trace_hash": f"h-{tag}",
        "metadata": {"k": 1},
    }
    created = httpx.post(f"{api}/training-examples/", json=body, timeout=30)
    assert created.status_code == 201, created.text
    example_id = created.json()["id"]
    assert httpx.post(f"{api}/training-examples/", json=body, timeout=30).json()["existing_id"] == example_id
    with second.connect() as b, direct(upstream_pg) as pg:
        query = "SELECT id::text, domain, labels, quality_score FROM training_examples WHERE cascade_id = %s"
        assert b.execute(query, [tag]).fetchall() == [(example_id, tag, ["eco", tag], 88.0)]
        assert pg.execute(f"{query.replace('training_examples', 'meansql.training_examples')}", [tag]).fetchall() == [
            (example_id, tag, ["eco", tag], 88.0)
        ]
        patched = httpx.patch(f"{api}/training-examples/{example_id}", json={"quality_score": 91, "labels": [tag]}, timeout=30)
        assert patched.status_code == 200 and patched.json()["quality_score"] == 91
        assert b.execute(query, [tag]).fetchall() == [(example_id, tag, [tag], 91.0)]
        # A row inserted as plain SQL through the second proxy is in the first one's API, label filter included.
        b.execute(
            "INSERT INTO training_examples (input_text, domain, labels, quality_score, cascade_id) "
            "VALUES ('Is a plastic fork eco-friendly?', %s, ARRAY['plastic', %s], 20, %s)",
            [tag, tag, tag],
        )
        page = httpx.get(f"{api}/training-examples/", params={"domain": tag, "order_by": "quality_score"}, timeout=30).json()
        assert page["total"] == 2 and [e["quality_score"] for e in page["items"]] == [91, 20]
        assert httpx.get(f"{api}/training-examples/", params={"labels": "plastic"}, timeout=30).json()["total"] == 1
        found = httpx.get(f"{api}/training-examples/", params={"domain": tag, "q": "bamboo brushes"}, timeout=30).json()
        assert [e["id"] for e in found["items"]] == [example_id]
        stats = httpx.get(f"{api}/training-examples/stats", params={"domain": tag}, timeout=30).json()
        assert (stats["total_examples"], stats["avg_quality_score"]) == (2, pytest.approx(55.5))
        labels = {d["label"]: d["count"] for d in httpx.get(f"{api}/training-examples/labels", timeout=30).json()}
        assert labels[tag] == 2 and labels["plastic"] >= 1
        studio = httpx.get(f"{api}/api/training/stats", params={"cascade_id": tag}, timeout=30).json()
        assert studio["curated"]["total_examples"] == 2
        assert httpx.delete(f"{api}/training-examples/{example_id}", timeout=30).status_code == 204
        assert [r[2] for r in b.execute(query, [tag]).fetchall()] == [["plastic", tag]]
        assert pg.execute("SELECT count(*) FROM meansql.training_example_labels WHERE label = %s", [tag]).fetchone() == (1,)
        assert httpx.get(f"{api}/training-examples/{example_id}", timeout=30).status_code == 404
        # Annotations over HTTP land in PostgreSQL's training_annotations.
        trace = f"trace-{tag}"
        marked = httpx.post(f"{api}/api/training/mark-trainable", json={"trace_ids": [trace], "verified": True}, timeout=30)
        assert marked.json()["marked"] == 1
        assert b.execute("SELECT verified FROM training_annotations WHERE trace_id = %s", [trace]).fetchall() == [(True,)]


def test_two_proxies_publish_each_event_once(
    start_proxy: Callable[..., ServerProcess],
    redis_server: RedisProcess,
    tag: str,
) -> None:
    sub = Subscriber(redis_server.url)
    proxies = [start_proxy(MEANSQL_REDIS_URL=redis_server.url) for _ in range(2)]
    apis = [http_url(p) for p in proxies]
    ids = []
    for i in range(20):
        r = httpx.post(f"{apis[i % 2]}/training-examples/", json={"input_text": f"example {i}", "domain": tag}, timeout=30)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])

    def ours() -> list[dict[str, Any]]:
        return [e for e in sub.poll() if e["aggregate_id"] in ids]

    wait_for(lambda: len(ours()) >= len(ids), what="an event per write", timeout=30)
    with psycopg.connect(pg_url_of(proxies[0]), autocommit=True) as pg:
        wait_for(
            lambda: (
                pg.execute(
                    "SELECT count(*) FROM meansql.training_events WHERE published_at IS NULL AND aggregate_id = ANY(%s)", [ids]
                ).fetchone()
                == (0,)
            ),
            what="the outbox to drain",
        )
    got = ours()
    assert sorted(e["aggregate_id"] for e in got) == sorted(ids)  # each once
    assert {e["event_type"] for e in got} == {"training_example.created"}
    assert got[0]["payload"]["domain"] == tag


def pg_url_of(server: ServerProcess) -> str:
    return next(a for a in server.args if a.startswith("postgresql://"))


def test_listen_through_the_proxy_gets_the_notify_of_a_write_through_another(
    start_proxy: Callable[..., ServerProcess],
    tag: str,
) -> None:
    first, second = start_proxy(), start_proxy()
    with first.connect() as listener:
        listener.execute("LISTEN training_events")
        r = httpx.post(f"{http_url(second)}/training-examples/", json={"input_text": "heard?", "domain": tag}, timeout=30)
        assert r.status_code == 201
        heard = [json.loads(n.payload) for n in listener.notifies(timeout=10, stop_after=1)]
    assert [(n.get("event_type"), n.get("aggregate_id")) for n in heard] == [("training_example.created", r.json()["id"])]
    assert heard[0]["payload"]["domain"] == tag


def meansql(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args], cwd=ROOT, env=server_env(None), capture_output=True, text=True, timeout=120
    )


def test_export_then_import_round_trip_on_the_postgresql_store(upstream_pg: PostgresServer, tag: str, tmp_path: Path) -> None:
    url = pg_url(upstream_pg)
    rows = [
        {
            "input_text": f"question {i}",
            "output_text": f"answer {i}",
            "domain": tag,
            "cascade_id": tag,
            "labels": [tag, f"l{i}"],
            "quality_score": 50 + i,
            "source_trace_hash": f"{tag}-{i}",
        }
        for i in range(5)
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = meansql("training", "import", str(source), "--store-url", url)
    assert done.returncode == 0 and "5 created" in done.stdout, done.stdout + done.stderr
    exported = tmp_path / "out.jsonl"
    done = meansql("training", "export", "--store-url", url, "--cascade", tag, "-o", str(exported))
    assert done.returncode == 0 and "(5 examples)" in done.stdout, done.stdout + done.stderr
    before = [json.loads(line) for line in exported.read_text().splitlines()]
    with direct(upstream_pg) as pg:
        pg.execute("DELETE FROM meansql.training_examples WHERE cascade_id = %s", [tag])
    done = meansql("training", "import", str(exported), "--store-url", url)
    assert done.returncode == 0 and "5 created" in done.stdout, done.stdout + done.stderr
    again = tmp_path / "again.jsonl"
    assert meansql("training", "export", "--store-url", url, "--cascade", tag, "-o", str(again)).returncode == 0
    assert [json.loads(line) for line in again.read_text().splitlines()] == before
    assert sorted(e["source_trace_hash"] for e in before) == sorted(r["source_trace_hash"] for r in rows)
