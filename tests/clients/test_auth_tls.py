"""Passwords, TLS and connection limits from real clients, against meansql and a real PostgreSQL alike.

`secure` is parametrized over a meansql server with users and a certificate,
and a PostgreSQL cluster with the same users (our verifiers, loaded with
CREATE ROLE ... PASSWORD), scram-sha-256/md5 in pg_hba.conf and ssl = on.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pg8000.native
import psycopg
import pytest
import scramp

from server.pgwire import auth
from tests.clients.conftest import PostgresServer, Target
from tests.conftest import ROOT, ServerProcess, server_env, wait_for

ALICE, ALICE_PW = "alice", "wonder länd"  # SCRAM; not ASCII, so SASLprep and UTF-8 are exercised
BOB, BOB_PW = "bob", "builder"  # md5, for old clients
FAILED = 'password authentication failed for user "{}"'


# -- raw wire -------------------------------------------------------------------------------


def startup_packet(user: str, database: str) -> bytes:
    body = struct.pack("!i", 196608) + f"user\0{user}\0database\0{database}\0\0".encode()
    return struct.pack("!i", len(body) + 4) + body


SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    head = read_exact(sock, 5)
    (length,) = struct.unpack("!i", head[1:])
    return head[:1], read_exact(sock, length - 4)


def error_fields(body: bytes) -> dict[str, str]:
    return {part[:1].decode(): part[1:].decode() for part in body.rstrip(b"\0").split(b"\0") if part}


def is_closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def raw_scram_login(host: str, port: int, dbname: str, user: str, password: str) -> tuple[list[bytes], dict[str, str]]:
    """A SCRAM login by hand (scramp as the client): the message types seen and the error's fields, if any."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(startup_packet(user, dbname))
        kind, body = read_message(sock)
        seen = [kind + body[:4]]
        assert (kind, body[:4]) == (b"R", struct.pack("!i", 10)), body
        mechanisms = [m.decode() for m in body[4:].split(b"\0") if m]
        client = scramp.ScramClient(mechanisms, user, password)
        first = client.get_client_first().encode()
        msg = b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first
        sock.sendall(b"p" + struct.pack("!i", len(msg) + 4) + msg)
        kind, body = read_message(sock)
        seen.append(kind + body[:4])
        client.set_server_first(body[4:].decode())
        final = client.get_client_final().encode()
        sock.sendall(b"p" + struct.pack("!i", len(final) + 4) + final)
        kind, body = read_message(sock)
        seen.append(kind + (body[:4] if kind == b"R" else b""))
        if kind == b"E":
            assert is_closed(sock), "a failed password must end the connection"
            return seen, error_fields(body)
        return seen, {}


# -- servers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("certs")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-keyout", str(d / "server.key"), "-out", str(d / "server.crt")],
                   check=True, capture_output=True, timeout=60)
    return d / "server.crt", d / "server.key"


def tls_client(certs: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs[0]))
    ctx.check_hostname = False
    return ctx


def users() -> dict[str, str]:
    return {ALICE: str(auth.scram_verifier(ALICE_PW)), BOB: str(auth.md5_verifier(BOB, BOB_PW))}


@pytest.fixture(scope="module")
def secure_meansql(tmp_path_factory: pytest.TempPathFactory, certs: tuple[Path, Path]) -> Iterator[ServerProcess]:
    d = tmp_path_factory.mktemp("secure")
    config = d / "meansql.yaml"
    config.write_text(json.dumps({"users": users(), "ssl_cert": str(certs[0]), "ssl_key": str(certs[1])}))
    server = ServerProcess(d / "secure.duckdb", server_env(None), ["--config", str(config)]).start()
    yield server
    server.stop()


class SecurePostgres(PostgresServer):
    """PostgreSQL with passwords required on TCP and TLS on."""

    def secure(self, cert: Path, key: Path) -> SecurePostgres:
        for src, name in ((cert, "server.crt"), (key, "server.key")):
            shutil.copy(src, self.data / name)
            os.chmod(self.data / name, 0o600)
            if self.as_root:
                shutil.chown(self.data / name, "postgres", "postgres")
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            for name, verifier in users().items():
                conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{verifier}'")
            conn.execute("ALTER SYSTEM SET ssl = on")
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            f"host all {BOB} 127.0.0.1/32 md5\n"
            "host all all 127.0.0.1/32 scram-sha-256\n")
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
        wait_for(lambda: _ssl_on(self.port), what="PostgreSQL to reload with ssl = on")
        return self


