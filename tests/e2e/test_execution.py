"""Semantic execution, by call counts and results: dedup, cache, budget, early stop, batching, cancel."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import ServerProcess, wait_for
from tests.fake_provider import FakeProvider, decide

WORDS = ["bamboo cup", "recycled paper", "plastic fork", "steel pipe", "organic tea", "glass jar", "nylon rope",
         "compost bin", "vinyl mat", "foam tray"]


def fill(conn: psycopg.Connection[Any], n_rows: int, n_distinct: int) -> None:
    """items(id, price, d): d has exactly n_distinct values; price = id % 100."""
    words = sql.SQL(", ").join(sql.Literal(w) for w in WORDS)
    conn.execute("CREATE TABLE items (id INT, price DOUBLE, d VARCHAR)")
    conn.execute(sql.SQL(
        "INSERT INTO items SELECT i, (i % 100)::DOUBLE, "
        "list_value({})[((i % {}) % 10) + 1] || ' #' || (i % {}) FROM range({}) t(i)"
    ).format(words, n_distinct, n_distinct, n_rows))


def notices_of(conn: psycopg.Connection[Any]) -> list[str]:
    seen: list[str] = []
    conn.add_notice_handler(lambda d: seen.append(f"{d.severity}: {d.message_primary}"))
    return seen


def test_dedup_then_cache_then_cache_off(server: ServerProcess, fresh_provider: FakeProvider) -> None:
    with server.connect() as conn:
        notices = notices_of(conn)
        fill(conn, 500, 20)
        q = "SELECT id, d MEANS 'eco-friendly' FROM items ORDER BY id"
        first = conn.execute(q).fetchall()
        assert fresh_provider.attempts == 20
        assert all(r[1] == decide("eco-friendly", f"{WORDS[(r[0] % 20) % 10]} #{r[0] % 20}") for r in first)
        notices.clear()
        assert conn.execute(q).fetchall() == first
        assert fresh_provider.attempts == 20  # the same query again: no model call
        assert "NOTICE: semantic_matches: 20 answer(s) from cache, 0 judged by the model" in notices
        hits = conn.execute("SELECT role, cache_hit, input_json FROM unified_logs WHERE cache_hit").fetchall()
        assert hits == [("cache", True, {"cache_hits": 20})]
        conn.execute("SET meansql.cache = off")
        assert conn.execute("SHOW meansql.cache").fetchone() == ("off",)
        assert conn.execute(q).fetchall() == first
        assert fresh_provider.attempts == 40


def test_new_annotations_change_the_key(server: ServerProcess, fresh_provider: FakeProvider) -> None:
    with server.connect() as conn:
        fill(conn, 20, 4)
        conn.execute("SELECT d MEANS 'eco-friendly' FROM items")
        assert fresh_provider.attempts == 4
        conn.execute("INSERT INTO training_annotations (trace_id, trainable) SELECT trace_id, true FROM unified_logs LIMIT 1")
        conn.execute("SELECT d MEANS 'eco-friendly' FROM items")
        assert fresh_provider.attempts == 8  # the prompt now carries an example: a new key
        conn.execute("SELECT d MEANS 'eco-friendly' FROM items")
        assert fresh_provider.attempts == 8


def test_unparseable_answers_are_never_cached(server: ServerProcess, fresh_provider: FakeProvider) -> None:
    with server.connect() as conn:
        fill(conn, 10, 2)
        fresh_provider.behaviour.garbage = True
        assert {r[0] for r in conn.execute("SELECT d MEANS 'eco-friendly' FROM items").fetchall()} == {None}
        fresh_provider.behaviour.garbage = False
        rows = conn.execute("SELECT DISTINCT d, d MEANS 'eco-friendly' FROM items ORDER BY 1").fetchall()
    assert rows == [("bamboo cup #0", True), ("recycled paper #1", True)]
    assert fresh_provider.attempts == 4


def test_answers_paid_for_survive_a_failed_query(server: ServerProcess, fresh_provider: FakeProvider) -> None:
    with server.connect() as conn:
        fill(conn, 10, 10)
        fresh_provider.behaviour.fail_texts = ["steel pipe #3"]
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT d MEANS 'eco-friendly' FROM items")
        assert info.value.diag.sqlstate == "38000"
        judged = fresh_provider.attempts
        assert judged == 9 + 3  # nine answers, three attempts at the failing one (num_retries=2)
        fresh_provider.behaviour.fail_texts = []
        conn.execute("SELECT d MEANS 'eco-friendly' FROM items")
        assert fresh_provider.attempts == judged + 1  # only the value not judged before
        conn.execute("SET meansql.on_error = 'null'")
        fresh_provider.behaviour.fail_rate = 1.0
        notices = notices_of(conn)
        rows = conn.execute("SELECT count(*) FILTER (WHERE m IS NULL) FROM "
                            "(SELECT d || '!' MEANS 'eco-friendly' AS m FROM items)").fetchone()
        assert rows == (10,)
        assert any("10 value(s) could not be judged" in n for n in notices)


def test_budget_stops_before_any_call(server: ServerProcess, fresh_provider: FakeProvider) -> None:
    with server.connect() as conn:
        fill(conn, 50, 10)
        conn.execute("SET meansql.max_calls = 9")
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT id FROM items WHERE d MEANS 'eco-friendly'")
        assert info.value.diag.sqlstate == "54000"
        assert "needs at least 10 model calls" in info.value.diag.message_primary
        assert fresh_provider.attempts == 0
        conn.execute("SET meansql.max_calls = 10")
        assert len(conn.execute("SELECT id FROM items WHERE d MEANS 'eco-friendly'").fetchall()) == 20
        assert fresh_provider.attempts == 10


def test_cheap_predicates_first(server: ServerProcess, fresh_provider: FakeProvider) -> None:
    with server.connect() as conn:
        fill(conn, 1000, 1000)
        rows = conn.execute("SELECT id FROM items WHERE price < 10 AND d MEANS 'eco-friendly' ORDER BY id").fetchall()
        passing = conn.execute("SELECT count(DISTINCT d) FROM items WHERE price < 10").fetchone()
    assert fresh_provider.attempts == passing[0] == 100
    assert [r[0] for r in rows][:4] == [0, 1, 4, 7]


@pytest.mark.parametrize("where", ["id % 100 = 1", "(id * 7) % 100 = 7 OR id = 5", "lower(d) LIKE '%tea #1%'"])
def test_only_values_passing_any_plain_predicate_are_judged(server: ServerProcess, fresh_provider: FakeProvider,
                                                           where: str) -> None:
    """Whatever order DuckDB evaluates the filters in, values of rows the plain predicate drops cost no call."""
    with server.connect() as conn:
        fill(conn, 2000, 200)
        rows = conn.execute(f"SELECT id, d MEANS 'eco-friendly' FROM items WHERE ({where}) AND d MEANS 'eco-friendly' "
                            "ORDER BY id").fetchall()
        kept = conn.execute(f"SELECT DISTINCT d FROM items WHERE {where}").fetchall()
        everything = conn.execute(f"SELECT id, d FROM items WHERE {where} ORDER BY id").fetchall()
    assert 0 < len(kept) < 200
    assert fresh_provider.attempts == len(kept)
    assert rows == [(i, True) for i, d in everything if decide("eco-friendly", d)]


def test_a_row_committed_while_values_are_judged_is_not_seen(server: ServerProcess,
                                                              fresh_provider: FakeProvider) -> None:
    """The values judged ahead of a query and the query itself read one snapshot."""
    inserted: list[int] = []

    def insert_once(attempt: int) -> None:
        if attempt == 1:
            with server.connect() as other:
                other.execute("INSERT INTO items VALUES (999, 1, 'a bamboo thing committed meanwhile')")
            inserted.append(attempt)

    with server.connect() as conn:
        fill(conn, 20, 20)
        fresh_provider.behaviour.on_request = insert_once
        rows = conn.execute("SELECT id, d MEANS 'eco-friendly' FROM items ORDER BY id").fetchall()
        fresh_provider.behaviour.on_request = None
        assert inserted == [1]
        assert [i for i, _ in rows] == list(range(20))
        assert all(m is not None for _, m in rows)
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (21,)
        again = conn.execute("SELECT id, d MEANS 'eco-friendly' FROM items WHERE id = 999").fetchall()
    assert again == [(999, True)]
    assert fresh_provider.attempts == 21


def test_limit_stops_early(start_server: Callable[..., ServerProcess], fresh_provider: FakeProvider) -> None:
    server = start_server(MEANSQL_MAX_CONCURRENCY="16")
    with server.connect() as conn:
        fill(conn, 1000, 1000)
        rows = conn.execute("SELECT id, d FROM items WHERE d MEANS 'eco-friendly' LIMIT 5").fetchall()
    assert len(rows) == 5 and all(decide("eco-friendly", d) for _, d in rows)
    assert fresh_provider.attempts <= 2 * 16


def test_batches(start_server: Callable[..., ServerProcess], tmp_path: Path, fresh_provider: FakeProvider) -> None:
    ops = tmp_path / "ops"
    ops.mkdir()
    builtin = (Path(__file__).parents[2] / "semantic_ops/operators/semantic_matches.yaml").read_text()
    (ops / "batched.yaml").write_text(builtin.replace("    use_training: true", "    use_training: true\n    batch_size: 5"))
    server = start_server("--operators-dir", str(ops))
    with server.connect() as conn:
        fill(conn, 40, 20)
        rows = conn.execute("SELECT DISTINCT d, d MEANS 'eco-friendly' FROM items").fetchall()
        assert fresh_provider.attempts == 4
        assert all(m == decide("eco-friendly", d) for d, m in rows) and len(rows) == 20
        logs = conn.execute("SELECT count(*), count(DISTINCT call_id), min(batch_size), max(batch_size) "
                            "FROM unified_logs WHERE user_input IS NOT NULL").fetchone()
        assert logs == (20, 4, 5, 5)
        fresh_provider.behaviour.garbage = True  # a batch answer that does not fit: one call per item
        got = conn.execute("SELECT d MEANS 'eco-friendly' FROM (VALUES ('bamboo'), ('steel')) v(d)").fetchall()
        assert got == [(None,), (None,)]
        assert fresh_provider.attempts == 4 + 1 + 2


def test_statement_timeout_stops_pending_calls(server: ServerProcess, fresh_provider: FakeProvider) -> None:
    with server.connect() as conn:
        fill(conn, 30, 30)
        conn.execute("SELECT 'warm' MEANS 'up'")  # the first call loads the model client
        fresh_provider.behaviour.delay = 2.0
        conn.execute("SET statement_timeout = '200ms'")
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as info:
            conn.execute("SELECT d MEANS 'eco-friendly' FROM items")
        assert time.monotonic() - started < 1.5
        assert "statement timeout" in info.value.diag.message_primary
        sent = len(fresh_provider.requests)
        conn.execute("SET statement_timeout = 0")
        fresh_provider.behaviour.delay = 0
        assert conn.execute("SELECT 1").fetchone() == (1,)
        time.sleep(0.5)
        assert len(fresh_provider.requests) == sent  # nothing started after the cancel


def test_cancel_request(server: ServerProcess, fresh_provider: FakeProvider) -> None:
    fresh_provider.behaviour.delay = 3.0
    with server.connect() as conn:
        fill(conn, 10, 10)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                conn.execute("SELECT d MEANS 'eco-friendly' FROM items")
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=run)
        t.start()
        wait_for(lambda: fresh_provider.requests, what="the first model request")
        started = time.monotonic()
        conn.cancel()
        t.join(10)
        assert time.monotonic() - started < 1.0
        assert isinstance(errors[0], psycopg.errors.QueryCanceled)
        fresh_provider.behaviour.delay = 0
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_progress_notices(start_server: Callable[..., ServerProcess], fresh_provider: FakeProvider) -> None:
    server = start_server(MEANSQL_MAX_CONCURRENCY="4")
    fresh_provider.behaviour.delay = 0.3
    with server.connect() as conn:
        notices = notices_of(conn)
        fill(conn, 24, 24)
        conn.execute("SELECT d MEANS 'eco-friendly' FROM items")
    progress = [n for n in notices if "distinct values judged" in n]
    assert progress and progress[-1] == "NOTICE: semantic_matches: 24/24 distinct values judged, 0 from cache"
