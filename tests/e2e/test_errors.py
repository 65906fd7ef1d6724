"""Bad input and model failures: the right SQLSTATE, a clear message, a usable session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ServerProcess, create_products, psql
from tests.fake_provider import FakeProvider


@pytest.mark.parametrize(
    ("sql", "sqlstate", "words"),
    [
        ("SELEC 1", "42601", "syntax error"),
        ("SELECT * FROM nowhere", "42P01", "nowhere"),
        ("SELECT nope FROM products", "42703", "nope"),
        ("SELECT description MEANS 42 FROM products", "42804", "needs text for criterion"),
        ("SELECT description MEANS FROM products", "42601", "MEANS needs a criterion"),
        ("SELECT id MEANS 'small' FROM products", "42804", "MEANS needs varchar, varchar arguments: text is INTEGER"),
        ("SELECT semantic_matches(description) FROM products", "42601", "takes 2 (text, criterion)"),
        ("SHOW meansql.nothing", "42704", "meansql.nothing"),
    ],
)
def test_bad_sql_gets_sqlstate_and_session_survives(server: ServerProcess, sql: str, sqlstate: str, words: str) -> None:
    with server.connect() as conn:
        create_products(conn)
        with pytest.raises(psycopg.Error) as info:
            conn.execute(sql)
        assert info.value.diag.sqlstate == sqlstate
        assert words in (info.value.diag.message_primary or "")
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_errors_over_psql_keep_the_session(server: ServerProcess) -> None:
    out = psql(server.url, "SELECT * FROM nowhere; SELECT 2 AS two", "SELECT 3 AS three", check=False)
    assert "ERROR:  " in out.stderr and "nowhere" in out.stderr
    assert "three" in out.stdout and "two" not in out.stdout  # the rest of a failed query string is skipped


def test_failed_transaction_until_rollback(server: ServerProcess) -> None:
    with psycopg.connect(server.url) as conn:  # psycopg opens a transaction itself
        conn.execute("CREATE TABLE t (a INT)")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM nowhere")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_begin_inside_a_string_is_not_a_transaction(server: ServerProcess) -> None:
    with server.connect() as conn:
        assert conn.execute("SELECT 'begin' AS word").fetchone() == ("begin",)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_no_model_configured_says_how(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    # With no model, MEANS is answered by the local judge; an operator that returns text needs an LLM.
    ops = tmp_path / "ops"
    ops.mkdir()
    (ops / "summary.yaml").write_text(
        "cascade_id: summary\n"
        "sql_function: {name: summarize, args: [{name: text, type: VARCHAR}], returns: VARCHAR}\n"
        "cells: [{name: write, instructions: 'Summarize {{ input.text }}'}]\n"
    )
    server = start_server("--operators-dir", str(ops), provider=False)
    with server.connect() as conn:
        create_products(conn)
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT summarize(description) FROM products")
        assert info.value.diag.sqlstate == "22023"
        assert "no model is configured" in info.value.diag.message_primary
        assert "MEANSQL_MODEL" in (info.value.diag.message_hint or "")
        assert conn.execute("SELECT count(*) FROM unified_logs").fetchone() == (0,)


def test_server_errors_are_retried_then_succeed(server: ServerProcess, fresh_provider: FakeProvider) -> None:
    fresh_provider.behaviour.fail_first = 2
    fresh_provider.behaviour.fail_status = 500
    with server.connect() as conn:
        assert conn.execute("SELECT 'bamboo straw' MEANS 'eco-friendly'").fetchone() == (True,)
        attempts = conn.execute("SELECT attempt, error IS NULL, answer FROM unified_logs ORDER BY attempt").fetchall()
    assert [a[0] for a in attempts] == [1, 2, 3]
    assert [a[1] for a in attempts] == [False, False, True]
    assert attempts[-1][2] is True
    assert fresh_provider.attempts == 3


def test_retry_after_is_honoured(server: ServerProcess, fresh_provider: FakeProvider) -> None:
    fresh_provider.behaviour.fail_first = 1
    fresh_provider.behaviour.fail_status = 429
    fresh_provider.behaviour.retry_after = 2
    with server.connect() as conn:
        assert conn.execute("SELECT 'silk scarf' MEANS 'luxury'").fetchone() == (True,)
    times = [r["t"] for r in fresh_provider.requests]
    assert len(times) == 2 and times[1] - times[0] >= 2.0


def test_persistent_failure_is_an_error_with_every_attempt_logged(server: ServerProcess, fresh_provider: FakeProvider) -> None:
    fresh_provider.behaviour.fail_rate = 1.0
    fresh_provider.behaviour.fail_status = 503
    with server.connect() as conn:
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT 'bamboo straw' MEANS 'eco-friendly'")
        assert info.value.diag.sqlstate == "38000"
        assert "failed after 3 attempt(s)" in info.value.diag.message_primary
        rows = conn.execute("SELECT attempt, error FROM unified_logs ORDER BY attempt").fetchall()
    assert [r[0] for r in rows] == [1, 2, 3]  # num_retries=2 in the tests
    assert all("503" in r[1] for r in rows)


def test_unparseable_answer_is_null_never_a_guess(server: ServerProcess, fresh_provider: FakeProvider) -> None:
    fresh_provider.behaviour.garbage = True
    warnings: list[str] = []
    with server.connect() as conn:
        conn.add_notice_handler(lambda d: warnings.append(f"{d.severity}: {d.message_primary}"))
        assert conn.execute("SELECT 'bamboo straw' MEANS 'eco-friendly'").fetchone() == (None,)
        row = conn.execute("SELECT answer, error, assistant_output FROM unified_logs").fetchone()
    assert row[0] is None and row[1].startswith("unparseable answer") and row[2] == "I am not sure, it depends."
    assert any(w.startswith("WARNING: 1 answer(s) could not be read") for w in warnings)


def test_a_timed_out_call_is_retried_and_logged(start_server: Callable[..., ServerProcess],
                                                 fresh_provider: FakeProvider) -> None:
    server = start_server(MEANSQL_REQUEST_TIMEOUT="1")
    fresh_provider.behaviour.slow_first = 1
    fresh_provider.behaviour.slow_delay = 3.0
    with server.connect() as conn:
        assert conn.execute("SELECT 'bamboo straw' MEANS 'eco-friendly'").fetchone() == (True,)
        rows = conn.execute("SELECT attempt, error, latency_ms FROM unified_logs ORDER BY attempt").fetchall()
    assert [r[0] for r in rows] == [1, 2]
    assert "Timeout" in rows[0][1] and rows[1][1] is None
    assert 900 <= rows[0][2] < 2900  # our per-call timeout, not litellm's 6,000 s