def _ssl_on(port: int) -> bool:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres") as conn:
        return conn.execute("SHOW ssl").fetchone() == ("on",)


@pytest.fixture(scope="module")
def secure_postgres(certs: tuple[Path, Path]) -> Iterator[SecurePostgres]:
    pg = SecurePostgres().start()
    try:
        yield pg.secure(*certs)
    finally:
        pg.stop()


@pytest.fixture(params=["meansql", "postgres"])
def secure(request: pytest.FixtureRequest) -> Target:
    """A server that requires passwords and offers TLS; the user field is filled in per check."""
    if request.param == "postgres":
        return Target("postgres", "127.0.0.1", request.getfixturevalue("secure_postgres").port, "postgres", "")
    return Target("meansql", "127.0.0.1", request.getfixturevalue("secure_meansql").port, "default", "")


def conninfo(t: Target, user: str, password: str, **extra: str) -> str:
    params = {"host": t.host, "port": str(t.port), "dbname": t.dbname, "user": user, "password": password,
              "sslmode": "disable", **extra}
    return " ".join(f"{k}='{v}'" for k, v in params.items())


def run_psql(t: Target, user: str, password: str, sql: str, sslmode: str = "disable") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGPASSWORD": password, "PGSSLMODE": sslmode}
    return subprocess.run(["psql", "-X", "-At", "-h", t.host, "-p", str(t.port), "-U", user, "-d", t.dbname,
                           "-c", sql], capture_output=True, text=True, timeout=60, env=env)


# -- passwords ----------------------------------------------------------------------------------


def test_scram_login_from_psql_psycopg_asyncpg_pg8000(secure: Target) -> None:
    out = run_psql(secure, ALICE, ALICE_PW, "SELECT 40 + 2")
    assert (out.returncode, out.stdout.strip()) == (0, "42"), out.stderr
    # libpq refuses to go on unless the server asked for SCRAM.
    with psycopg.connect(conninfo(secure, ALICE, ALICE_PW, require_auth="scram-sha-256")) as conn:
        assert conn.execute("SELECT 40 + 2").fetchone() == (42,)

    async def with_asyncpg() -> int:
        conn = await asyncpg.connect(host=secure.host, port=secure.port, user=ALICE, password=ALICE_PW,
                                     database=secure.dbname, ssl=False)
        try:
            return int(await conn.fetchval("SELECT 40 + 2"))
        finally:
            await conn.close()

    assert asyncio.run(with_asyncpg()) == 42
    conn8 = pg8000.native.Connection(ALICE, host=secure.host, port=secure.port, database=secure.dbname,
                                     password=ALICE_PW)
    assert conn8.run("SELECT 40 + 2") == [[42]]
    conn8.close()


JAVA_CHECK = """
import java.sql.*;
public class AuthCheck {
    public static void main(String[] a) throws Exception {
        for (int i = 2; i + 2 < a.length; i += 3) {
            String url = "jdbc:postgresql://" + a[0] + "/" + a[1] + "?sslmode=" + a[i + 2];
            try (Connection c = DriverManager.getConnection(url, a[i], a[i + 1]);
                 ResultSet r = c.createStatement().executeQuery("SELECT 40 + 2")) {
                r.next();
                System.out.println(r.getInt(1));
            } catch (SQLException e) {
                System.out.println(e.getSQLState() + " " + e.getMessage());
            }
        }
    }
}
"""


