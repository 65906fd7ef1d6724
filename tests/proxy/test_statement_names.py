"""Prepared statement names in proxy mode follow what PostgreSQL's session really holds.

A name is PostgreSQL's or meansql's; which one PostgreSQL holds is asked of it, so a Parse that failed there,
DISCARD ALL, DEALLOCATE and SQL PREPARE leave no stale record, and DISCARD ALL / DEALLOCATE ALL drop meansql's own
statements of the session as PostgreSQL drops all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import psycopg
import pytest
from psycopg import pq

from tests.clients.conftest import PostgresServer
from tests.conftest import ServerProcess
from tests.fake_provider import FakeProvider

LABELS = ["bamboo brush", "plastic fork", "recycled paper", "steel pan"]


@pytest.fixture(scope="module")
def kit(upstream_pg: PostgresServer) -> Iterator[str]:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{upstream_pg.port}/postgres", autocommit=True) as pg:
        pg.execute("DROP TABLE IF EXISTS name_kit")
        pg.execute("CREATE TABLE name_kit (id int PRIMARY KEY, label text NOT NULL)")
        for i, word in enumerate(LABELS, 1):
            pg.execute("INSERT INTO name_kit VALUES (%s, %s)", [i, word])
    yield "name_kit"


SEMANTIC = "SELECT id FROM name_kit WHERE label MEANS 'bamboo recycled names' AND id < $1 ORDER BY id"


def run(proxy_server: ServerProcess, body: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        conn = await asyncpg.connect(proxy_server.url)
        try:
            return await body(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


def test_asyncpg_a_name_whose_parse_failed_upstream_is_free(proxy_server: ServerProcess, kit: str, provider: FakeProvider) -> None:
    async def body(c: asyncpg.Connection) -> list[Any]:
        with pytest.raises(asyncpg.UndefinedTableError):
            await c.prepare("SELECT id FROM no_such_table", name="by_hand")
        stmt = await c.prepare(SEMANTIC, name="by_hand")  # PostgreSQL holds no "by_hand": meansql takes it
        return [r["id"] for r in await stmt.fetch(10)]

    assert run(proxy_server, body) == [1, 3]


@pytest.mark.parametrize("reset", ["DISCARD ALL", "DEALLOCATE ALL", "DEALLOCATE plain_one"])
def test_asyncpg_a_name_postgres_dropped_is_free(proxy_server: ServerProcess, kit: str, provider: FakeProvider, reset: str) -> None:
    async def body(c: asyncpg.Connection) -> list[Any]:
        plain = await c.prepare("SELECT $1::int + 1", name="plain_one")
        assert await plain.fetchval(1) == 2
        await c.execute(reset)
        stmt = await c.prepare(SEMANTIC, name="plain_one")
        return [r["id"] for r in await stmt.fetch(10)]

    assert run(proxy_server, body) == [1, 3]


def test_asyncpg_a_name_prepared_with_sql_prepare_is_taken(proxy_server: ServerProcess, kit: str, provider: FakeProvider) -> None:
    async def body(c: asyncpg.Connection) -> Any:
        await c.execute("PREPARE in_sql AS SELECT 1")
        with pytest.raises(asyncpg.DuplicatePreparedStatementError, match='prepared statement "in_sql" already exists'):
            await c.prepare(SEMANTIC, name="in_sql")
        await c.execute("DEALLOCATE in_sql")
        stmt = await c.prepare(SEMANTIC, name="in_sql")
        return [r["id"] for r in await stmt.fetch(3)]

    assert run(proxy_server, body) == [1]


@pytest.mark.parametrize("reset", ["DISCARD ALL", "DEALLOCATE ALL"])
def test_asyncpg_meansqls_own_statements_go_with_postgres_ones(
    proxy_server: ServerProcess, kit: str, provider: FakeProvider, reset: str
) -> None:
    async def body(c: asyncpg.Connection) -> list[Any]:
        first = await c.prepare(SEMANTIC, name="mine")
        assert [r["id"] for r in await first.fetch(10)] == [1, 3]
        await c.execute(reset)
        # The name is free on both sides: a plain statement may take it, then (closed) a semantic one again.
        plain = await c.prepare("SELECT $1::int * 2", name="mine")
        assert await plain.fetchval(4) == 8
        await c.execute("DEALLOCATE mine")
        again = await c.prepare(SEMANTIC, name="mine")
        return [r["id"] for r in await again.fetch(4)]

    assert run(proxy_server, body) == [1, 3]


def test_psycopg_named_statements_after_a_failed_parse_and_a_reset(proxy_server: ServerProcess, kit: str, provider: FakeProvider) -> None:
    """psycopg's libpq-level prepare, as an application with fixed statement names uses it."""
    semantic = SEMANTIC.encode()
    with proxy_server.connect() as conn:
        pgconn = conn.pgconn
        failed = pgconn.prepare(b"fixed", b"SELECT nope FROM name_kit")
        assert failed.status == pq.ExecStatus.FATAL_ERROR
        assert failed.error_field(pq.DiagnosticField.SQLSTATE) == b"42703"
        assert pgconn.prepare(b"fixed", semantic).status == pq.ExecStatus.COMMAND_OK
        taken = pgconn.prepare(b"fixed", b"SELECT 1")  # now meansql's: PostgreSQL's answer to a second Parse
        assert taken.error_field(pq.DiagnosticField.SQLSTATE) == b"42P05"
        rows = pgconn.exec_prepared(b"fixed", [b"10"])
        assert [rows.get_value(i, 0) for i in range(rows.ntuples)] == [b"1", b"3"]
        conn.execute("DISCARD ALL")
        assert pgconn.prepare(b"fixed", b"SELECT 2").status == pq.ExecStatus.COMMAND_OK  # PostgreSQL's now
        again = pgconn.prepare(b"fixed", semantic)
        assert again.error_field(pq.DiagnosticField.SQLSTATE) == b"42P05"
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_asyncpg_deallocate_of_a_semantic_statement(proxy_server: ServerProcess, kit: str, provider: FakeProvider) -> None:
    async def body(c: asyncpg.Connection) -> Any:
        stmt = await c.prepare(SEMANTIC, name="Gone")
        assert [r["id"] for r in await stmt.fetch(10)] == [1, 3]
        with pytest.raises(asyncpg.InvalidSQLStatementNameError):
            await c.execute("DEALLOCATE gone")  # folded to lower case, as PostgreSQL does: not that name
        await c.execute('DEALLOCATE PREPARE "Gone"')
        plain = await c.prepare("SELECT 5", name="Gone")  # the name is free for PostgreSQL
        return await plain.fetchval()

    assert run(proxy_server, body) == 5
