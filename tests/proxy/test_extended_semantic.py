"""Semantic statements in the extended protocol through the proxy: psycopg, asyncpg and pgjdbc prepared statements.

meansql answers the Parse, Bind, Describe, Execute and Sync of a semantic statement; plain statements around it
are PostgreSQL's. Values, types and model calls are checked against the fake provider's request log.
"""

from __future__ import annotations

import asyncio
import decimal
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest

from tests.clients.conftest import PostgresServer
from tests.conftest import ServerProcess
from tests.fake_provider import FakeProvider
from tests.fix_wire import RawConnection

ROWS = 300
WORDS = ["bamboo brush", "plastic fork", "recycled paper", "silk scarf"]
ECO = ("bamboo", "recycled")


def label(g: int) -> str:
    return f"{WORDS[g % 4]} {g % 5}"


def eco(ids: range) -> list[int]:
    return [g for g in ids if label(g).startswith(ECO)]


@pytest.fixture(scope="module")
def wares(upstream_pg: PostgresServer) -> Iterator[str]:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{upstream_pg.port}/postgres", autocommit=True) as pg:
        pg.execute("DROP TABLE IF EXISTS wares")
        pg.execute("CREATE TABLE wares (id int PRIMARY KEY, label text NOT NULL, price numeric(8,2))")
        with pg.cursor().copy("COPY wares (id, label, price) FROM STDIN") as cp:
            for g in range(1, ROWS + 1):
                cp.write_row((g, label(g), decimal.Decimal(g) / 4))
    yield "wares"


@pytest.fixture()
def provider(proxy_provider: FakeProvider) -> FakeProvider:
    proxy_provider.reset()
    return proxy_provider


SQL = "SELECT id, label, price FROM wares WHERE label MEANS 'eco-friendly' AND id < {} ORDER BY id"


def test_psycopg_with_parameters_unnamed_and_prepared(proxy_server: ServerProcess, wares: str, provider: FakeProvider) -> None:
    with psycopg.connect(proxy_server.url, autocommit=True) as c:
        cur = c.execute(SQL.format("%s"), [11])
        rows = cur.fetchall()
        assert [r[0] for r in rows] == eco(range(1, 11))
        assert rows[0] == (2, "recycled paper 2", decimal.Decimal("0.50"))
        assert [d.type_code for d in cur.description] == [23, 25, 1700]  # int4, text, numeric
        assert all(r[2] == decimal.Decimal(r[0]) / 4 for r in rows)
        assert len(provider.requests) == len({label(g) for g in range(1, 11)})
        calls = len(provider.requests)
        for n in (6, 11, 21):  # server-side prepared from the first, same plan, new values
            got = c.execute(SQL.format("%s"), [n], prepare=True).fetchall()
            assert [r[0] for r in got] == eco(range(1, n))
        assert len(provider.requests) == calls + len({label(g) for g in range(11, 21)} - {label(g) for g in range(1, 11)})
        assert c.execute("SELECT %s::int + 1", [2]).fetchone() == (3,)  # plain, PostgreSQL's
        assert c.execute("SELECT version()").fetchone()[0].startswith("PostgreSQL 15")
