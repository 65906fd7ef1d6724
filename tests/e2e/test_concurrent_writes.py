"""Writes racing from many sessions at once: what PostgreSQL would let through, meansql lets through."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.conftest import ServerProcess


def _race(server: ServerProcess, n: int, work: Callable[[psycopg.Connection[Any], int], None]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            with server.connect() as conn:
                barrier.wait()
                work(conn, i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


def test_updates_of_one_row_from_many_sessions_all_succeed(server: ServerProcess) -> None:
    with server.connect() as conn:
        conn.execute("CREATE TABLE counter (id INT PRIMARY KEY, hits INT, last TEXT)")
        conn.execute("INSERT INTO counter VALUES (1, 0, '')")

    def work(conn: psycopg.Connection[Any], i: int) -> None:
        for j in range(10):
            cur = conn.execute("UPDATE counter SET hits = hits + 1, last = %s WHERE id = 1", [f"{i}.{j}"])
            assert cur.rowcount == 1

    assert _race(server, 6, work) == []
    with server.connect() as conn:
        assert conn.execute("SELECT hits FROM counter").fetchone() == (60,)  # no update lost


def test_annotations_of_one_trace_from_many_sessions_all_succeed(server: ServerProcess) -> None:
    with server.connect() as conn:
        conn.execute("SELECT 'bamboo' MEANS 'eco-friendly'").fetchall()
        (trace,) = conn.execute("SELECT trace_id FROM unified_logs WHERE user_input IS NOT NULL LIMIT 1").fetchone()

    def work(conn: psycopg.Connection[Any], i: int) -> None:
        for j in range(5):
            conn.execute("INSERT INTO training_annotations (trace_id, trainable, verified, confidence, notes) "
                         "VALUES (%s, true, true, 0.9, %s)", [trace, f"{i}.{j}"])

    assert _race(server, 6, work) == []
    with server.connect() as conn:
        rows = conn.execute("SELECT count(*), min(notes) FROM training_annotations WHERE trace_id = %s",
                            [trace]).fetchall()
    assert rows[0][0] == 1 and rows[0][1].count(".") == 1  # the last annotation of the trace wins


def test_a_real_duplicate_key_still_fails_with_23505(server: ServerProcess) -> None:
    with server.connect() as conn:
        conn.execute("CREATE TABLE keyed (id INT PRIMARY KEY)")

    def work(conn: psycopg.Connection[Any], i: int) -> None:
        conn.execute("INSERT INTO keyed VALUES (7)")

    errors = _race(server, 4, work)
    assert len(errors) == 3
    assert all(isinstance(e, psycopg.errors.UniqueViolation) for e in errors), errors
    with server.connect() as conn:
        assert conn.execute("SELECT count(*) FROM keyed").fetchone() == (1,)


def test_inside_a_transaction_a_conflict_is_reported_with_40001(server: ServerProcess) -> None:
    with server.connect() as conn:
        conn.execute("CREATE TABLE acct (id INT PRIMARY KEY, balance INT)")
        conn.execute("INSERT INTO acct VALUES (1, 100)")
    with server.connect() as a, server.connect() as b:
        a.execute("BEGIN")
        b.execute("BEGIN")
        a.execute("UPDATE acct SET balance = balance - 10 WHERE id = 1")
        with pytest.raises(psycopg.errors.SerializationFailure) as lost:
            b.execute("UPDATE acct SET balance = balance - 20 WHERE id = 1")
        assert lost.value.sqlstate == "40001"
        b.execute("ROLLBACK")
        a.execute("COMMIT")
        assert b.execute("SELECT balance FROM acct").fetchone() == (90,)
