"""Proxy mode fixtures: a real PostgreSQL 15 with password users, and `meansql serve --upstream` in front of it."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.clients.conftest import PostgresServer
from tests.conftest import ServerProcess, server_env
from tests.fake_provider import FakeProvider

# (user, password, pg_hba method, password_encryption)
PG_USERS = [
    ("scram_user", "scram secret", "scram-sha-256", "scram-sha-256"),
    ("md5_user", "md5 secret", "md5", "md5"),
    ("clear_user", "clear secret", "password", "scram-sha-256"),
]


@pytest.fixture(scope="session")
def upstream_pg() -> Iterator[PostgresServer]:
    """PostgreSQL with one user per password method (trust stays for `postgres`)."""
    pg = PostgresServer().start()
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/postgres", autocommit=True) as conn:
        for user, password, _, encryption in PG_USERS:
            conn.execute(f"SET password_encryption = '{encryption}'")
            conn.execute(f"CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{password}'")
    hba = pg.data / "pg_hba.conf"
    lines = "".join(f"host all {user} 127.0.0.1/32 {method}\n" for user, _, method, _ in PG_USERS)
    hba.write_text(lines + hba.read_text())
    pg._run(shutil.which("pg_ctl") or str(Path(next(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")))), "-D", str(pg.data), "reload")
    yield pg
    pg.stop()


WORDS = ["bamboo brush", "plastic fork", "bamboo mat", "steel pan"]


@pytest.fixture()
def provider(proxy_provider: FakeProvider) -> FakeProvider:
    """The proxies' stand-in provider, its counters and behaviour reset."""
    proxy_provider.reset()
    return proxy_provider


@pytest.fixture()
def items(upstream_pg: PostgresServer) -> Iterator[tuple[str, str]]:
    """A table in the upstream of WORDS tagged so that no other test judged them: (table, the tag)."""
    tag = uuid.uuid4().hex[:8]
    table = f"items_{tag}"
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{upstream_pg.port}/postgres", autocommit=True) as pg:
        pg.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, label text)")
        for i, word in enumerate(WORDS, 1):
            pg.execute(f"INSERT INTO {table} VALUES (%s, %s)", [i, f"{word} {tag}"])
    yield table, tag
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{upstream_pg.port}/postgres", autocommit=True) as pg:
        pg.execute(f"DROP TABLE {table}")


def pg_url(pg: PostgresServer, user: str = "scram_user") -> str:
    password = next((p for u, p, _, _ in PG_USERS if u == user), None)
    auth = f"{user}:{password.replace(' ', '%20')}" if password else user
    return f"postgresql://{auth}@127.0.0.1:{pg.port}/postgres"


@pytest.fixture(scope="session")
def proxy_provider() -> Iterator[FakeProvider]:
    p = FakeProvider().start()
    yield p
    p.stop()


@pytest.fixture(scope="session")
def proxy_server(upstream_pg: PostgresServer, proxy_provider: FakeProvider) -> Iterator[ServerProcess]:
    """meansql in proxy mode, logging in to PostgreSQL with SCRAM as scram_user; clients are trusted."""
    tmp = Path(tempfile.mkdtemp(prefix="meansql-proxy-"))
    server = ServerProcess(tmp / "proxy.duckdb", server_env(proxy_provider), ["--upstream", pg_url(upstream_pg)]).start()
    yield server
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture()
def start_proxy(upstream_pg: PostgresServer, provider: FakeProvider) -> Iterator[Callable[..., ServerProcess]]:
    """Start meansql processes in front of the test PostgreSQL, each with its own DuckDB file."""
    tmp = Path(tempfile.mkdtemp(prefix="meansql-store-"))
    started: list[ServerProcess] = []

    def start(**env: str) -> ServerProcess:
        server = ServerProcess(tmp / f"p{len(started)}.duckdb", server_env(provider, **env), ["--upstream", pg_url(upstream_pg)])
        started.append(server.start())
        return server

    yield start
    for s in started:
        s.stop()
    shutil.rmtree(tmp, ignore_errors=True)
