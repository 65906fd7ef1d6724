"""Proxy mode relays plain SQL to a real PostgreSQL 15: clients see PostgreSQL itself through meansql.

meansql logs in to PostgreSQL with SCRAM-SHA-256 as scram_user (from the
--upstream URL); clients log in to meansql (trust here, SCRAM in the auth test).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest

from server.pgwire import auth, upstream
from tests import fix_wire as wire
from tests.clients.conftest import PostgresServer
from tests.conftest import ServerProcess, server_env, wait_for
from tests.fake_provider import FakeProvider
from tests.proxy.conftest import PG_USERS, pg_url


def _url(server: ServerProcess, user: str = "postgres", password: str | None = None) -> str:
    auth_part = f"{user}:{password}" if password else user
    return f"postgresql://{auth_part}@127.0.0.1:{server.port}/postgres"


@pytest.fixture()
def conn(proxy_server: ServerProcess) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(_url(proxy_server), autocommit=True) as c:
        yield c


@pytest.fixture()
def table(request: pytest.FixtureRequest, conn: psycopg.Connection[Any]) -> str:
    name = "p_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, name text)")
    return name


def test_clients_see_postgres_itself(conn: psycopg.Connection[Any]) -> None:
    version, user = conn.execute("SELECT version(), current_user").fetchone()  # type: ignore[misc]
    assert version.startswith("PostgreSQL 15.")
    assert user == "scram_user"  # the upstream URL's user
    assert conn.info.parameter_status("server_version").startswith("15.")  # type: ignore[union-attr]
    assert conn.info.parameter_status("integer_datetimes") == "on"
    assert conn.info.backend_pid != conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]


def test_simple_extended_prepared_and_executemany(conn: psycopg.Connection[Any], table: str) -> None:
    with psycopg.ClientCursor(conn) as cur:  # the simple query protocol, two statements in one message
        cur.execute(f"INSERT INTO {table} VALUES (1, 'one'); INSERT INTO {table} VALUES (2, 'two')")
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} VALUES (%s, %s)", [(3, "three"), (4, "four"), (5, None)])
    for _ in range(3):
        assert conn.execute(f"SELECT name FROM {table} WHERE id = %s", [4], prepare=True).fetchone() == ("four",)
    assert conn.execute(f"SELECT count(*), count(name) FROM {table}").fetchone() == (5, 4)
    names = conn.execute("SELECT name FROM pg_prepared_statements").fetchall()
    assert names  # the prepared statement lives on the upstream


def test_a_streamed_result_of_short_long_and_huge_rows_arrives_whole(
    proxy_server: ServerProcess, upstream_pg: PostgresServer
) -> None:
    """Runs of short rows (hopped over in one match), rows too long for that, NULLs, and rows larger than the
    relay's read buffer (which grows for them and shrinks after), in both result formats, as PostgreSQL sends them."""
    sql = (
        "SELECT g, CASE WHEN g % 1000 = 7 THEN repeat(md5(g::text), 2 + g % 90) WHEN g % 5000 = 11 THEN repeat('x', 300000 * (1 + g % 3)) "
        "WHEN g % 7 = 0 THEN NULL ELSE g::text END FROM generate_series(1, 30000) g"
    )
    with psycopg.connect(pg_url(upstream_pg), autocommit=True) as direct:
        expected = direct.execute(sql).fetchall()
    with psycopg.connect(_url(proxy_server), autocommit=True) as c:
        assert c.execute(sql).fetchall() == expected
        assert c.cursor(binary=True).execute(sql).fetchall() == expected
        assert c.execute("SELECT 1").fetchone() == (1,)  # the session goes on after the huge rows
    assert sum(len(v) for _, v in expected if v and len(v) > 262144) > 262144 * 6


def test_transactions_commit_rollback_and_25P02(proxy_server: ServerProcess, table: str) -> None:
    with psycopg.connect(_url(proxy_server)) as c:
        c.execute(f"INSERT INTO {table} VALUES (1, 'kept')")
        c.commit()
        c.execute(f"INSERT INTO {table} VALUES (2, 'dropped')")
        c.rollback()
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("SELECT 1 / 0")
        assert c.info.transaction_status.name == "INERROR"
        with pytest.raises(psycopg.errors.InFailedSqlTransaction) as exc:
            c.execute("SELECT 1")
        assert exc.value.sqlstate == "25P02"
        c.rollback()
        assert c.execute(f"SELECT id FROM {table} ORDER BY id").fetchall() == [(1,)]


