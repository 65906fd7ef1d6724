"""TLS from meansql to the upstream PostgreSQL: sslmode require and verify-full, and a refusal without TLS."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from server.pgwire import upstream
from tests.clients.conftest import PostgresServer
from tests.conftest import ServerProcess, server_env, wait_for
from tests.fake_provider import FakeProvider
from tests.proxy.conftest import pg_url


@pytest.fixture(scope="module")
def tls_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresServer, Path]]:
    """PostgreSQL accepting scram_user over TLS only (certificate for localhost)."""
    d = tmp_path_factory.mktemp("upstream-certs")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(d / "server.key"),
            "-out",
            str(d / "server.crt"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    pg = PostgresServer().start()
    for name in ("server.crt", "server.key"):
        shutil.copy(d / name, pg.data / name)
        os.chmod(pg.data / name, 0o600)
        if pg.as_root:
            shutil.chown(pg.data / name, "postgres", "postgres")
    admin = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE ROLE scram_user LOGIN SUPERUSER PASSWORD 'scram secret'")
        conn.execute("ALTER SYSTEM SET ssl = on")
    hba = pg.data / "pg_hba.conf"
    hba.write_text("hostssl all scram_user 127.0.0.1/32 scram-sha-256\nhostnossl all scram_user 127.0.0.1/32 reject\n" + hba.read_text())
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")

    def ssl_on() -> bool:
        with psycopg.connect(admin) as conn:
            return conn.execute("SHOW ssl").fetchone() == ("on",)

    wait_for(ssl_on, what="PostgreSQL to reload with ssl = on")
    yield pg, d / "server.crt"
    pg.stop()


@pytest.mark.parametrize("mode", ["require", "verify-full"])
def test_upstream_login_over_tls(tls_pg: tuple[PostgresServer, Path], mode: str) -> None:
    pg, cert = tls_pg
    url = f"postgresql://scram_user:scram%20secret@localhost:{pg.port}/postgres?sslmode={mode}&sslrootcert={cert}"
    up = upstream.connect(upstream.Target.parse(url), {})
    try:
        assert up.status == b"I"
    finally:
        up.sock.close()


def test_verify_full_refuses_an_unknown_certificate(tls_pg: tuple[PostgresServer, Path]) -> None:
    pg, _ = tls_pg
    url = f"postgresql://scram_user:scram%20secret@localhost:{pg.port}/postgres?sslmode=verify-full"
    with pytest.raises(upstream.UpstreamError, match="TLS to the upstream server failed") as exc:
        upstream.connect(upstream.Target.parse(url), {})
    assert exc.value.sqlstate == "08001"


def test_require_without_tls_upstream_is_refused(upstream_pg: PostgresServer) -> None:
    with pytest.raises(upstream.UpstreamError, match="does not support SSL, but sslmode=require"):
        upstream.connect(upstream.Target.parse(pg_url(upstream_pg) + "?sslmode=require"), {})


def test_proxy_over_tls_relays_queries_and_notifications(
    tls_pg: tuple[PostgresServer, Path], proxy_provider: FakeProvider, tmp_path: Path
) -> None:
    pg, cert = tls_pg
    url = f"postgresql://scram_user:scram%20secret@localhost:{pg.port}/postgres?sslmode=verify-full&sslrootcert={cert}"
    server = ServerProcess(tmp_path / "m.duckdb", server_env(proxy_provider), ["--upstream", url]).start()
    client = f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    try:
        with psycopg.connect(client, autocommit=True) as a, psycopg.connect(client, autocommit=True) as b:
            assert a.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
            a.execute("LISTEN tls_events")
            for i in range(20):
                got = b.execute("SELECT i, md5(i::text) FROM generate_series(1, 20000) i").fetchall()
                assert len(got) == 20000 and got[-1][0] == 20000
                b.execute("SELECT pg_notify('tls_events', %s)", [str(i)])
            payloads = [n.payload for n in a.notifies(timeout=5, stop_after=20)]
        assert payloads == [str(i) for i in range(20)]
    finally:
        server.stop()


def test_tls_on_both_sides_with_results_notifications_and_a_semantic_statement(
    tls_pg: tuple[PostgresServer, Path], proxy_provider: FakeProvider, tmp_path: Path
) -> None:
    """Each TLS socket is read on one thread and written on another: results, NOTIFYs and meansql's own answers
    cross both at once without a stall or a TLS error."""
    pg, cert = tls_pg
    url = f"postgresql://scram_user:scram%20secret@localhost:{pg.port}/postgres?sslmode=verify-full&sslrootcert={cert}"
    env = server_env(proxy_provider, MEANSQL_SSL_CERT=str(cert), MEANSQL_SSL_KEY=str(cert.parent / "server.key"))
    server = ServerProcess(tmp_path / "m.duckdb", env, ["--upstream", url]).start()
    client = f"postgresql://postgres@127.0.0.1:{server.port}/postgres?sslmode=require"
    try:
        with psycopg.connect(client, autocommit=True) as a, psycopg.connect(client, autocommit=True) as b:
            assert a.info.pgconn.ssl_in_use and b.info.pgconn.ssl_in_use
            a.execute("LISTEN tls_both")
            b.execute("CREATE TABLE IF NOT EXISTS tls_notes (id int, note text)")
            b.execute("TRUNCATE tls_notes")
            b.execute("INSERT INTO tls_notes VALUES (1, 'bamboo straw'), (2, 'plastic cup'), (3, 'recycled bag')")
            for i in range(10):
                got = b.execute("SELECT i, md5(i::text) FROM generate_series(1, 50000) i").fetchall()
                assert len(got) == 50000 and got[-1][0] == 50000
                b.execute("SELECT pg_notify('tls_both', %s)", [str(i)])
                rows = a.execute("SELECT id FROM tls_notes WHERE note MEANS 'eco-friendly' AND id < %s ORDER BY id", [4 + i]).fetchall()
                assert rows == [(1,), (3,)]
            payloads = [n.payload for n in a.notifies(timeout=5, stop_after=10)]
        assert payloads == [str(i) for i in range(10)]
    finally:
        output = server.stop()
    assert "Traceback" not in output
