"""SQL cursors (DECLARE, FETCH, MOVE, CLOSE) from psycopg, asyncpg and psql, against meansql and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import asyncpg
import psycopg
import pytest

from tests.clients.conftest import Target
from tests.conftest import psql


@pytest.fixture()
def numbers(target: Target, table_name: str) -> str:
    """A table of 1,000 rows: n and its name."""
    with target.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table_name}")
        conn.execute(f"CREATE TABLE {table_name} (n integer, name text)")
        conn.execute(f"INSERT INTO {table_name} SELECT g.n, 'n' || g.n FROM generate_series(1, 1000) AS g(n)")
    return table_name


def test_psycopg_named_cursor_fetches_in_steps(target: Target, numbers: str) -> None:
    with psycopg.connect(target.url) as conn:
        with conn.cursor(name="steps") as cur:
            cur.itersize = 64
            cur.execute(f"SELECT n, name FROM {numbers} WHERE n <= %s ORDER BY n", [300])
            assert [(c.name, c.type_code) for c in cur.description] == [("n", 23), ("name", 25)]
            first = cur.fetchmany(5)
            one = cur.fetchone()
            rest = list(cur)
        assert first == [(i, f"n{i}") for i in range(1, 6)]
        assert one == (6, "n6")
        assert rest == [(i, f"n{i}") for i in range(7, 301)]
        # The cursor is gone at the end of the transaction.
        conn.commit()
        with pytest.raises(psycopg.errors.InvalidCursorName):
            conn.execute('FETCH 1 FROM "steps"')


def test_psycopg_binary_and_scroll_by(target: Target, numbers: str) -> None:
    with psycopg.connect(target.url) as conn:
        with conn.cursor(name="bin", binary=True) as cur:
            cur.execute(f"SELECT n, name, n * 1.5::float8 AS x FROM {numbers} ORDER BY n")
            cur.scroll(10)  # MOVE 10
            rows = cur.fetchmany(2)
        assert rows == [(11, "n11", 16.5), (12, "n12", 18.0)]
        assert [type(v) for v in rows[0]] == [int, str, float]


def test_psycopg_cursor_with_hold_outlives_its_transaction(target: Target, numbers: str) -> None:
    with psycopg.connect(target.url, autocommit=True) as conn:
        with conn.cursor(name="held", withhold=True) as cur:
            cur.execute(f"SELECT n FROM {numbers} WHERE n > 995 ORDER BY n")
            assert cur.fetchall() == [(996,), (997,), (998,), (999,), (1000,)]


def test_cursor_sees_its_transactions_own_writes(target: Target, numbers: str) -> None:
    with target.connect() as conn:
        with conn.transaction(force_rollback=True):
            conn.execute(f"INSERT INTO {numbers} VALUES (-1, 'minus one')")
            conn.execute(f"DECLARE mine CURSOR FOR SELECT n, name FROM {numbers} WHERE n < 1")
            assert conn.execute("FETCH ALL FROM mine").fetchall() == [(-1, "minus one")]
        assert conn.execute(f"SELECT count(*) FROM {numbers} WHERE n < 1").fetchone() == (0,)


def test_command_tags_and_errors(target: Target, numbers: str) -> None:
    with target.connect() as conn:
        with pytest.raises(psycopg.errors.NoActiveSqlTransaction) as outside:
            conn.execute(f"DECLARE c CURSOR FOR SELECT n FROM {numbers}")
        assert outside.value.sqlstate == "25P01"
        assert "DECLARE CURSOR can only be used in transaction blocks" in str(outside.value)
        with pytest.raises(psycopg.errors.InvalidCursorName) as unknown:
            conn.execute("FETCH 1 FROM nowhere")
        assert unknown.value.sqlstate == "34000"
        assert 'cursor "nowhere" does not exist' in str(unknown.value)
        tags = []
        with conn.transaction():
            for sql in (
                f"DECLARE c NO SCROLL CURSOR WITHOUT HOLD FOR SELECT n FROM {numbers} ORDER BY n",
                "MOVE FORWARD 3 IN c",
                "FETCH FORWARD 2 FROM c",
                "FETCH c",
                "MOVE ALL IN c",
                "FETCH NEXT FROM c",
                "CLOSE c",
            ):
                cur = conn.execute(sql)
                tags.append((cur.statusmessage, cur.fetchall() if cur.description else None))
            conn.execute(f"DECLARE d CURSOR FOR SELECT 1 AS one FROM {numbers}")
            conn.execute(f'DECLARE "Quoted" CURSOR FOR SELECT 2 AS two FROM {numbers}')
            assert conn.execute('FETCH 1 FROM "Quoted"').fetchall() == [(2,)]
            assert conn.execute("CLOSE ALL").statusmessage == "CLOSE CURSOR ALL"
            with pytest.raises(psycopg.errors.InvalidCursorName):
                conn.execute("FETCH d")
    assert tags == [
        ("DECLARE CURSOR", None),
        ("MOVE 3", None),
        ("FETCH 2", [(4,), (5,)]),
        ("FETCH 1", [(6,)]),
        ("MOVE 994", None),
        ("FETCH 0", []),
        ("CLOSE CURSOR", None),
    ]


def test_duplicate_cursor_and_failed_transaction(target: Target, numbers: str) -> None:
    with target.connect() as conn:
        with pytest.raises(psycopg.errors.DuplicateCursor) as dup, conn.transaction():
            conn.execute(f"DECLARE c CURSOR FOR SELECT n FROM {numbers}")
            conn.execute(f"DECLARE c CURSOR FOR SELECT n FROM {numbers}")
        assert dup.value.sqlstate == "42P03"
        conn.execute("BEGIN")
        conn.execute(f"DECLARE c CURSOR FOR SELECT n FROM {numbers} ORDER BY n")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("FETCH 1 FROM c")
        conn.execute("ROLLBACK")
        with pytest.raises(psycopg.errors.InvalidCursorName):
            conn.execute("FETCH 1 FROM c")
        assert conn.execute("SELECT 1").fetchone() == (1,)


def _asyncpg(target: Target, body: Any) -> Any:
    async def main() -> Any:
        conn = await asyncpg.connect(host=target.host, port=target.port, user=target.user, database=target.dbname)
        try:
            return await asyncio.wait_for(body(conn), 30)
        finally:
            conn.terminate()

    return asyncio.run(main())


def test_asyncpg_cursor_iteration_fetch_and_forward(target: Target, numbers: str) -> None:
    async def body(conn: asyncpg.Connection) -> Any:
        async with conn.transaction():
            every = [r["n"] async for r in conn.cursor(f"SELECT n FROM {numbers} WHERE n > $1 ORDER BY n", 900, prefetch=16)]
            cur = await conn.cursor(f"SELECT n, name FROM {numbers} ORDER BY n")
            first = await cur.fetch(3)
            await cur.forward(10)
            after = await cur.fetchrow()
        return every, [tuple(r) for r in first], tuple(after)

    every, first, after = _asyncpg(target, body)
    assert every == list(range(901, 1001))
    assert first == [(1, "n1"), (2, "n2"), (3, "n3")]
    assert after == (14, "n14")


def test_psql_fetch_output(target: Target, numbers: str) -> None:
    result = psql(
        target.url,
        "BEGIN",
        f"DECLARE c CURSOR FOR SELECT n, name FROM {numbers} ORDER BY n",
        "FETCH 2 FROM c",
        "MOVE 5 FROM c",
        "FETCH c",
        "CLOSE c",
        "COMMIT",
    )
    assert result.stderr == ""
    assert result.stdout.split("\n") == [
        "BEGIN",
        "DECLARE CURSOR",
        " n | name ",
        "---+------",
        " 1 | n1",
        " 2 | n2",
        "(2 rows)",
        "",
        "MOVE 5",
        " n | name ",
        "---+------",
        " 8 | n8",
        "(1 row)",
        "",
        "CLOSE CURSOR",
        "COMMIT",
        "",
    ]


SCROLL_STEPS = [
    ("FETCH 3 FROM s", "FETCH 3", [1, 2, 3]),
    ("FETCH PRIOR FROM s", "FETCH 1", [2]),
    ("FETCH BACKWARD 5 FROM s", "FETCH 1", [1]),
    ("FETCH NEXT FROM s", "FETCH 1", [1]),
    ("FETCH LAST FROM s", "FETCH 1", [10]),
    ("FETCH NEXT FROM s", "FETCH 0", []),
    ("FETCH PRIOR FROM s", "FETCH 1", [10]),
    ("FETCH ABSOLUTE 4 FROM s", "FETCH 1", [4]),
    ("FETCH RELATIVE -2 FROM s", "FETCH 1", [2]),
    ("FETCH RELATIVE 0 FROM s", "FETCH 1", [2]),
    ("FETCH 0 FROM s", "FETCH 1", [2]),
    ("FETCH ABSOLUTE -3 FROM s", "FETCH 1", [8]),
    ("FETCH FIRST FROM s", "FETCH 1", [1]),
    ("MOVE FORWARD ALL IN s", "MOVE 9", None),
    ("FETCH BACKWARD 2 FROM s", "FETCH 2", [10, 9]),
    ("FETCH ABSOLUTE 20 FROM s", "FETCH 0", []),
    ("FETCH -1 FROM s", "FETCH 1", [10]),
    ("MOVE ABSOLUTE 0 IN s", "MOVE 0", None),
    ("FETCH FORWARD 2 FROM s", "FETCH 2", [1, 2]),
    ("FETCH BACKWARD ALL FROM s", "FETCH 1", [1]),
    ("FETCH RELATIVE 3 FROM s", "FETCH 1", [3]),
    ("MOVE ABSOLUTE 11 IN s", "MOVE 0", None),
    ("FETCH RELATIVE -1 FROM s", "FETCH 1", [10]),
    ("MOVE BACKWARD 4 IN s", "MOVE 4", None),
    ("FETCH FORWARD -2 FROM s", "FETCH 2", [5, 4]),
]


def test_scroll_cursor_moves_both_ways(target: Target, numbers: str) -> None:
    seen = []
    with target.connect() as conn, conn.transaction():
        conn.execute(f"DECLARE s SCROLL CURSOR FOR SELECT n FROM {numbers} WHERE n <= 10 ORDER BY n")
        for sql, _, _ in SCROLL_STEPS:
            cur = conn.execute(sql)
            seen.append((sql, cur.statusmessage, [r[0] for r in cur.fetchall()] if cur.description else None))
    assert seen == SCROLL_STEPS


def test_scroll_cursor_with_hold_and_psycopg_scroll(target: Target, numbers: str) -> None:
    with psycopg.connect(target.url) as conn:
        with conn.cursor(name="sc", scrollable=True) as cur:
            cur.execute(f"SELECT n, name FROM {numbers} WHERE n <= 100 ORDER BY n")
            assert cur.fetchmany(3) == [(1, "n1"), (2, "n2"), (3, "n3")]
            cur.scroll(-2)
            assert cur.fetchone() == (2, "n2")
            cur.scroll(50, mode="absolute")
            assert cur.fetchone() == (51, "n51")
    with target.connect() as conn:
        conn.execute(f"DECLARE h SCROLL CURSOR WITH HOLD FOR SELECT n FROM {numbers} WHERE n > 997 ORDER BY n")
        assert conn.execute("FETCH LAST FROM h").fetchall() == [(1000,)]
        assert conn.execute("FETCH BACKWARD ALL FROM h").fetchall() == [(999,), (998,)]
        conn.execute("CLOSE h")


def test_no_scroll_cursor_refuses_to_move_backward(target: Target, numbers: str) -> None:
    with target.connect() as conn, conn.transaction():
        conn.execute(f"DECLARE f NO SCROLL CURSOR FOR SELECT n FROM {numbers} ORDER BY n")
        assert conn.execute("FETCH 2 FROM f").fetchall() == [(1,), (2,)]
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
            conn.execute("FETCH PRIOR FROM f")
        assert refused.value.sqlstate == "55000"
        assert "cursor can only scan forward" in str(refused.value)
        conn.execute("ROLLBACK")


def test_cursor_of_plain_types_in_text_and_binary(target: Target, numbers: str) -> None:
    """Rows of ints, text, dates and booleans (which meansql reads as Arrow batches) come out the same both ways."""
    query = (f"SELECT n, name, DATE '2026-01-01' + n AS day, n % 2 = 0 AS even, NULL::integer AS nothing "
             f"FROM {numbers} WHERE n BETWEEN 3 AND 9000 ORDER BY n")
    expected = [(n, f"n{n}", datetime.date(2026, 1, 1) + datetime.timedelta(days=n), n % 2 == 0, None)
                for n in range(3, 1001)]
    for binary in (False, True):
        with psycopg.connect(target.url) as conn:
            with conn.cursor(name="plain", binary=binary) as cur:
                cur.itersize = 7
                cur.execute(query)
                head = cur.fetchmany(10)
                cur.scroll(5)
                rest = cur.fetchall()
            assert head == expected[:10]
            assert rest == expected[15:]
