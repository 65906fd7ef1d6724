"""Semantic statements in proxy mode: MEANS over the upstream's tables, judged by meansql, read through DuckDB."""

from __future__ import annotations

import asyncio
import decimal
import threading
from collections.abc import Iterator
from typing import Any

import asyncpg
import psycopg
import pytest

from tests.clients.conftest import PostgresServer
from tests.conftest import ServerProcess, collect_notices
from tests.fake_provider import FakeProvider

ROWS = 2_000  # 1% of them pass `id % 100 = 7`
WORDS = ["bamboo brush", "plastic fork", "steel bottle", "recycled paper", "silk scarf"]


def label(g: int) -> str:
    return f"{WORDS[(g // 100) % 5]} {g % 3}"


@pytest.fixture(scope="module")
def goods(upstream_pg: PostgresServer) -> Iterator[str]:
    """A table in the upstream PostgreSQL, made there directly."""
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{upstream_pg.port}/postgres", autocommit=True) as pg:
        pg.execute("DROP TABLE IF EXISTS goods")
        pg.execute(
            "CREATE TABLE goods (id int PRIMARY KEY, label text NOT NULL, price numeric(8,2), "
            "added timestamptz NOT NULL DEFAULT '2026-01-02 03:04:05+00')"
        )
        pg.execute(
            f"INSERT INTO goods (id, label, price) SELECT g, (ARRAY{WORDS!r})[1 + (g / 100) % 5] || ' ' || (g % 3), "
            f"g * 1.25 FROM generate_series(1, {ROWS}) g"
        )
    yield "goods"


@pytest.fixture()
def conn(proxy_server: ServerProcess) -> Iterator[psycopg.Connection[Any]]:
    with proxy_server.connect() as c:
        yield c


def test_means_over_an_upstream_table_returns_postgres_rows_and_types(conn: psycopg.Connection[Any], goods: str, provider: FakeProvider) -> None:
    # id BETWEEN ... is pushed into PostgreSQL's scan: 2% of the rows reach meansql.
    cur = conn.execute(f"SELECT id, label, price, added FROM {goods} WHERE id BETWEEN 381 AND 420 AND label MEANS 'eco-friendly' ORDER BY id")
    rows = cur.fetchall()
    kept = range(381, 421)
    expected = [g for g in kept if "bamboo" in label(g) or "recycled" in label(g)]
    assert expected and [r[0] for r in rows] == expected
    assert all(isinstance(r[2], decimal.Decimal) and r[2] == decimal.Decimal(r[0]) * decimal.Decimal("1.25") for r in rows)
    assert str(rows[0][3]) == "2026-01-02 03:04:05+00:00"
    assert [d.type_code for d in cur.description] == [23, 25, 1700, 1184]  # int4, text, numeric, timestamptz
    # Only the values of the kept rows were judged, each distinct one once.
    distinct = {label(g) for g in kept}
    assert len(distinct) == 6 < len({label(g) for g in range(1, ROWS + 1)}) == 15
    assert len(provider.requests) == len(distinct)


def test_the_filter_and_projection_are_pushed_to_postgres(conn: psycopg.Connection[Any], goods: str, upstream_pg: PostgresServer) -> None:
    """PostgreSQL's statement log shows what the scan asked for: the plain predicate and the used columns only."""
    admin = f"postgresql://postgres@127.0.0.1:{upstream_pg.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as pg:
        pg.execute("ALTER SYSTEM SET log_statement = 'all'")
        pg.execute("SELECT pg_reload_conf()")
    try:
        log_file = upstream_pg.dir / "log"
        before = log_file.stat().st_size
        conn.execute(f"SELECT id FROM {goods} WHERE id < 50 AND label MEANS 'eco-friendly'").fetchall()
        with log_file.open(errors="replace") as f:
            f.seek(before)
            scans = [line for line in f if "COPY (SELECT" in line and '"goods"' in line]
    finally:
        with psycopg.connect(admin, autocommit=True) as pg:
            pg.execute("ALTER SYSTEM RESET log_statement")
            pg.execute("SELECT pg_reload_conf()")
    assert scans
    assert all("\"id\" < '50'" in line and '"price"' not in line and '"added"' not in line for line in scans), scans


def test_a_repeated_query_is_answered_from_the_cache(conn: psycopg.Connection[Any], goods: str, provider: FakeProvider) -> None:
    sql = f"SELECT count(*) FROM {goods} WHERE id % 100 = 11 AND label MEANS 'luxury'"
    first = conn.execute(sql).fetchone()
    calls = len(provider.requests)
    assert calls > 0
    assert conn.execute(sql).fetchone() == first == (sum(1 for g in range(11, ROWS + 1, 100) if "silk" in label(g)),)
    assert len(provider.requests) == calls  # the second run made no model call


def test_notices_reach_the_client(conn: psycopg.Connection[Any], goods: str, provider: FakeProvider) -> None:
    notices = collect_notices(conn)
    conn.execute(f"SELECT id FROM {goods} WHERE id % 100 = 13 AND label MEANS 'eco-friendly'").fetchall()
    assert notices, "the executor's NOTICEs are relayed"


