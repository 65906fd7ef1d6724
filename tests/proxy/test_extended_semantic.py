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

from tests import fix_wire as fw
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


def sql(param: str, client: str) -> str:
    """The semantic query; each test asks its own criterion (words bamboo or recycled), so none hits another's cache."""
    return f"SELECT id, label, price FROM wares WHERE label MEANS 'bamboo recycled {client}' AND id < {param} ORDER BY id"


def test_psycopg_with_parameters_unnamed_and_prepared(proxy_server: ServerProcess, wares: str, provider: FakeProvider) -> None:
    with psycopg.connect(proxy_server.url, autocommit=True) as c:
        cur = c.execute(sql("%s", "psycopg"), [11])
        rows = cur.fetchall()
        assert [r[0] for r in rows] == eco(range(1, 11))
        assert rows[0] == (2, "recycled paper 2", decimal.Decimal("0.50"))
        assert [d.type_code for d in cur.description] == [23, 25, 1700]  # int4, text, numeric
        assert all(r[2] == decimal.Decimal(r[0]) / 4 for r in rows)
        assert len(provider.requests) == len({label(g) for g in range(1, 11)})
        calls = len(provider.requests)
        for n in (6, 11, 21):  # server-side prepared from the first, same plan, new values
            got = c.execute(sql("%s", "psycopg"), [n], prepare=True).fetchall()
            assert [r[0] for r in got] == eco(range(1, n))
        assert len(provider.requests) == calls + len({label(g) for g in range(11, 21)} - {label(g) for g in range(1, 11)})
        assert c.execute("SELECT %s::int + 1", [2]).fetchone() == (3,)  # plain, PostgreSQL's
        assert c.execute("SELECT version()").fetchone()[0].startswith("PostgreSQL 15")


def test_asyncpg_prepare_describes_without_a_call_and_fetch_runs(proxy_server: ServerProcess, wares: str, provider: FakeProvider) -> None:
    async def main() -> tuple[Any, ...]:
        c = await asyncpg.connect(proxy_server.url)
        try:
            stmt = await c.prepare(sql("$1", "asyncpg"))
            attributes = stmt.get_attributes()
            described = ([a.name for a in attributes], [a.type.name for a in attributes], [p.name for p in stmt.get_parameters()])
            calls_after_prepare = len(provider.requests)
            first = await stmt.fetch(31)
            again = await stmt.fetch(16)  # Bind/Execute of the statement meansql holds
            one = await c.fetchval(f"SELECT count(*) FROM {wares} WHERE label MEANS 'bamboo recycled asyncpg' AND id < $1", 31)
            plain = await c.fetchval("SELECT $1::int + 1", 41)
            return described, calls_after_prepare, first, again, one, plain
        finally:
            await c.close()

    described, calls_after_prepare, first, again, one, plain = asyncio.run(main())
    assert described == (["id", "label", "price"], ["int4", "text", "numeric"], ["int4"])
    assert calls_after_prepare == 0  # Describe never runs the statement
    assert [(r["id"], r["label"], r["price"]) for r in first] == [(g, label(g), decimal.Decimal(g) / 4) for g in eco(range(1, 31))]
    assert [r["id"] for r in again] == eco(range(1, 16))
    assert one == len(eco(range(1, 31)))
    assert plain == 42
    assert len(provider.requests) == len({label(g) for g in range(1, 31)})  # each distinct value judged once


