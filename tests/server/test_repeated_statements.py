"""The same statement text again and again: what the server remembers per text never changes an answer.

A text whose last result was small goes out row by row, and a session keeps DuckDB's parse of texts it runs as
written; a table that grows, changes shape or goes away must still give the rows and errors a fresh text would.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from tests.conftest import ServerProcess


def test_a_small_result_that_grows_comes_back_whole(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(provider=False)
    with server.connect(prepare_threshold=None) as conn:
        conn.execute("CREATE TABLE grows (i INTEGER, t VARCHAR)")
        conn.execute("INSERT INTO grows VALUES (1, 'a'), (2, NULL), (3, 'c')")
        sql = "SELECT i, t FROM grows ORDER BY i"
        for _ in range(3):
            assert conn.execute(sql).fetchall() == [(1, "a"), (2, None), (3, "c")]
        conn.execute("INSERT INTO grows SELECT i, 'x' || i FROM range(4, 50004) AS r(i)")
        for _ in range(2):  # the first run after the growth goes row by row, the next in bulk
            rows = conn.execute(sql).fetchall()
            assert len(rows) == 50_003
            assert rows[:3] == [(1, "a"), (2, None), (3, "c")] and rows[-1] == (50_003, "x50003")
        conn.execute("DELETE FROM grows WHERE i > 1")
        assert conn.execute(sql).fetchall() == [(1, "a")]


def test_a_kept_parse_follows_the_schema(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(provider=False)
    with server.connect(prepare_threshold=None) as conn:
        conn.execute("CREATE TABLE shapes (a INTEGER)")
        insert, count, star = "INSERT INTO shapes VALUES (1)", "SELECT count(*) FROM shapes", "SELECT * FROM shapes"
        for n in range(1, 4):
            conn.execute(insert)
            assert conn.execute(count).fetchone() == (n,)
        conn.execute("ALTER TABLE shapes ADD COLUMN b VARCHAR DEFAULT 'z'")
        cur = conn.execute(star)
        assert [d.name for d in cur.description or ()] == ["a", "b"] and cur.fetchall() == [(1, "z")] * 3
        conn.execute("DROP TABLE shapes")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute(count)
        conn.execute("CREATE TABLE shapes (a VARCHAR)")
        conn.execute("INSERT INTO shapes VALUES ('x')")
        assert conn.execute(count).fetchone() == (1,)
        assert conn.execute(star).fetchall() == [("x",)]