def test_in_a_transaction_a_semantic_statement_is_refused_and_the_session_goes_on(
    proxy_server: ServerProcess, goods: str, provider: FakeProvider
) -> None:
    with psycopg.connect(proxy_server.url) as conn:  # psycopg opens a transaction
        conn.execute(f"SELECT count(*) FROM {goods}")
        with pytest.raises(psycopg.errors.ActiveSqlTransaction, match="inside a transaction block") as exc:
            conn.execute(f"SELECT id FROM {goods} WHERE label MEANS 'eco-friendly'")
        assert "uncommitted rows" in (exc.value.diag.message_detail or "")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR  # as PostgreSQL fails it
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)
        conn.commit()
        conn.autocommit = True
        rows = conn.execute(f"SELECT id FROM {goods} WHERE id = 10 AND label MEANS 'eco-friendly'").fetchall()
        assert rows == [(10,)]  # label(10) is a bamboo brush
    assert len(provider.requests) <= 1


def test_plain_sql_is_still_postgres(conn: psycopg.Connection[Any], goods: str) -> None:
    assert conn.execute("SELECT version()").fetchone()[0].startswith("PostgreSQL 15")
    assert conn.execute(f"SELECT count(*) FROM {goods}").fetchone() == (ROWS,)


def test_a_table_made_through_the_proxy_is_read_by_the_next_semantic_statement(conn: psycopg.Connection[Any]) -> None:
    conn.execute("DROP TABLE IF EXISTS fresh_notes")
    conn.execute("CREATE TABLE fresh_notes (n int)")
    conn.execute("INSERT INTO fresh_notes VALUES (1)")
    assert conn.execute("SELECT n FROM fresh_notes WHERE 'bamboo' MEANS 'eco-friendly'").fetchall() == [(1,)]
    conn.execute("ALTER TABLE fresh_notes ADD COLUMN note text")
    conn.execute("UPDATE fresh_notes SET note = 'organic cotton'")
    assert conn.execute("SELECT n, note FROM fresh_notes WHERE note MEANS 'eco-friendly'").fetchall() == [(1, "organic cotton")]


def test_scanner_functions_are_refused(conn: psycopg.Connection[Any], upstream_pg: PostgresServer) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{upstream_pg.port}/postgres"
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="postgres_scan"):
        conn.execute(f"SELECT * FROM postgres_scan('{dsn}', 'public', 'goods') WHERE label MEANS 'x'")
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_asyncpg_simple_query(proxy_server: ServerProcess, goods: str, provider: FakeProvider) -> None:
    async def main() -> list[Any]:
        c = await asyncpg.connect(proxy_server.url)
        try:
            # asyncpg's fetch is the extended protocol; a simple query returns no rows, so COPY-free check:
            await c.execute(f"SELECT id FROM {goods} WHERE id = 30 AND label MEANS 'eco-friendly'")
            return [await c.fetchval("SELECT 42")]
        finally:
            await c.close()

    assert asyncio.run(main()) == [42]


def test_concurrent_sessions_each_get_their_own_rows(proxy_server: ServerProcess, goods: str) -> None:
    """Several clients at once: each semantic query reads the upstream (its definitions read again) on its own."""
    results: dict[int, list[int]] = {}
    failures: list[BaseException] = []

    def client(k: int) -> None:
        try:
            with proxy_server.connect() as c:
                for r in range(3):
                    rest = 20 + 4 * k + r
                    got = c.execute(f"SELECT id FROM {goods} WHERE id % 100 = {rest} AND label MEANS 'eco-friendly' ORDER BY id")
                    results[rest] = [row[0] for row in got.fetchall()]
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures
    assert len(results) == 12
    for rest, ids in results.items():
        assert ids == [g for g in range(rest, ROWS + 1, 100) if "bamboo" in label(g) or "recycled" in label(g)]


def test_cancel_stops_a_semantic_query(proxy_server: ServerProcess, goods: str, provider: FakeProvider) -> None:
    provider.behaviour.delay = 2.0
    with proxy_server.connect() as c:
        timer = threading.Timer(0.8, c.cancel)
        timer.start()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                c.execute(f"SELECT id FROM {goods} WHERE id % 100 = 50 AND label MEANS 'a fresh criterion'").fetchall()
        finally:
            timer.join()
            provider.behaviour.delay = 0.0
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_values_are_written_in_the_clients_timezone(conn: psycopg.Connection[Any], goods: str) -> None:
    conn.execute("SET TimeZone = 'Asia/Tokyo'")  # relayed to PostgreSQL, followed by meansql's session
    row = conn.execute(f"SELECT added, added::text FROM {goods} WHERE id = 10 AND label MEANS 'eco-friendly'").fetchone()
    assert row[0].isoformat() == "2026-01-02T12:04:05+09:00"
    assert row[1] == "2026-01-02 12:04:05+09"  # written by meansql's session in the client's time zone
    conn.execute("RESET TimeZone")


def test_psycopg_without_auto_prepare_repeats_a_semantic_query(proxy_server: ServerProcess, goods: str) -> None:
    with psycopg.connect(proxy_server.url, autocommit=True, prepare_threshold=None) as c:
        sql = f"SELECT id FROM {goods} WHERE id BETWEEN 1 AND 5 AND label MEANS 'eco-friendly'"
        assert all(c.execute(sql).fetchall() == [(1,), (2,), (3,), (4,), (5,)] for _ in range(8))
