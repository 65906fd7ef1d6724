"""Proxy mode fixtures: a real PostgreSQL 15 with password users, and `meansql serve --upstream` in front of it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
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
