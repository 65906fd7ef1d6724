"""`SELECT 1` and other SELECTs of integer literals (what pools and health checks send), against meansql and
PostgreSQL: names, types and values over the simple and the extended protocol, and 25P02 in a failed transaction."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from tests.clients.conftest import Target

CASES = [
    ("SELECT 1", [("?column?", 23)], (1,)),
    ("select 1, 2", [("?column?", 23), ("?column?", 23)], (1, 2)),
    ("SELECT -1;", [("?column?", 23)], (-1,)),
    ("SELECT 2147483647", [("?column?", 23)], (2147483647,)),
    ("SELECT 2147483648", [("?column?", 20)], (2147483648,)),
    ("SELECT -2147483648", [("?column?", 23)], (-2147483648,)),
    ("SELECT +2147483648", [("?column?", 20)], (2147483648,)),
    ("SELECT -9223372036854775808", [("?column?", 20)], (-9223372036854775808,)),
    ("SELECT  007 ,\n8", [("?column?", 23), ("?column?", 23)], (7, 8)),
]


@pytest.mark.parametrize("prepare", [False, True], ids=["simple", "extended"])
def test_integer_literals_are_named_and_typed_as_postgres_does(target: Target, prepare: bool) -> None:
    with target.connect() as conn:
        for sql, columns, row in CASES:
            cur = conn.execute(sql, prepare=prepare)
            assert [(d.name, d.type_code) for d in cur.description or []] == columns, sql
            assert cur.fetchall() == [row], sql
            assert cur.statusmessage == "SELECT 1", sql


def test_a_literal_too_big_for_bigint_is_a_numeric(target: Target) -> None:
    with target.connect() as conn:
        cur = conn.execute("SELECT 9223372036854775808", prepare=False)
        assert [d.type_code for d in cur.description or []] == [1700]
        assert [str(v) for v in cur.fetchone() or ()] == ["9223372036854775808"]


def test_select_1_in_a_failed_transaction_is_refused_until_rollback(target: Target) -> None:
    with target.connect() as conn:
        conn.autocommit = False
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        for prepare in (False, True):
            with pytest.raises(psycopg.errors.InFailedSqlTransaction):
                conn.execute("SELECT 1", prepare=prepare)
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_asyncpg_binary_results(target: Target) -> None:
    async def run() -> tuple[object, ...]:
        conn = await asyncpg.connect(target.url)
        try:
            one = await conn.fetchrow("SELECT 1, -2147483648, 2147483648")
            stmt = await conn.prepare("SELECT 42")
            return (tuple(one), [(a.name, a.type.name) for a in stmt.get_attributes()], await stmt.fetchval())
        finally:
            await conn.close()

    values, attributes, fetched = asyncio.run(run())
    assert values == (1, -2147483648, 2147483648)
    assert attributes == [("?column?", "int4")]
    assert fetched == 42
