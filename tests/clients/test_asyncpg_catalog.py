"""asyncpg's values and the pg_type introspection query it sends, against meansql and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
from typing import Any

import asyncpg
from asyncpg import introspection

from tests.clients.conftest import Target


async def _fetch(target: Target, sql: str) -> dict[str, Any]:
    conn = await asyncpg.connect(host=target.host, port=target.port, user=target.user, database=target.dbname)
    try:
        rows = await asyncio.wait_for(conn.fetch(sql), 10)
        return dict(rows[0])
    finally:
        conn.terminate()


def test_fetch_scalar_types(target: Target) -> None:
    row = asyncio.run(_fetch(target, "SELECT 1::int AS i, 'x'::text AS t, true AS b, '{\"a\": 1}'::json AS j"))
    assert row == {"i": 1, "t": "x", "b": True, "j": '{"a": 1}'}


def test_fetch_numeric_and_time_types(target: Target) -> None:
    row = asyncio.run(_fetch(target, "SELECT 1.50::numeric(10,2) AS n, DATE '2024-01-02' AS d, "
                                     "TIMESTAMP '2024-01-02 03:04:05' AS ts"))
    assert row == {"n": decimal.Decimal("1.50"), "d": dt.date(2024, 1, 2), "ts": dt.datetime(2024, 1, 2, 3, 4, 5)}


def test_fetch_array_types(target: Target) -> None:
    row = asyncio.run(_fetch(target, "SELECT ARRAY[1,2]::int[] AS ia, ARRAY['a','b']::text[] AS ta"))
    assert row == {"ia": [1, 2], "ta": ["a", "b"]}


def test_type_introspection_query(target: Target) -> None:
    """The recursive pg_type query asyncpg sends for arrays (here with text parameters)."""
    with target.connect() as conn:
        rows = conn.execute(introspection.INTRO_LOOKUP_TYPES_13.replace("$1", "%s"), [[1007, 1009, 199]]).fetchall()
    arrays = {(r[0], r[2], r[5], r[12]) for r in rows if r[0] in (1007, 1009, 199)}
    assert arrays == {(1007, "_int4", 23, "integer"), (1009, "_text", 25, "text"), (199, "_json", 114, "json")}
    assert {23, 25, 114} <= {r[0] for r in rows}