def test_errors_carry_sqlstate_and_position(conn: psycopg.Connection[Any], table: str) -> None:
    with pytest.raises(psycopg.errors.UndefinedTable) as e1:
        conn.execute("SELECT * FROM no_such_table")
    assert e1.value.sqlstate == "42P01" and e1.value.diag.statement_position == "15"
    with pytest.raises(psycopg.errors.SyntaxError) as e2:
        conn.execute("SELEC 1")
    assert e2.value.sqlstate == "42601" and e2.value.diag.statement_position == "1"
    conn.execute(f"INSERT INTO {table} VALUES (1, 'a')")
    with pytest.raises(psycopg.errors.UniqueViolation) as e3:
        conn.execute(f"INSERT INTO {table} VALUES (1, 'b')")
    assert e3.value.sqlstate == "23505" and e3.value.diag.constraint_name == f"{table}_pkey"


def test_copy_from_stdin_and_to_stdout(conn: psycopg.Connection[Any], table: str) -> None:
    with conn.cursor() as cur:
        with cur.copy(f"COPY {table} FROM STDIN") as copy:
            for i in range(1000):
                copy.write_row((i, f"row {i}"))
        assert conn.execute(f"SELECT count(*), max(name) FROM {table}").fetchone() == (1000, "row 999")
        out = bytearray()
        with cur.copy(f"COPY (SELECT * FROM {table} WHERE id < 3 ORDER BY id) TO STDOUT WITH (FORMAT csv)") as copy:
            for block in copy:
                out += block
    assert out.decode() == "0,row 0\n1,row 1\n2,row 2\n"


