"""The `meansql` commands, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import training
from tests.conftest import ROOT, ServerProcess, create_products, server_env
from tests.fake_provider import FakeProvider
from training import schema


def meansql(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"meansql {' '.join(args)} failed: {result.stdout}\n{result.stderr}")
    return result


@pytest.fixture()
def env(fresh_provider: FakeProvider) -> dict[str, str]:
    return server_env(fresh_provider)


def test_db_init_is_idempotent(tmp_path: Path, env: dict[str, str]) -> None:
    db = str(tmp_path / "x.duckdb")
    assert f"schema version {max(schema.MIGRATIONS)}" in meansql("db", "init", "--db", db, env=env).stdout
    assert f"schema version {max(schema.MIGRATIONS)}" in meansql("db", "init", "--db", db, env=env).stdout
    tables = json.loads(meansql("sql", "query", "SHOW TABLES", "--db", db, "--format", "json", env=env).stdout)
    assert {"unified_logs", "training_annotations", "training_examples_mv", "training_examples_with_annotations",
            "training_stats_by_cascade", "training_examples", "training_events"} <= {t["name"] for t in tables}


def test_sql_query_runs_means_on_the_file(tmp_path: Path, env: dict[str, str], fresh_provider: FakeProvider) -> None:
    db = str(tmp_path / "x.duckdb")
    meansql("sql", "query", "CREATE TABLE p (d VARCHAR); INSERT INTO p VALUES ('bamboo cup'), ('plastic cup')",
            "--db", db, env=env)
    out = meansql("sql", "query", "SELECT d, d MEANS 'eco-friendly' AS eco FROM p ORDER BY d", "--db", db,
                  "--format", "json", env=env)
    assert json.loads(out.stdout) == [{"d": "bamboo cup", "eco": True}, {"d": "plastic cup", "eco": False}]
    assert "No training examples available yet for evaluate" in out.stderr
    csv_out = meansql("sql", "query", "SELECT count(*) AS n FROM unified_logs", "--db", db, "--format", "csv", env=env)
    assert csv_out.stdout.split() == ["n", "2"]


def test_sql_query_on_a_held_file_points_to_url(start_server: Callable[..., ServerProcess], env: dict[str, str]) -> None:
    server = start_server()
    held = meansql("sql", "query", "SELECT 1", "--db", str(server.db), env=env, check=False)
    assert held.returncode == 1
    assert "held by another process" in held.stderr and "--url" in held.stderr
    via_url = meansql("sql", "query", "SELECT 41 + 1 AS answer", "--url", server.url, "--format", "json", env=env)
    assert json.loads(via_url.stdout) == [{"answer": 42}]


def test_run_operator_file(tmp_path: Path, env: dict[str, str], fresh_provider: FakeProvider) -> None:
    op = tmp_path / "classifier.yaml"
    op.write_text(
        "cascade_id: test_classifier\n"
        "inputs_schema:\n  text: Text to classify\n"
        "cells:\n  - name: classify\n    use_training: true\n    training_limit: 3\n"
        "    instructions: |\n      Classify the sentiment. Criterion: positive\n      Text: {{ input.text }}\n"
        "    rules:\n      max_turns: 1\n"
    )
    db = str(tmp_path / "x.duckdb")
    fresh_provider.behaviour.answers = {"This is amazing!": "positive"}
    out = meansql("run", str(op), "--input", '{"text": "This is amazing!"}', "--session", "test1", "--db", db, env=env)
    assert out.stdout.strip() == "positive"
    assert "No training examples available yet for classify" in out.stderr
    rows = json.loads(meansql("sql", "query", "SELECT session_id, cascade_id, cell_name, user_input, assistant_output "
                              "FROM unified_logs", "--db", db, "--format", "json", env=env).stdout)
    assert rows == [{"session_id": "test1", "cascade_id": "test_classifier", "cell_name": "classify",
                     "user_input": "This is amazing!", "assistant_output": "positive"}]
    bad = meansql("run", str(op), "--input", '{"other": 1}', "--db", db, env=env, check=False)
    assert bad.returncode == 1 and "missing text" in bad.stderr


def test_training_mark_and_stats(tmp_path: Path, env: dict[str, str]) -> None:
    db = str(tmp_path / "x.duckdb")
    meansql("sql", "query", "SELECT 'bamboo' MEANS 'eco-friendly'; SELECT 'steel' MEANS 'eco-friendly'", "--db", db, env=env)
    traces = [r["trace_id"] for r in json.loads(meansql("sql", "query", "SELECT trace_id FROM unified_logs ORDER BY user_input",
                                                          "--db", db, "--format", "json", env=env).stdout)]
    out = meansql("training", "mark", *traces, "--verified", "--confidence", "0.8", "--notes", "checked",
                  "--tags", "a,b", "--db", db, env=env)
    assert "marked 2 trace(s) as trainable" in out.stdout
    meansql("training", "mark", traces[1], "--untrainable", "--db", db, env=env)
    stats = json.loads(meansql("training", "stats", "--cascade", "semantic_matches", "--db", db, "--format", "json",
                               env=env).stdout)
    assert stats == [{"cascade_id": "semantic_matches", "cell_name": "evaluate", "example_count": 2,
                      "trainable_count": 1, "verified_count": 1, "avg_confidence": 0.8}]  # the last mark wins whole
    rows = json.loads(meansql("sql", "query", "SELECT notes, tags FROM training_annotations ORDER BY trace_id", "--db", db,
                              "--format", "json", env=env).stdout)
    assert {r["notes"] for r in rows} == {"checked", None} and ["a", "b"] in [r["tags"] for r in rows]


def test_python_mark_as_trainable_on_file_and_over_the_wire(start_server: Callable[..., ServerProcess],
                                                            tmp_path: Path) -> None:
    server = start_server()
    with server.connect() as conn:
        create_products(conn)
        conn.execute("SELECT description MEANS 'eco-friendly' FROM products")
        traces = [r[0] for r in conn.execute("SELECT trace_id FROM unified_logs ORDER BY user_input").fetchall()]
    n = training.mark_as_trainable(traces[:3], trainable=True, verified=True, confidence=1.0,
                                   notes="Correct eco-friendly classifications", tags=["semantic_sql", "verified"],
                                   url=server.url)
    assert n == 3
    with server.connect() as conn:
        rows = conn.execute("SELECT count(*), min(notes), min(tags) FROM training_annotations WHERE verified").fetchone()
    assert rows == (3, "Correct eco-friendly classifications", ["semantic_sql", "verified"])
    server.stop()
    assert training.mark_as_trainable(traces[3:], confidence=0.5, db=server.db) == 2


def test_malformed_operator_stops_startup(tmp_path: Path, env: dict[str, str]) -> None:
    ops = tmp_path / "ops"
    ops.mkdir()
    (ops / "broken.yaml").write_text("cascade_id: broken\ncells:\n  - name: x\n    instructions: hi\n"
                                     "    training_strategy: loudest\n")
    out = meansql("serve", "--db", str(tmp_path / "x.duckdb"), "--port", "0", "--operators-dir", str(ops),
                  env=env, check=False)
    assert out.returncode == 1
    assert "broken.yaml" in out.stderr and "cells.0.training_strategy" in out.stderr
