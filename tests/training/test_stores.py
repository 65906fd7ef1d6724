"""The training store interface, the same tests on both implementations: a DuckDB file and a real PostgreSQL 15."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.clients.conftest import PostgresServer
from tests.conftest import wait_for
from training import cache, pg_schema
from training.errors import InvalidAnnotation
from training.logs import LogRecord
from training.pgstore import PostgresStore
from training.store import Store
from training.stores import DuckDBStore, TrainingStore, wait_for_answers

Query = Callable[..., list[tuple[Any, ...]]]


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.stop()


def new_database(pg: PostgresServer) -> str:
    """A fresh database on the test server; its URL."""
    name = f"store_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql://postgres@127.0.0.1:{pg.port}/{name}"


class Opened:
    """A store under test and a way to run SQL on it as a client would (unqualified names)."""

    def __init__(self, store: TrainingStore, query: Query, kind: str) -> None:
        self.store = store
        self.query = query
        self.kind = kind


@pytest.fixture(params=["duckdb", "postgresql"])
def opened(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opened]:
    if request.param == "duckdb":
        file = Store(tmp_path / "store.duckdb")
        file.init()

        def duck(sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
            cur = file.cursor()
            try:
                return cur.execute(sql.replace("%s", "?"), params or []).fetchall()
            finally:
                cur.close()

        yield Opened(DuckDBStore(file), duck, "duckdb")
        file.close()
        return
    url = new_database(request.getfixturevalue("pg"))
    store = PostgresStore(url)
    assert store.init() == max(pg_schema.MIGRATIONS)
    client = psycopg.connect(url, autocommit=True)  # opened after init: the database's search_path applies

    def post(sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        return client.execute(sql, params).fetchall()  # type: ignore[arg-type]

    yield Opened(store, post, "postgresql")
    client.close()
    store.close()


def call(
    text: str,
    answer: bool | None,
    *,
    cascade: str = "semantic_matches",
    criterion: str = "eco-friendly",
    error: str | None = None,
    when: dt.datetime | None = None,
) -> LogRecord:
    rec = LogRecord(
        session_id="s-1",
        query_id="q-1",
        cascade_id=cascade,
        cell_name="evaluate",
        model="m",
        request={"messages": [{"role": "user", "content": text}]},
        user_input=text,
        criterion=criterion,
        inputs={"text": text, "criterion": criterion},
        assistant_output=None if error else ("true" if answer else "false"),
        answer=answer,
        error=error,
        prompt_tokens=12,
        cost=0.25,
        latency_ms=3.5,
        call_id="call-1",
        batch_size=1,
    )
    if when is not None:
        rec.timestamp = when
    return rec


def test_calls_are_logged_and_cached_with_the_same_columns(opened: Opened) -> None:
    first, second = call("bamboo brush", True), call("plastic fork", False)
    opened.store.commit_calls(
        [first.row(), second.row()],
        cache.rows([("k1", "semantic_matches", "m", True, first.trace_id), ("k2", "semantic_matches", "m", "some text", second.trace_id)]),
    )
    rows = opened.query(
        "SELECT trace_id, user_input, answer, prompt_tokens, cost, latency_ms, call_id, batch_size, "
        "cache_hit, role FROM unified_logs ORDER BY user_input"
    )
    assert rows == [
        (first.trace_id, "bamboo brush", True, 12, 0.25, 3.5, "call-1", 1, False, "assistant"),
        (second.trace_id, "plastic fork", False, 12, 0.25, 3.5, "call-1", 1, False, "assistant"),
    ]
    assert opened.query("SELECT JSONExtractString(full_request_json, '$.messages[-1].content') FROM unified_logs ORDER BY user_input") == [
        ("bamboo brush",),
        ("plastic fork",),
    ]
    assert opened.store.cache_lookup(["k1", "k2", "k3"]) == {"k1": True, "k2": "some text"}
    assert opened.store.cache_lookup([]) == {}
    assert opened.query("SELECT key, trace_id FROM semantic_cache ORDER BY key") == [("k1", first.trace_id), ("k2", second.trace_id)]


def test_annotated_calls_are_candidates_and_injected_same_criterion_first(opened: Opened) -> None:
    base = dt.datetime(2026, 1, 1)
    recs = [
        call("bamboo brush", True, when=base),
        call("plastic fork", False, when=base + dt.timedelta(1)),
        call("steel bottle", True, criterion="durable", when=base + dt.timedelta(2)),
        call("broken", None, error="500 from the provider", when=base + dt.timedelta(3)),
        call("paper bag", True, when=base + dt.timedelta(4)),
    ]
    opened.store.commit_calls([r.row() for r in recs], [])
    assert opened.store.example_candidates(cascade_id="semantic_matches", cell_name="evaluate", min_confidence=0, verified_only=False) == []
    assert (
        opened.store.annotate(
            [recs[0].trace_id, recs[2].trace_id, recs[3].trace_id], verified=True, confidence=0.9, notes="checked", tags=["a", "b"]
        )
        == 3
    )
    assert opened.store.annotate([recs[1].trace_id], confidence=0.5) == 1
    found = opened.store.example_candidates(cascade_id="semantic_matches", cell_name="evaluate", min_confidence=0.6, verified_only=False)
    assert sorted((e.input, e.criterion, e.output, e.confidence, e.verified) for e in found) == [
        ("bamboo brush", "eco-friendly", "true", 0.9, True),
        ("steel bottle", "durable", "true", 0.9, True),
    ]
    selection = opened.store.select_examples(
        cascade_id="semantic_matches",
        cell_name="evaluate",
        strategy="recent",
        limit=2,
        min_confidence=0,
        verified_only=False,
        criterion="eco-friendly",
        source="logs",
        min_quality=0,
    )
    assert [e.input for e in selection.examples] == ["plastic fork", "bamboo brush"]
    assert (selection.same_criterion, selection.other_criteria) == (2, 0)
    # Annotating again: the last write wins.
    opened.store.annotate([recs[1].trace_id], trainable=False)
    assert opened.query(
        "SELECT trainable, verified, confidence, notes, tags FROM training_annotations WHERE trace_id = %s", [recs[1].trace_id]
    ) == [(False, False, 1.0, None, None)]
    assert opened.query("SELECT notes, tags FROM training_annotations WHERE trace_id = %s", [recs[0].trace_id]) == [("checked", ["a", "b"])]
    assert opened.query(
        "SELECT example_count, trainable_count, verified_count FROM training_stats_by_cascade WHERE cascade_id = 'semantic_matches'"
    ) == [(4, 2, 2)]
    assert opened.query("SELECT count(*) FROM training_events WHERE event_type = 'training_annotation.upserted'") == [(5,)]
    with pytest.raises(InvalidAnnotation):
        opened.store.annotate([recs[0].trace_id], confidence=1.5)


def test_curated_examples_are_injected_from_either_store(opened: Opened) -> None:
    insert = (
        "INSERT INTO training_examples (input_text, output_text, input_structured, cascade_id, cell_name, "
        "confidence, quality_score, created_at) VALUES (%s, %s, %s, 'semantic_matches', 'evaluate', %s, %s, %s)"
    )
    for i, (text, criterion, quality) in enumerate(
        [("jute bag", "eco-friendly", 90), ("gold ring", "durable", 90), ("oil can", "eco-friendly", 10)]
    ):
        opened.query(
            insert + " RETURNING input_text", [text, "true", f'{{"criterion": "{criterion}"}}', 0.8, quality, dt.datetime(2026, 1, 1 + i)]
        )
    selection = opened.store.select_examples(
        cascade_id="semantic_matches",
        cell_name="evaluate",
        strategy="recent",
        limit=5,
        min_confidence=0,
        verified_only=False,
        criterion="eco-friendly",
        source="curated",
        min_quality=50,
    )
    assert [(e.input, e.criterion, e.source, e.verified) for e in selection.examples] == [
        ("jute bag", "eco-friendly", "curated", True),
        ("gold ring", "durable", "curated", True),
    ]


def test_calibration_newest_for_the_criterion_else_for_all(opened: Opened) -> None:
    assert opened.store.calibration("semantic_matches", "eco-friendly") is None
    opened.store.save_calibration([("semantic_matches", None, 0.7, 0.95, 40, 0.5), ("semantic_matches", "eco-friendly", 0.8, 0.95, 25, 0.4)])
    assert opened.store.calibration("semantic_matches", "eco-friendly") == 0.8
    assert opened.store.calibration("semantic_matches", "durable") == 0.7


def test_a_claimed_value_is_judged_by_one_owner_until_it_is_answered_or_released(opened: Opened) -> None:
    store = opened.store
    assert store.claim(["k1", "k2"], "query-a") == {"k1", "k2"}
    assert store.claim(["k1", "k2", "k3"], "query-b") == {"k3"}
    assert store.claim(["k1"], "query-a") == {"k1"}  # its own claim
    stop = threading.Event()
    got: dict[str, Any] = {}

    def wait() -> None:
        got["result"] = wait_for_answers(store, ["k1", "k2"], "query-b", stop=stop)

    waiter = threading.Thread(target=wait)
    waiter.start()
    rec = call("bamboo brush", True)
    store.commit_calls([rec.row()], cache.rows([("k1", "semantic_matches", "m", True, rec.trace_id)]), owner="query-a", release=["k1"])
    store.release(["k2"], "query-a")  # its call failed: the value is free for the waiter to judge
    waiter.join(timeout=20)
    assert got["result"] == ({"k1": True}, {"k2"})
    assert store.claim(["k2"], "query-c") == set()
    store.release(["k2", "k3"], "query-b")
    assert store.claim(["k2", "k3"], "query-c") == {"k2", "k3"}


def test_a_lapsed_claim_frees_its_value_and_a_live_one_is_renewed(pg: PostgresServer) -> None:
    url = new_database(pg)
    live, dead = PostgresStore(url, claim_ttl=0.6), PostgresStore(url, claim_ttl=0.6)
    other = PostgresStore(url)
    try:
        live.init()
        assert live.claim(["alive"], "q-live") == {"alive"}
        assert dead.claim(["dead"], "q-dead") == {"dead"}
        dead._stop.set()  # a process killed mid-call: nobody renews its claim any more
        assert other.claim(["alive", "dead"], "q-other") == set()
        wait_for(lambda: other.claim(["dead"], "q-other") == {"dead"}, 5, "the dead process's claim to lapse")
        assert other.claim(["alive"], "q-other") == set()  # renewed every ttl/3 by its heartbeat
    finally:
        for s in (live, dead, other):
            s.close()


def test_db_init_run_by_several_processes_at_once_migrates_once(pg: PostgresServer) -> None:
    url = new_database(pg)
    stores = [PostgresStore(url) for _ in range(4)]
    versions: list[int] = []
    errors: list[BaseException] = []

    def init(s: PostgresStore) -> None:
        try:
            versions.append(s.init())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=init, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for s in stores:
        s.close()
    assert errors == []
    assert versions == [max(pg_schema.MIGRATIONS)] * 4
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM meansql.schema_version ORDER BY version").fetchall() == [
            (v,) for v in sorted(pg_schema.MIGRATIONS)
        ]
        assert conn.execute("SHOW search_path").fetchone() == ('"$user", public, meansql',)


def test_plain_sql_of_the_seed_works_unchanged_on_postgresql(pg: PostgresServer) -> None:
    url = new_database(pg)
    store = PostgresStore(url)
    try:
        store.init()
        rec = call("bamboo brush", True)
        store.commit_calls([rec.row()], [])
    finally:
        store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        # A user's own table of the same name in public wins over meansql's.
        conn.execute("CREATE TABLE public.judge_calibration (x int)")
        assert conn.execute("SELECT count(*) FROM judge_calibration").fetchone() == (0,)
        conn.execute("INSERT INTO training_annotations (trace_id, trainable, verified, confidence) VALUES (%s, true, true, 1.0)", [rec.trace_id])
        cur = conn.execute("INSERT INTO training_annotations (trace_id, trainable, confidence) VALUES (%s, true, 0.7)", [rec.trace_id])
        assert cur.statusmessage == "INSERT 0 1"
        assert conn.execute("SELECT trace_id, trainable, verified, confidence FROM training_annotations").fetchall() == [
            (rec.trace_id, True, False, 0.7)
        ]
        assert conn.execute(
            "SELECT user_input, trainable, confidence FROM training_examples_with_annotations "
            "WHERE cascade_id = 'semantic_matches' AND cell_name = 'evaluate' AND trainable = true "
            "ORDER BY timestamp DESC LIMIT 10"
        ).fetchall() == [("bamboo brush", True, 0.7)]
        assert conn.execute("SELECT count(*) FROM training_events").fetchone() == (2,)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="confidence must be between 0 and 1"):
            conn.execute("INSERT INTO training_annotations (trace_id, confidence) VALUES ('t', 2)")
        # Again after the first run: nothing to do, and the search_path is not extended twice.
        again = PostgresStore(url)
        try:
            assert again.init() == max(pg_schema.MIGRATIONS)
        finally:
            again.close()
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ('"$user", public, meansql',)


def test_db_init_url_creates_the_schema_from_the_shell(pg: PostgresServer, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT, server_env

    url = new_database(pg)
    for _ in range(2):  # idempotent
        out = subprocess.run(
            [sys.executable, "-m", "server.cli", "db", "init", "--db", str(tmp_path / "x.duckdb"), "--url", url],
            cwd=ROOT,
            env=server_env(None),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"{url}: schema meansql version {max(pg_schema.MIGRATIONS)}" in " ".join(out.stdout.split())
    assert not (tmp_path / "x.duckdb").exists()  # the file is not the store here
    bad = subprocess.run(
        [sys.executable, "-m", "server.cli", "db", "init", "--url", "mysql://x"],
        cwd=ROOT,
        env=server_env(None),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "store_url" in bad.stderr and "postgresql:// URL or duckdb" in bad.stderr