def test_psql_copy_and_describe(proxy_server: ServerProcess, table: str, tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    data.write_text("7,seven\n8,eight\n")
    result = subprocess.run(
        [
            "psql",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            _url(proxy_server),
            "-c",
            f"\\copy {table} FROM '{data}' CSV",
            "-c",
            f"\\d {table}",
            "-c",
            f"SELECT name FROM {table} ORDER BY id",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "COPY 2" in result.stdout
    assert f'Table "public.{table}"' in result.stdout
    assert f'"{table}_pkey" PRIMARY KEY, btree (id)' in result.stdout
    assert " seven\n eight\n" in result.stdout


def test_listen_notify_across_connections(proxy_server: ServerProcess) -> None:
    with psycopg.connect(_url(proxy_server), autocommit=True) as listener, psycopg.connect(_url(proxy_server), autocommit=True) as sender:
        listener.execute("LISTEN proxy_events")
        sender.execute("NOTIFY proxy_events, 'hello'")
        sender.execute("SELECT pg_notify('proxy_events', 'again')")
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=5, stop_after=2)]
    assert got == [("proxy_events", "hello"), ("proxy_events", "again")]


def test_asyncpg_prepared_binary_types(proxy_server: ServerProcess) -> None:
    values = (
        [1, None, 3],
        decimal.Decimal("-1234.500"),
        dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        json.dumps({"a": [1, 2]}),
    )

    async def main() -> Any:
        c = await asyncpg.connect(host="127.0.0.1", port=proxy_server.port, user="postgres", database="postgres")
        try:
            stmt = await c.prepare("SELECT $1::int[], $2::numeric, $3::timestamptz, $4::uuid, $5::jsonb")
            rows = [await stmt.fetchrow(*values) for _ in range(3)]
            types = [a.type.name for a in stmt.get_attributes()]
            return rows, types
        finally:
            await c.close()

    rows, types = asyncio.run(asyncio.wait_for(main(), 30))
    assert types == ["int4[]", "numeric", "timestamptz", "uuid", "jsonb"]
    for row in rows:
        assert tuple(row) == (*values[:4], '{"a": [1, 2]}')


def test_cancel_reaches_the_upstream_backend(proxy_server: ServerProcess) -> None:
    with psycopg.connect(_url(proxy_server), autocommit=True) as c:
        timer = threading.Timer(0.3, c.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as exc:
            c.execute("SELECT pg_sleep(10)")
        elapsed = time.monotonic() - started
        timer.join()
        assert exc.value.sqlstate == "57014"
        assert elapsed < 1.3  # cancelled 0.3 s in, answered within 1 s
        assert c.execute("SELECT 1").fetchone() == (1,)
    # A wrong key cancels nothing.
    with psycopg.connect(_url(proxy_server), autocommit=True) as c:
        with psycopg.connect(_url(proxy_server), autocommit=True) as other:
            timer = threading.Timer(0.2, other.cancel)  # other is idle: its cancel must not reach c
            timer.start()
            assert c.execute("SELECT pg_sleep(0.6), 1").fetchone() == ("", 1)
            timer.join()


MEANS = "SELECT id FROM (VALUES (1, 'eco bottle')) t(id, d) WHERE d MEANS 'eco-friendly'"


def test_semantic_statement_runs_in_the_simple_and_the_extended_protocol(conn: psycopg.Connection[Any]) -> None:
    with psycopg.ClientCursor(conn) as cur:  # simple query: meansql runs it
        assert cur.execute(MEANS).fetchall() == [(1,)]
        assert cur.execute("SELECT 1").fetchone() == (1,)
    assert conn.execute(MEANS + " AND id = %s", [1]).fetchall() == [(1,)]  # extended protocol, unnamed and prepared
    assert conn.execute(MEANS, prepare=True).fetchall() == [(1,)]
    assert conn.execute("SELECT %s::int", [2]).fetchone() == (2,)
    # A word in a string or a column named means is plain SQL.
    assert conn.execute("SELECT 'x MEANS y' AS means").fetchone() == ("x MEANS y",)


def test_semantic_statement_in_a_pipeline_keeps_the_order(conn: psycopg.Connection[Any]) -> None:
    with conn.pipeline() as p:
        c1 = conn.execute("SELECT 1")
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="in a Sync of its own"):
            conn.execute(MEANS)
            p.sync()
        c3 = conn.execute("SELECT 3")
    assert c1.fetchone() == (1,) and c3.fetchone() == (3,)


def test_semantic_statement_in_a_transaction_aborts_it(proxy_server: ServerProcess) -> None:
    with psycopg.connect(_url(proxy_server)) as c:
        c.execute("SELECT 1")
        with pytest.raises(psycopg.errors.ActiveSqlTransaction):
            c.execute(MEANS)
        assert c.info.transaction_status.name == "INERROR"  # as after any error in a transaction
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            c.execute("SELECT 1")
        c.rollback()
        assert c.execute("SELECT 2").fetchone() == (2,)


def test_pipelined_simple_queries_around_a_semantic_one_keep_their_order(proxy_server: ServerProcess) -> None:
    """Sent in one write: meansql answers the MEANS query only after PostgreSQL has answered the one before."""
    raw = wire.RawConnection("127.0.0.1", proxy_server.port)
    try:
        raw.login()
        raw.send(
            wire.query("SELECT pg_sleep(0.3), 1"),
            wire.query(MEANS),
            wire.query("SELECT 3"),
            wire.query("BEGIN"),
            wire.query(MEANS),
            wire.query("ROLLBACK"),
            wire.query("SELECT 'x' MEANS 'x'; SELECT 1"),
        )
        got = [(m.kind, m.fields().get("C", "")) if m.kind == "E" else (m.kind,) for m in raw.until_ready(7) if m.kind != "N"]
    finally:
        raw.close()
    rows = [("T",), ("D",), ("C",), ("Z",)]
    assert got == [*rows, *rows, *rows, ("C",), ("Z",), ("E", "25001"), ("Z",), ("C",), ("Z",), ("E", "0A000"), ("Z",)]


@pytest.mark.parametrize("user", [u for u, *_ in PG_USERS])
def test_upstream_login_methods(upstream_pg: PostgresServer, user: str) -> None:
    """meansql logs in to PostgreSQL with SCRAM-SHA-256, md5 and a cleartext password."""
    target = upstream.Target.parse(pg_url(upstream_pg, user))
    up = upstream.connect(target, {"application_name": "login-check"})
    try:
        assert up.pid > 0 and up.status == b"I"
        assert any(b"application_name\x00login-check\x00" in m for m in up.parameters)
    finally:
        up.sock.close()
    with pytest.raises(upstream.UpstreamError) as exc:
        upstream.connect(target, {}, password="wrong")
    assert exc.value.sqlstate == "28P01"
    assert f'password authentication failed for user "{user}"' in exc.value.message


def test_scram_to_meansql_and_scram_to_postgres(upstream_pg: PostgresServer, proxy_provider: FakeProvider, tmp_path: Path) -> None:
    users = json.dumps({"alice": str(auth.scram_verifier("alice pw"))})
    server = ServerProcess(tmp_path / "m.duckdb", server_env(proxy_provider, MEANSQL_USERS=users), ["--upstream", pg_url(upstream_pg)]).start()
    try:
        with psycopg.connect(_url(server, "alice", "alice%20pw"), autocommit=True) as c:
            assert c.execute("SELECT current_user").fetchone() == ("scram_user",)
        with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "alice"'):
            psycopg.connect(_url(server, "alice", "nope"))
    finally:
        server.stop()


def test_passthrough_logs_in_as_the_client(upstream_pg: PostgresServer, proxy_provider: FakeProvider, tmp_path: Path) -> None:
    url = f"postgresql://127.0.0.1:{upstream_pg.port}/postgres"
    server = ServerProcess(tmp_path / "m.duckdb", server_env(proxy_provider, MEANSQL_UPSTREAM_AUTH="passthrough"), ["--upstream", url]).start()
    try:
        with psycopg.connect(_url(server, "md5_user", "md5%20secret"), autocommit=True) as c:
            assert c.execute("SELECT current_user").fetchone() == ("md5_user",)
            # The scanner would read with meansql's credentials, not the client's: refused, with the reason.
            with psycopg.ClientCursor(c) as cur, pytest.raises(psycopg.errors.FeatureNotSupported, match="passthrough"):
                cur.execute(MEANS)
            assert c.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "scram_user"'):
            psycopg.connect(_url(server, "scram_user", "wrong"))
    finally:
        server.stop()


def test_upstream_down_is_a_clear_fatal(proxy_provider: FakeProvider, tmp_path: Path) -> None:
    from tests.clients.conftest import _free_port

    server = ServerProcess(
        tmp_path / "m.duckdb",
        server_env(proxy_provider),
        ["--upstream", f"postgresql://u:p@127.0.0.1:{_free_port()}/db", "--log-format", "json"],
    ).start()
    try:
        with pytest.raises(psycopg.OperationalError, match="could not connect to the upstream server"):
            psycopg.connect(_url(server))
    finally:
        output = server.stop()
    # It started all the same; semantic statements are off, said without the URL's password.
    assert "semantic statements are off in proxy mode: the upstream could not be attached" in output
    assert "u:p@" not in output


def test_a_client_that_vanishes_mid_query_stops_it_upstream(proxy_server: ServerProcess, upstream_pg: PostgresServer) -> None:
    query = "SELECT pg_sleep(30) AS vanishing_client"
    raw = wire.RawConnection("127.0.0.1", proxy_server.port)
    raw.login()
    raw.send(wire.query(query))
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{upstream_pg.port}/postgres", autocommit=True) as pg:
        running = "SELECT count(*) FROM pg_stat_activity WHERE query = %s AND state = 'active'"
        wait_for(lambda: pg.execute(running, [query]).fetchone() == (1,), 10, "the query to run upstream")
        raw.close()  # no Terminate: the socket just closes
        wait_for(lambda: pg.execute(running, [query]).fetchone() == (0,), 3, "the upstream query to stop")


def test_refused_parse_in_a_raw_pipeline_keeps_postgres_order(proxy_server: ServerProcess) -> None:
    raw = wire.RawConnection("127.0.0.1", proxy_server.port)
    try:
        raw.login()
        raw.send(
            wire.parse("SELECT 1"),
            wire.bind(),
            wire.execute(),
            wire.parse(MEANS),
            wire.bind(),
            wire.describe(b"P"),
            wire.execute(),
            wire.sync(),
            wire.parse("SELECT 2"),
            wire.bind(),
            wire.execute(),
            wire.sync(),
        )
        got = [(m.kind, m.fields().get("C", "")) if m.kind == "E" else (m.kind,) for m in raw.until_ready(2)]
    finally:
        raw.close()
    assert got == [("1",), ("2",), ("D",), ("C",), ("E", "0A000"), ("Z",), ("1",), ("2",), ("D",), ("C",), ("Z",)]


def test_a_refused_upstream_login_says_it_was_meansqls(upstream_pg: PostgresServer, proxy_provider: FakeProvider, tmp_path: Path) -> None:
    url = f"postgresql://scram_user:wrong@127.0.0.1:{upstream_pg.port}/postgres"
    server = ServerProcess(tmp_path / "m.duckdb", server_env(proxy_provider), ["--upstream", url]).start()
    try:
        with pytest.raises(
            psycopg.OperationalError, match='the upstream server refused meansql\'s login: password authentication failed for user "scram_user"'
        ):
            psycopg.connect(_url(server))
    finally:
        server.stop()