def test_pgjdbc_prepared_statement(proxy_server: ServerProcess, wares: str, provider: FakeProvider, tmp_path: Path) -> None:
    jar = "/usr/share/java/postgresql.jar"
    assert Path(jar).is_file() and shutil.which("javac"), "pgjdbc and Java 17: scripts/install.sh --clients"
    source = Path(__file__).parent.parent / "clients" / "java" / "SemanticPrepared.java"
    subprocess.run(["javac", "-d", str(tmp_path), "-cp", jar, str(source)], check=True, capture_output=True, timeout=120)
    url = f"jdbc:postgresql://127.0.0.1:{proxy_server.port}/postgres"
    limits = [11, 21, 11, 21, 11, 21, 31]  # past pgjdbc's prepareThreshold of 5: a named statement
    out = subprocess.run(
        ["java", "-cp", f"{tmp_path}:{jar}", "SemanticPrepared", url, "postgres", sql("?", "pgjdbc"), *map(str, limits)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = [line.split("\t") for line in out.stdout.splitlines()]
    assert lines[0] == ["type", "int4", "text", "numeric"]
    rows = [cells[1:] for cells in lines if cells[0] == "row"]
    expected = [[str(n), str(g), label(g), f"{decimal.Decimal(g) / 4:.2f}"] for n in limits for g in eco(range(1, n))]
    assert rows == expected
    assert ["plain", "42"] in lines
    assert lines[-1] == ["tx", "25001", "25P02"]  # refused in a transaction, which is then aborted
    assert len(provider.requests) == len({label(g) for g in range(1, 31)})


def test_in_a_transaction_the_extended_path_refuses_and_aborts(proxy_server: ServerProcess, wares: str, provider: FakeProvider) -> None:
    with psycopg.connect(proxy_server.url) as c:  # psycopg opens a transaction
        c.execute("SELECT 1")
        with pytest.raises(psycopg.errors.ActiveSqlTransaction, match="inside a transaction block") as exc:
            c.execute(sql("%s", "transaction"), [5])
        assert "uncommitted rows" in (exc.value.diag.message_detail or "")
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            c.execute("SELECT %s::int", [1])
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):  # as PostgreSQL answers any statement now
            c.execute(sql("%s", "transaction"), [5])
        c.rollback()
        assert c.execute("SELECT %s::int", [2]).fetchone() == (2,)
        c.commit()
        c.autocommit = True
        assert [r[0] for r in c.execute(sql("%s", "transaction"), [5]).fetchall()] == eco(range(1, 5))
    assert len(provider.requests) == len({label(g) for g in range(1, 5)})


def _summary(raw: RawConnection, count: int) -> list[tuple[str, ...]]:
    return [(m.kind, m.fields()["C"]) if m.kind == "E" else (m.kind,) for m in raw.until_ready(count) if m.kind != "N"]


def test_statement_names_do_not_clash(proxy_server: ServerProcess, wares: str, provider: FakeProvider) -> None:
    """A name is PostgreSQL's or meansql's, never both: a second Parse of it fails with 42P05 either way."""
    semantic = sql("$1", "names").encode()
    raw = RawConnection("127.0.0.1", proxy_server.port)
    try:
        raw.login()
        raw.send(fw.parse("SELECT $1::int", "plain1"), fw.sync(), fw.parse(semantic.decode(), "sem1"), fw.describe(b"S", "sem1"), fw.sync())
        got = _summary(raw, 2)
        assert got == [("1",), ("Z",), ("1",), ("t",), ("T",), ("Z",)]
        raw.send(fw.parse(semantic.decode(), "plain1"), fw.sync(), fw.parse("SELECT 1", "sem1"), fw.sync())
        assert _summary(raw, 2) == [("E", "42P05"), ("Z",), ("E", "42P05"), ("Z",)]
        # Each side answers for its own name, in order; closing the semantic one frees the name for PostgreSQL.
        raw.send(
            fw.bind("", "sem1", [b"9"]),
            fw.execute(),
            fw.sync(),
            fw.bind("", "plain1", [b"7"]),
            fw.execute(),
            fw.sync(),
            fw.close(b"S", "sem1"),
            fw.sync(),
            fw.parse("SELECT 'now plain'", "sem1"),
            fw.bind("", "sem1"),
            fw.execute(),
            fw.sync(),
        )
        messages = raw.until_ready(4)
        kinds = [m.kind for m in messages if m.kind != "N"]
        assert kinds == ["2", *["D"] * len(eco(range(1, 9))), "C", "Z", "2", "D", "C", "Z", "3", "Z", "1", "2", "D", "C", "Z"]
        values = [m.body for m in messages if m.kind == "D"]
        assert values[-2].endswith(b"7") and values[-1].endswith(b"now plain")
    finally:
        raw.close()
    assert len(provider.requests) == len({label(g) for g in range(1, 9)})


def test_close_then_parse_in_one_batch_keeps_the_order(proxy_server: ServerProcess, wares: str, provider: FakeProvider) -> None:
    """pgjdbc sends the Close of a statement it dropped with its next statement, before the same Sync."""
    text = sql("$1", "close")
    raw = RawConnection("127.0.0.1", proxy_server.port)
    try:
        raw.login()
        raw.send(fw.parse(text, "a"), fw.sync())
        assert _summary(raw, 1) == [("1",), ("Z",)]
        raw.send(fw.close(b"S", "a"), fw.parse(text, "b"), fw.bind("", "b", [b"5"]), fw.execute(), fw.sync())
        raw.send(fw.close(b"S", "b"), fw.parse("SELECT 2", "a"), fw.bind("", "a"), fw.execute(), fw.sync())
        got = _summary(raw, 2)
    finally:
        raw.close()
    rows = [("D",)] * len(eco(range(1, 5)))
    assert got == [("3",), ("1",), ("2",), *rows, ("C",), ("Z",), ("3",), ("1",), ("2",), ("D",), ("C",), ("Z",)]
    assert len(provider.requests) == len({label(g) for g in range(1, 5)})


def test_close_of_a_plain_statement_then_a_semantic_one_in_one_batch(proxy_server: ServerProcess, wares: str, provider: FakeProvider) -> None:
    """pgjdbc's Close of a dropped plain statement goes ahead of a semantic Parse, before one Sync."""
    raw = RawConnection("127.0.0.1", proxy_server.port)
    try:
        raw.login()
        raw.send(fw.parse("SELECT 1", "p9"), fw.sync())
        assert _summary(raw, 1) == [("1",), ("Z",)]
        raw.send(fw.close(b"S", "p9"), fw.parse(sql("$1", "jdbc close"), ""), fw.bind("", "", [b"5"]), fw.execute(), fw.sync())
        raw.send(fw.bind("", "p9"), fw.sync())  # closed upstream: PostgreSQL says so
        got = _summary(raw, 2)
    finally:
        raw.close()
    rows = [("D",)] * len(eco(range(1, 5)))
    assert got == [("3",), ("1",), ("2",), *rows, ("C",), ("Z",), ("E", "26000"), ("Z",)]
    assert len(provider.requests) == len({label(g) for g in range(1, 5)})
