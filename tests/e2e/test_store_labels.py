"""Label filters over HTTP after writes through both doors of `meansql serve`, rolled-back ones included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import ServerProcess
from tests.e2e.test_store_api import http_url


@pytest.fixture()
def api(start_server: Callable[..., ServerProcess]) -> tuple[ServerProcess, httpx.Client]:
    server = start_server(provider=False)
    return server, httpx.Client(base_url=http_url(server), timeout=30)


def found(http: httpx.Client, *labels: str, mode: str = "any") -> tuple[list[str], int]:
    """Input texts of the examples with the labels, by quality ascending, and the total."""
    r = http.get(
        "/training-examples/", params={"labels": ",".join(labels), "labels_mode": mode, "order_by": "quality_score", "order": "asc", "limit": 2}
    )
    assert r.status_code == 200, r.text
    return [e["input_text"] for e in r.json()["items"]], r.json()["total"]


def consistent(conn: psycopg.Connection[Any]) -> bool:
    """The side table holds exactly the elements of the lists."""
    side = conn.execute(
        "SELECT example_id, label, created_at, quality_score, confidence, difficulty FROM training_example_labels ORDER BY ALL"
    ).fetchall()
    lists = conn.execute(
        "SELECT DISTINCT id, unnest(labels), created_at, quality_score, confidence, difficulty FROM training_examples ORDER BY ALL"
    ).fetchall()
    return side == lists


def test_label_filters_follow_sql_and_http_writes(api: tuple[ServerProcess, httpx.Client]) -> None:
    server, http = api
    for name, labels, quality in (("a", ["red", "blue"], 10), ("b", ["blue"], 20)):
        r = http.post(
            "/training-examples/", json={"input_text": name, "labels": labels, "quality_score": quality, "source_trace_hash": f"hash:{name}"}
        )
        assert r.status_code == 201, r.text
    with server.connect() as conn:
        conn.execute(
            "INSERT INTO training_examples (input_text, labels, quality_score, source_trace_hash) "
            "VALUES ('c', ['red', 'green'], 30, 'hash:c'), ('d', ['green'], 40, 'hash:d')"
        )
        assert found(http, "red") == (["a", "c"], 2)
        assert found(http, "green", "red", mode="all") == (["c"], 1)

        conn.execute("UPDATE training_examples SET labels = ['blue'] WHERE input_text = 'c'")
        conn.execute("UPDATE training_examples SET quality_score = 5 WHERE input_text = 'd'")
        assert found(http, "red") == (["a"], 1)
        assert found(http, "blue", "green") == (["d", "a"], 4)

        conn.execute("DELETE FROM training_examples WHERE input_text = 'd'")
        assert found(http, "green") == ([], 0)

        conn.execute(
            "INSERT INTO training_examples (input_text, labels, quality_score, source_trace_hash) "
            "VALUES ('b again', ['green'], 20, 'hash:b') "
            "ON CONFLICT (source_trace_hash) DO UPDATE SET labels = excluded.labels"
        )
        assert found(http, "green") == (["b"], 1)
        assert found(http, "blue") == (["a", "c"], 2)
        assert consistent(conn)

    # HTTP changes after the SQL ones, then the label counts.
    items = http.get("/training-examples/", params={"labels": "blue", "order_by": "quality_score"}).json()["items"]
    c_id = next(e["id"] for e in items if e["input_text"] == "c")
    assert http.patch(f"/training-examples/{c_id}", json={"labels": ["green", "red"]}).status_code == 200
    assert found(http, "green", "red", mode="all") == (["c"], 1)
    a_id = next(e["id"] for e in items if e["input_text"] == "a")
    assert http.delete(f"/training-examples/{a_id}").status_code == 204
    assert found(http, "red") == (["c"], 1)
    assert http.get("/training-examples/labels").json() == [{"label": "green", "count": 2}, {"label": "red", "count": 1}]


def test_rolled_back_and_failed_sql_writes_leave_the_labels(api: tuple[ServerProcess, httpx.Client]) -> None:
    server, http = api
    with server.connect() as conn:
        conn.execute("INSERT INTO training_examples (input_text, labels, quality_score) VALUES ('a', ['red'], 10), ('b', ['blue'], 20)")
        with conn.transaction():
            conn.execute("UPDATE training_examples SET labels = ['green'] WHERE input_text = 'a'")
            conn.execute("INSERT INTO training_examples (input_text, labels) VALUES ('c', ['green'])")
            assert conn.execute("SELECT count(*) FROM training_example_labels WHERE label = 'green'").fetchone() == (2,)
            raise psycopg.Rollback()
        assert found(http, "green") == ([], 0)
        assert found(http, "red", "blue") == (["a", "b"], 2)

        # A CHECK violation (not a literal, so DuckDB finds it) after the first row: nothing of the statement stays.
        with pytest.raises(psycopg.Error) as info:
            conn.execute(
                "INSERT INTO training_examples (input_text, labels, quality_score) SELECT 'x' || i, ['green'], 99 + i FROM range(3) t(i)"
            )
        assert info.value.sqlstate == "23514"
        assert found(http, "green") == ([], 0)

        # Writes the side table could not follow are refused, and change nothing.
        for sql in (
            "DELETE FROM training_example_labels",
            "INSERT INTO training_example_labels (label) VALUES ('x')",
            "UPDATE training_examples SET labels = ['green'] WHERE input_text MEANS 'the first letter'",
        ):
            with pytest.raises(psycopg.Error) as info:
                conn.execute(sql)
            assert info.value.sqlstate == "0A000", sql
        assert found(http, "green") == ([], 0)

        with conn.transaction():
            conn.execute("UPDATE training_examples SET labels = ['green', 'red'] WHERE input_text = 'b'")
        assert found(http, "green", "red", mode="all") == (["b"], 1)
        assert found(http, "red") == (["a", "b"], 2)
        assert consistent(conn)


def test_copy_into_training_examples_fills_the_labels(api: tuple[ServerProcess, httpx.Client]) -> None:
    server, http = api
    with server.connect() as conn:
        with conn.cursor().copy("COPY training_examples (input_text, output_text, labels, quality_score) FROM STDIN") as cp:
            cp.write_row(("copied low", "out", ["copied", "low"], 10))
            cp.write_row(("copied high", "out", ["copied"], 90))
        assert consistent(conn)
    assert found(http, "copied") == (["copied low", "copied high"], 2)
    assert found(http, "copied", "low", mode="all") == (["copied low"], 1)
