"""The client matrix: every check runs against meansql and against a real PostgreSQL.

`target` is parametrized over both servers, so a check states Postgres
behaviour and meansql must match it. The PostgreSQL server is started by the
tests (initdb into a temporary directory, trust authentication on loopback).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ServerProcess, server_env
from tests.fake_provider import FakeProvider


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (scripts/install.sh installs it)")
    return candidates[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Target:
    """A server the client checks connect to."""

    name: str  # "meansql", "postgres" or "proxy" (meansql relaying to PostgreSQL: PostgreSQL's behaviour)
    host: str
    port: int
    dbname: str
    user: str

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    def connect(self, **kwargs: object) -> psycopg.Connection[object]:
        return psycopg.connect(self.url, autocommit=True, **kwargs)  # type: ignore[arg-type]


class PostgresServer:
    """A throwaway PostgreSQL cluster; run as the `postgres` user when we are root."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="meansql-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresServer:
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--locale=C")
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.dir / "log"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres").close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return self

    def stop(self) -> None:
        try:
            self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    pg = PostgresServer().start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def client_provider() -> Iterator[FakeProvider]:
    p = FakeProvider().start()
    yield p
    p.stop()


@pytest.fixture(scope="session")
def meansql_server(client_provider: FakeProvider) -> Iterator[ServerProcess]:
    """One meansql server shared by the client matrix (tests use their own table names)."""
    tmp = Path(tempfile.mkdtemp(prefix="meansql-clients-"))
    server = ServerProcess(tmp / "clients.duckdb", server_env(client_provider), []).start()
    yield server
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def proxy_in_front(postgres: PostgresServer, client_provider: FakeProvider) -> Iterator[ServerProcess]:
    """meansql in proxy mode in front of the same PostgreSQL (plain SQL relayed; tests use their own tables).

    Its store stays in its DuckDB file: a store in PostgreSQL would add the meansql schema to the database
    the postgres target checks (tests/proxy/test_store.py tests that store on a PostgreSQL of its own).
    """
    tmp = Path(tempfile.mkdtemp(prefix="meansql-clients-proxy-"))
    server = ServerProcess(tmp / "proxy.duckdb", server_env(client_provider),
                           ["--upstream", f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres",
                            "--store-url", "duckdb"]).start()
    yield server
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(params=["meansql", "postgres", "proxy"])
def target(request: pytest.FixtureRequest) -> Target:
    """Each check runs three times: against meansql, PostgreSQL, and meansql's proxy mode in front of PostgreSQL."""
    if request.param == "postgres":
        pg: PostgresServer = request.getfixturevalue("postgres")
        return Target("postgres", "127.0.0.1", pg.port, "postgres", "postgres")
    if request.param == "proxy":
        px: ServerProcess = request.getfixturevalue("proxy_in_front")
        return Target("proxy", "127.0.0.1", px.port, "postgres", "postgres")
    ms: ServerProcess = request.getfixturevalue("meansql_server")
    return Target("meansql", "127.0.0.1", ms.port, "default", "postgres")


@pytest.fixture()
def table_name(request: pytest.FixtureRequest) -> str:
    """A table name unique to the test (the two targets are separate databases)."""
    return "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