@pytest.fixture(scope="module")
def java_check(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., list[str]]:
    """Log in with pgjdbc (Debian's libpostgresql-jdbc-java) once per (user, password, sslmode); one JVM."""
    jar = "/usr/share/java/postgresql.jar"
    assert Path(jar).is_file() and shutil.which("java"), "pgjdbc and Java 17: scripts/install.sh --clients"
    src = tmp_path_factory.mktemp("java") / "AuthCheck.java"
    src.write_text(JAVA_CHECK)

    def run(t: Target, *logins: tuple[str, str, str]) -> list[str]:
        args = [arg for login in logins for arg in login]
        out = subprocess.run(["java", "-cp", jar, str(src), f"{t.host}:{t.port}", t.dbname, *args],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()

    return run


def test_scram_md5_and_tls_from_pgjdbc(secure: Target, java_check: Callable[..., list[str]]) -> None:
    got = java_check(secure, (ALICE, ALICE_PW, "disable"), (ALICE, ALICE_PW, "require"), (BOB, BOB_PW, "disable"),
                     ("nobody", "x", "disable"))
    assert got == ["42", "42", "42", f"28P01 FATAL: {FAILED.format('nobody')}"]


def test_md5_login_for_old_clients(secure: Target) -> None:
    with psycopg.connect(conninfo(secure, BOB, BOB_PW, require_auth="md5")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    conn8 = pg8000.native.Connection(BOB, host=secure.host, port=secure.port, database=secure.dbname, password=BOB_PW)
    assert conn8.run("SELECT 1") == [[1]]
    conn8.close()
    with pytest.raises(psycopg.OperationalError, match=FAILED.format(BOB)):
        psycopg.connect(conninfo(secure, BOB, "wrong"))


@pytest.mark.parametrize(("user", "password"), [(ALICE, "wrong"), ("nobody", ALICE_PW), (BOB, "wrong")])
def test_wrong_password_and_unknown_user_get_the_same_28P01(secure: Target, user: str, password: str) -> None:
    with pytest.raises(pg8000.native.DatabaseError) as exc:
        pg8000.native.Connection(user, host=secure.host, port=secure.port, database=secure.dbname, password=password)
    fields = exc.value.args[0]
    assert (fields["S"], fields["C"], fields["M"]) == ("FATAL", "28P01", FAILED.format(user))

    async def with_asyncpg() -> None:
        await asyncpg.connect(host=secure.host, port=secure.port, user=user, password=password,
                              database=secure.dbname, ssl=False)

    with pytest.raises(asyncpg.InvalidPasswordError, match=FAILED.format(user)):
        asyncio.run(with_asyncpg())
    out = run_psql(secure, user, password, "SELECT 1")
    assert out.returncode == 2 and f'FATAL:  {FAILED.format(user)}' in out.stderr


def test_failed_scram_exchange_is_the_same_for_unknown_and_known_users_and_ends_the_connection(secure: Target) -> None:
    seen_ok, fields_ok = raw_scram_login(secure.host, secure.port, secure.dbname, ALICE, ALICE_PW)
    assert fields_ok == {} and seen_ok == [b"R" + struct.pack("!i", n) for n in (10, 11, 12)]
    seen_wrong, wrong = raw_scram_login(secure.host, secure.port, secure.dbname, ALICE, "wrong")
    seen_unknown, unknown = raw_scram_login(secure.host, secure.port, secure.dbname, "nobody", "wrong")
    assert seen_wrong == seen_unknown == [b"R" + struct.pack("!i", 10), b"R" + struct.pack("!i", 11), b"E"]
    assert (wrong["C"], wrong["M"]) == ("28P01", FAILED.format(ALICE))
    assert (unknown["C"], unknown["M"]) == ("28P01", FAILED.format("nobody"))


def test_unknown_user_gets_the_same_salt_every_time(secure: Target) -> None:
    def salt(user: str) -> str:
        with socket.create_connection((secure.host, secure.port), timeout=10) as sock:
            sock.sendall(startup_packet(user, secure.dbname))
            read_message(sock)
            first = b"n,,n=,r=abcdefghijkl"
            msg = b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first
            sock.sendall(b"p" + struct.pack("!i", len(msg) + 4) + msg)
            _, body = read_message(sock)
        return dict(a.split("=", 1) for a in body[4:].decode().split(","))["s"]

    assert salt("nobody") == salt("nobody") != salt("somebody")
    assert salt(ALICE) == salt(ALICE)


def test_unknown_user_and_wrong_password_take_the_same_time(secure_meansql: ServerProcess) -> None:
    def timed(user: str) -> float:
        t0 = time.perf_counter()
        _, fields = raw_scram_login("127.0.0.1", secure_meansql.port, "default", user, "wrong")
        assert fields["C"] == "28P01"
        return time.perf_counter() - t0

    wrong, unknown = [], []
    for _ in range(40):  # interleaved, so load on the machine hits both alike
        wrong.append(timed(ALICE))
        unknown.append(timed("nobody"))
    ratio = statistics.median(unknown) / statistics.median(wrong)
    print(f"median wrong password {statistics.median(wrong) * 1e3:.2f} ms, unknown user "
          f"{statistics.median(unknown) * 1e3:.2f} ms, ratio {ratio:.2f}")
    assert 0.8 <= ratio <= 1.2


# -- TLS -------------------------------------------------------------------------------------------


def test_sslmode_require_from_psql_and_psycopg(secure: Target) -> None:
    out = run_psql(secure, ALICE, ALICE_PW, "SELECT 'over tls'", sslmode="require")
    assert (out.returncode, out.stdout.strip()) == (0, "over tls"), out.stderr
    with psycopg.connect(conninfo(secure, ALICE, ALICE_PW, sslmode="require", require_auth="scram-sha-256")) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with psycopg.connect(conninfo(secure, BOB, BOB_PW, sslmode="require")) as conn:
        assert conn.pgconn.ssl_in_use


def test_sslmode_require_fails_cleanly_without_a_certificate(target: Target) -> None:
    out = subprocess.run(["psql", "-X", f"{target.url}?sslmode=require", "-c", "SELECT 1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "server does not support SSL, but SSL was required" in out.stderr
    with pytest.raises(psycopg.OperationalError, match="server does not support SSL"):
        psycopg.connect(f"{target.url}?sslmode=require")
    with target.connect(sslmode="prefer") as conn:  # and the server lets the next client in
        assert not conn.pgconn.ssl_in_use


def test_data_pipelined_after_ssl_request_is_refused(target: Target) -> None:
    with socket.create_connection((target.host, target.port), timeout=10) as sock:
        sock.sendall(SSL_REQUEST + startup_packet("postgres", target.dbname))
        assert read_exact(sock, 1) == b"N"
        kind, body = read_message(sock)
        fields = error_fields(body)
        assert (kind, fields["S"], fields["C"], fields["M"]) == (
            b"E", "FATAL", "08P01", "received unencrypted data after SSL request")
        assert is_closed(sock)


def test_data_pipelined_after_ssl_request_is_refused_after_the_handshake(secure: Target,
                                                                         certs: tuple[Path, Path]) -> None:
    with socket.create_connection((secure.host, secure.port), timeout=10) as raw:
        raw.sendall(SSL_REQUEST + startup_packet("postgres", secure.dbname))
        assert read_exact(raw, 1) == b"S"
        with tls_client(certs).wrap_socket(raw) as sock:
            kind, body = read_message(sock)
            fields = error_fields(body)
            assert (kind, fields["S"], fields["C"], fields["M"]) == (
                b"E", "FATAL", "08P01", "received unencrypted data after SSL request")
            assert is_closed(sock)


def test_second_ssl_request_is_fatal(target: Target) -> None:
    with socket.create_connection((target.host, target.port), timeout=10) as sock:
        sock.sendall(SSL_REQUEST)
        assert read_exact(sock, 1) == b"N"
        sock.sendall(SSL_REQUEST)
        kind, body = read_message(sock)
        fields = error_fields(body)
        assert (kind, fields["S"], fields["C"]) == (b"E", "FATAL", "0A000")
        assert fields["M"].startswith("unsupported frontend protocol 1234.5679")
        assert is_closed(sock)


def test_second_ssl_request_inside_tls_is_fatal(secure: Target, certs: tuple[Path, Path]) -> None:
    ctx = tls_client(certs)
    with socket.create_connection((secure.host, secure.port), timeout=10) as raw:
        raw.sendall(SSL_REQUEST)
        assert read_exact(raw, 1) == b"S"
        with ctx.wrap_socket(raw) as sock:
            sock.sendall(SSL_REQUEST)
            kind, body = read_message(sock)  # type: ignore[arg-type]
            fields = error_fields(body)
            assert (kind, fields["S"], fields["C"]) == (b"E", "FATAL", "0A000")


def test_abrupt_tls_closes_leave_no_traceback(start_server: Callable[..., ServerProcess],
                                              certs: tuple[Path, Path]) -> None:
    server = start_server(provider=None, MEANSQL_SSL_CERT=str(certs[0]), MEANSQL_SSL_KEY=str(certs[1]))
    ctx = tls_client(certs)
    for i in range(100):
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        raw.sendall(SSL_REQUEST)
        assert read_exact(raw, 1) == b"S"
        if i % 2:
            raw.sendall(b"\x16\x03\x01\x00\xff garbage")  # a torn ClientHello
            raw.close()
        else:
            sock = ctx.wrap_socket(raw)
            sock.sendall(startup_packet("postgres", "default")[:6])
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # reset under TLS, mid start-up packet
    with server.connect(sslmode="require") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    log = server.stop()
    assert "Traceback" not in log and "WARNING" not in log and "ERROR" not in log, log


# -- limits and timeouts ----------------------------------------------------------------------------


def test_connection_limit(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(provider=None, MEANSQL_MAX_CONNECTIONS="3")
    conns = [server.connect() for _ in range(3)]
    t0 = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match="sorry, too many clients already"):
        server.connect()
    assert time.monotonic() - t0 < 1.0
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(startup_packet("postgres", "default"))
        kind, body = read_message(sock)
        assert (kind, error_fields(body)["C"]) == (b"E", "53300")
    for c in conns:
        assert c.execute("SELECT 1").fetchone() == (1,)
    conns.pop().close()
    conns.append(wait_for(lambda: _try_connect(server), timeout=5, what="a freed slot"))
    for c in conns:
        c.close()


def _try_connect(server: ServerProcess) -> psycopg.Connection[object] | None:
    try:
        return server.connect()
    except psycopg.OperationalError:
        return None


def test_idle_raw_sockets_do_not_block_logins_and_are_closed_by_the_login_timeout(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(provider=None, MEANSQL_MAX_CONNECTIONS="3", MEANSQL_LOGIN_TIMEOUT="1.5")
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(200)]
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    stalled.sendall(startup_packet("postgres", "default")[:7])  # half a start-up packet
    t0 = time.monotonic()
    with server.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        for sock in [*idle, stalled]:
            assert is_closed(sock)
        waited = time.monotonic() - t0
        assert 1.0 <= waited <= 5.0, waited
        assert conn.execute("SELECT 2").fetchone() == (2,)  # a logged-in session outlives the login timeout
    for sock in idle:
        sock.close()
    stalled.close()


def test_login_timeout_covers_a_stalled_password_exchange(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(provider=None, MEANSQL_LOGIN_TIMEOUT="1", MEANSQL_USERS=json.dumps(users()))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(startup_packet(ALICE, "default"))
        assert read_message(sock)[0] == b"R"
        t0 = time.monotonic()
        assert is_closed(sock)
        assert time.monotonic() - t0 < 3


def test_login_timeout_covers_a_stalled_tls_handshake(start_server: Callable[..., ServerProcess],
                                                     certs: tuple[Path, Path]) -> None:
    server = start_server(provider=None, MEANSQL_LOGIN_TIMEOUT="1", MEANSQL_SSL_CERT=str(certs[0]),
                          MEANSQL_SSL_KEY=str(certs[1]))
    before = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    before.sendall(SSL_REQUEST)
    assert read_exact(before, 1) == b"S"  # and no ClientHello follows
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    raw.sendall(SSL_REQUEST)
    assert read_exact(raw, 1) == b"S"
    after = tls_client(certs).wrap_socket(raw)  # handshake done, no start-up packet follows
    t0 = time.monotonic()
    assert is_closed(before)
    try:
        assert after.recv(1) == b""
    except (ssl.SSLError, ConnectionResetError):
        pass  # closed without close_notify: also closed
    assert time.monotonic() - t0 < 3
    before.close()
    after.close()
    log = server.stop()
    assert "Traceback" not in log, log


def test_sockets_beyond_the_thread_cap_are_refused_at_once(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(provider=None, MEANSQL_MAX_CONNECTIONS="1")
    cap = 2 * 1 + 256  # MeansqlServer.max_sockets: sockets still starting up are threads too
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(cap)]
    # The server has taken them all in once each has its thread (a loaded machine can take a while to accept 258
    # sockets); from then on one more is refused at once.
    assert server.proc is not None
    deadline = time.monotonic() + 30
    while _threads(server.proc.pid) < cap and time.monotonic() < deadline:
        time.sleep(0.05)
    extra = _refused(server.port)
    assert extra is not None
    assert (extra["S"], extra["C"], extra["M"]) == ("FATAL", "53300", "sorry, too many clients already")
    for sock in held:
        sock.close()
    with server.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


def _refused(port: int) -> dict[str, str] | None:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        kind, body = read_message(sock)  # without sending anything: the answer comes at once
        assert is_closed(sock)
        return error_fields(body) if kind == b"E" else None


# -- start-up ------------------------------------------------------------------------------------------


def test_non_loopback_without_users_warns_loudly(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--host", "0.0.0.0", provider=None)
    text = server.stop()
    assert "WARNING: listening on 0.0.0.0 with no users configured" in text
    quiet = start_server("--host", "0.0.0.0", provider=None, MEANSQL_USERS=json.dumps(users()))
    assert "WARNING" not in quiet.stop()


def test_user_add_writes_a_verifier_that_logs_in(tmp_path: Path, start_server: Callable[..., ServerProcess]) -> None:
    config = tmp_path / "meansql.yaml"
    config.write_text("max_connections: 10\n")
    env = server_env(None)
    cmd = [sys.executable, "-m", "server.cli", "user", "add", "carol", "--password-stdin", "--config", str(config)]
    out = subprocess.run(cmd, input="s3cret pass\n", capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    text = config.read_text()
    assert "s3cret" not in text and "max_connections: 10" in text and "carol: SCRAM-SHA-256$4096:" in text
    printed = subprocess.run([*cmd, "--print", "--md5"], input="s3cret pass\n", capture_output=True, text=True,
                             env=env, cwd=ROOT, timeout=60)
    assert printed.stdout.strip() == str(auth.md5_verifier("carol", "s3cret pass"))
    server = start_server("--config", str(config), provider=None)
    with psycopg.connect(f"host=127.0.0.1 port={server.port} dbname=default user=carol password='s3cret pass' "
                         "require_auth=scram-sha-256") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        server.connect()  # a password is now asked of everyone


def test_channel_binding_required_over_tls(secure: Target) -> None:
    """libpq's channel_binding=require: SCRAM-SHA-256-PLUS with tls-server-end-point, as PostgreSQL offers it."""
    env_extra = {"PGCHANNELBINDING": "require"}
    out = subprocess.run(["psql", "-X", "-At", "-h", secure.host, "-p", str(secure.port), "-U", ALICE, "-d",
                          secure.dbname, "-c", "SELECT 'bound'"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PGPASSWORD": ALICE_PW, "PGSSLMODE": "require", **env_extra})
    assert (out.returncode, out.stdout.strip()) == (0, "bound"), out.stderr
    with psycopg.connect(conninfo(secure, ALICE, ALICE_PW, sslmode="require", channel_binding="require")) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError) as plain:
        psycopg.connect(conninfo(secure, ALICE, ALICE_PW, sslmode="disable", channel_binding="require"))
    assert "channel binding" in str(plain.value)
    # md5 cannot bind: a client that requires binding refuses it.
    with pytest.raises(psycopg.OperationalError) as md5:
        psycopg.connect(conninfo(secure, BOB, BOB_PW, sslmode="require", channel_binding="require"))
    assert "channel binding" in str(md5.value)
