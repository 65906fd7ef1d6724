"""asyncpg against meansql and PostgreSQL: prepared statements, binary types, portals, executemany.

asyncpg prepares every statement (Parse + Describe), encodes parameters in
binary by the types ParameterDescription names and asks for binary results, so
it checks inferred parameter types and the binary codec end to end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from tests.clients.conftest import Target

UTC = dt.UTC

# (SQL type, Python value)
VALUES: list[tuple[str, Any]] = [
    ("smallint", -7),
    ("integer", 2147483647),
    ("bigint", -9007199254740993),
    ("numeric(12,3)", decimal.Decimal("-1234.500")),
    ("double precision", 0.1),
    ("real", 1.5),
    ("boolean", False),
    ("text", "héllo, \"world\""),
    ("varchar", "plain"),
    ("date", dt.date(2024, 2, 29)),
    ("time", dt.time(12, 34, 56, 500000)),
    ("timestamp", dt.datetime(2024, 1, 2, 3, 4, 5, 123456)),
    ("timestamptz", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("interval", dt.timedelta(days=1, hours=2, microseconds=5)),
    ("uuid", uuid.UUID("12345678-1234-5678-1234-567812345678")),
    ("bytea", b"\x00\x01\xfe"),
    ("json", '{"a": [1, 2]}'),
    ("integer[]", [1, None, 3]),
    ("text[]", ["a b", None, "x"]),
    ("double precision[]", [1.5, -2.0]),
]


def run(target: Target, body: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        conn = await asyncpg.connect(host=target.host, port=target.port, user=target.user,
                                     database=target.dbname)
        try:
            # A check that hangs must fail, not stall the suite.
            return await asyncio.wait_for(body(conn), 30)
        finally:
            conn.terminate()

    return asyncio.run(main())


@pytest.mark.parametrize(("sqltype", "value"), VALUES, ids=[v[0] for v in VALUES])
def test_binary_round_trip(target: Target, table_name: str, sqltype: str, value: Any) -> None:
    async def body(conn: asyncpg.Connection) -> Any:
        await conn.execute(f"DROP TABLE IF EXISTS {table_name}")
        await conn.execute(f"CREATE TABLE {table_name} (id integer, v {sqltype})")
        await conn.execute(f"INSERT INTO {table_name} VALUES ($1, $2), ($3, NULL)", 1, value, 2)
        rows = await conn.fetch(f"SELECT v FROM {table_name} WHERE id = $1 OR id = $2 ORDER BY id", 1, 2)
        same = await conn.fetchval(f"SELECT count(*) FROM {table_name} WHERE v = $1", value) \
            if sqltype not in ("json",) else 1
        return [r[0] for r in rows], same

    values, same = run(target, body)
    assert values == [value, None]
    assert same == 1


def test_parameter_types_are_inferred(target: Target, table_name: str) -> None:
    async def body(conn: asyncpg.Connection) -> Any:
        await conn.execute(f"DROP TABLE IF EXISTS {table_name}")
        await conn.execute(f"CREATE TABLE {table_name} (id integer, name text, price numeric(10,2), "
                           "seen timestamptz, ok boolean)")
        out = {}
        for query in (f"SELECT * FROM {table_name} WHERE id = $1",
                      f"INSERT INTO {table_name} VALUES ($1, $2, $3, $4, $5)",
                      f"INSERT INTO {table_name} (name, id) VALUES ($1, $2)",
                      f"UPDATE {table_name} SET price = $1 WHERE name = $2",
                      f"SELECT id FROM {table_name} WHERE id IN ($1, $2) AND seen > $3 LIMIT $4",
                      "SELECT $1::bigint, $2::date",
                      "SELECT $1"):
            stmt = await conn.prepare(query)
            out[query] = [t.name for t in stmt.get_parameters()]
        cols = await conn.prepare(f"SELECT id, name, price FROM {table_name}")
        return list(out.values()), [(a.name, a.type.name) for a in cols.get_attributes()]

    params, attributes = run(target, body)
    assert params == [
        ["int4"],
        ["int4", "text", "numeric", "timestamptz", "bool"],
        ["text", "int4"],
        ["numeric", "text"],
        ["int4", "int4", "timestamptz", "int8"],
        ["int8", "date"],
        ["text"],
    ]
    assert attributes == [("id", "int4"), ("name", "text"), ("price", "numeric")]


def test_prepared_statement_runs_once_per_execute(target: Target, table_name: str) -> None:
    async def body(conn: asyncpg.Connection) -> Any:
        await conn.execute(f"DROP TABLE IF EXISTS {table_name}")
        await conn.execute(f"CREATE TABLE {table_name} (id integer, name text)")
        insert = await conn.prepare(f"INSERT INTO {table_name} VALUES ($1, $2)")
        for i in range(3):
            await insert.fetch(i, f"n{i}")
        await conn.executemany(f"INSERT INTO {table_name} VALUES ($1, $2)", [(10 + i, "many") for i in range(5)])
        select = await conn.prepare(f"SELECT name FROM {table_name} WHERE id = $1")
        return await conn.fetchval(f"SELECT count(*) FROM {table_name}"), [await select.fetchval(i) for i in (0, 12)]

    assert run(target, body) == (8, ["n0", "many"])


def test_cursor_fetches_with_row_limits(target: Target) -> None:
    async def body(conn: asyncpg.Connection) -> Any:
        async with conn.transaction():
            cur = await conn.cursor("SELECT i FROM generate_series(1, 20) AS g(i) WHERE i > $1 ORDER BY i", 0)
            first = await cur.fetch(5)
            second = await cur.fetch(5)
            await cur.fetch(5)
            rest = await cur.fetch(100)
            streamed = [r[0] async for r in conn.cursor("SELECT i FROM generate_series(1, 250) AS g(i)",
                                                        prefetch=40)]
        return [r[0] for r in first], [r[0] for r in second], [r[0] for r in rest], streamed

    first, second, rest, streamed = run(target, body)
    assert first == [1, 2, 3, 4, 5]
    assert second == [6, 7, 8, 9, 10]
    assert rest == list(range(16, 21))
    assert streamed == list(range(1, 251))


def test_errors_and_failed_transaction(target: Target) -> None:
    async def body(conn: asyncpg.Connection) -> Any:
        seen = []
        for query in ("SELECT * FROM no_such_table", "SELECT 1 / $1::int", "SELECT 'abc'::int"):
            try:
                await conn.fetch(query, *([0] if "$1" in query else []))
            except asyncpg.PostgresError as exc:
                seen.append(exc.sqlstate)
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("SELECT 1 / 0")
        except asyncpg.DivisionByZeroError:
            pass
        for _ in range(2):
            try:
                await conn.fetchval("SELECT $1::int", 1)
            except asyncpg.InFailedSQLTransactionError as exc:
                seen.append(exc.sqlstate)
        await tx.rollback()
        seen.append(await conn.fetchval("SELECT $1::int + 1", 1))
        return seen

    assert run(target, body) == ["42P01", "22012", "22P02", "25P02", "25P02", 2]


def test_json_and_show(target: Target) -> None:
    async def body(conn: asyncpg.Connection) -> Any:
        await conn.execute("SET application_name = 'asyncpg-check'")
        return (await conn.fetchval("SHOW application_name"),
                await conn.fetchval("SELECT current_setting('application_name')"),
                await conn.fetchval("SELECT $1::json", '{"k": "v"}'))

    assert run(target, body) == ("asyncpg-check", "asyncpg-check", '{"k": "v"}')
