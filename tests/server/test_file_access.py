"""Clients cannot read or write files on the server: each way in is refused with 42501, the session lives on."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from server import file_access
from server.errors import InsufficientPrivilege
from server.statements import split
from tests.conftest import ROOT, ServerProcess, psql, server_env

SECRET_TEXT = "root:x:0:0:the-server-owner-only"


@pytest.fixture(scope="module")
def place() -> Iterator[Path]:
    """A directory of the server's machine: a file clients must not read, and room for files they must not write."""
    tmp = Path(tempfile.mkdtemp(prefix="meansql-files-"))
    (tmp / "secret.csv").write_text(f"line\n{SECRET_TEXT}\n")
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def served(place: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(place / "meansql.duckdb", server_env(None), ["--no-http"]).start()
    with server.connect() as conn:
        conn.execute("CREATE TABLE t AS SELECT 1 AS a")
    yield server
    server.stop()


@pytest.fixture()
def conn(served: ServerProcess) -> Iterator[psycopg.Connection[Any]]:
    with served.connect() as c:
        yield c


def refused(conn: psycopg.Connection[Any], sql: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as info:
        conn.execute(sql)
    assert info.value.sqlstate == "42501", (sql, info.value.sqlstate, str(info.value))
    assert conn.execute("SELECT 1").fetchone() == (1,)  # the session is still usable
    return info.value


WRITES = [
    ("COPY t TO '{out}'", "permission denied to COPY to a file"),
    ("COPY (SELECT 42) TO '{out}' (FORMAT csv)", "permission denied to COPY to a file"),
    ("COPY t TO '{out}' (FORMAT parquet)", "permission denied to COPY to a file"),
    ("EXPORT DATABASE '{out}'", "permission denied to EXPORT DATABASE"),
    ("ATTACH '{out}' AS other", "permission denied to ATTACH"),
    ("INSTALL '{out}'", "permission denied to INSTALL"),
    ("LOAD '{out}'", "permission denied to LOAD"),
    ("FORCE INSTALL httpfs", "permission denied to FORCE INSTALL"),
    ("CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')", "permission denied to CREATE SECRET"),
    ("CREATE OR REPLACE PERSISTENT SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')", "permission denied to CREATE SECRET"),
    ("SET log_query_path = '{out}'", 'permission denied to set parameter "log_query_path"'),
    ("SET temp_directory = '{out}'", 'permission denied to set parameter "temp_directory"'),
    ("SET secret_directory = '{out}'", 'permission denied to set parameter "secret_directory"'),
]


@pytest.mark.parametrize(("template", "message"), WRITES, ids=[w[0].split(" '")[0] for w in WRITES])
def test_statements_writing_server_files_are_refused(conn: psycopg.Connection[Any], place: Path, template: str, message: str) -> None:
    out = place / "written"
    exc = refused(conn, template.format(out=out))
    assert message in str(exc)
    assert not out.exists()


READS = [
    "COPY t FROM '{f}'",
    "SELECT * FROM read_csv('{f}')",
    "SELECT * FROM read_text('{f}')",
    "SELECT * FROM read_blob('{f}')",
    "SELECT * FROM read_parquet('{f}')",
    "SELECT * FROM read_json('{f}')",
    "SELECT * FROM glob('{d}/*')",
    "SELECT * FROM sniff_csv('{f}')",
    "IMPORT DATABASE '{d}'",
    "PRAGMA import_database('{d}')",
    "SELECT * FROM read_csv('https://example.com/data.csv')",
    "SELECT * FROM read_csv('{f}') WHERE line MEANS 'a password line'",
]


@pytest.mark.parametrize("template", READS)
def test_statements_reading_server_files_are_refused(conn: psycopg.Connection[Any], place: Path, template: str) -> None:
    exc = refused(conn, template.format(f=place / "secret.csv", d=place))
    assert "permission denied" in str(exc)
    assert SECRET_TEXT not in str(exc)


@pytest.mark.parametrize(
    "sql",
    [
        "SET enable_external_access = true",
        "SET allowed_directories = ['/']",
        "SET allowed_paths = ['/etc/passwd']",
        "SET lock_configuration = false",
        "RESET lock_configuration",
        "SET allowed_configs = ['threads']",
        "SET disabled_filesystems = ''",
        "SET autoload_known_extensions = true",
        "PRAGMA threads = 1",
        "DETACH meansql_catalog",
        "SET current_transaction_invalidation_policy = 'all_errors'",
    ],
)
def test_the_lock_cannot_be_undone(conn: psycopg.Connection[Any], place: Path, sql: str) -> None:
    refused(conn, sql)
    refused(conn, f"SELECT * FROM read_csv('{place / 'secret.csv'}')")
    # The catalog clients read is still attached.
    assert conn.execute("SELECT count(*) > 0 FROM pg_catalog.pg_type").fetchone() == (True,)


def test_refusal_fails_the_transaction_like_any_error(conn: psycopg.Connection[Any], place: Path) -> None:
    conn.execute("BEGIN")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"COPY t TO '{place / 'in-tx'}'")
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        conn.execute("SELECT 1")
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not (place / "in-tx").exists()


def test_the_extended_protocol_is_refused_too(conn: psycopg.Connection[Any], place: Path) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM read_csv(%s)", [str(place / "secret.csv")], prepare=True)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"COPY t TO '{place / 'prepared'}'", prepare=True)
    assert not (place / "prepared").exists()
    assert conn.execute("SELECT %s::int", [7], prepare=True).fetchone() == (7,)


def test_session_settings_still_work(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET TimeZone = 'Asia/Tokyo'")
    assert conn.execute("SHOW TimeZone").fetchone() == ("Asia/Tokyo",)
    assert conn.execute("SELECT TIMESTAMPTZ '2024-01-01 00:00:00+00'::TEXT").fetchone() == ("2024-01-01 09:00:00+09",)
    conn.execute("RESET TimeZone")
    assert conn.execute("SELECT 7 / 2").fetchone() == (3,)
    err = refused(conn, "SET threads = 1")
    assert 'permission denied to set parameter "threads"' in str(err)


def test_copy_from_stdin_and_to_stdout_still_work(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE copied (id INT, name TEXT)")
    with conn.cursor().copy("COPY copied FROM STDIN (FORMAT csv, HEADER)") as cp:
        cp.write('id,name\n1,alpha\n2,"b, c"\n')
    with conn.cursor().copy("COPY copied FROM STDIN") as cp:
        cp.write("3\tdelta\n")
    out = io.BytesIO()
    with conn.cursor().copy("COPY (SELECT * FROM copied ORDER BY id) TO STDOUT (FORMAT csv)") as cp:
        for chunk in cp:
            out.write(chunk)
    assert out.getvalue().decode() == '1,alpha\n2,"b, c"\n3,delta\n'


def test_psql_copy_runs_on_the_client_and_server_copy_is_refused(served: ServerProcess, place: Path, tmp_path: Path) -> None:
    local = tmp_path / "client.csv"
    local.write_text("5\n6\n")
    result = psql(
        served.url,
        "CREATE TABLE from_psql (a INT)",
        f"\\copy from_psql FROM '{local}' CSV",
        f"COPY from_psql TO '{place / 'psql-out.csv'}'",
        "SELECT sum(a) FROM from_psql",
    )
    assert "COPY 2" in result.stdout
    assert "11" in result.stdout
    assert "permission denied to COPY to a file" in result.stderr
    assert not (place / "psql-out.csv").exists()


def test_the_spool_directory_is_private_and_removed_at_stop(place: Path) -> None:
    server = ServerProcess(place / "spool.duckdb", server_env(None), ["--no-http"]).start()
    try:
        with server.connect() as c:
            (dirs,) = c.execute("SELECT current_setting('allowed_directories')").fetchone() or ([],)
            spool = Path(next(d for d in dirs if "meansql-spool-" in d))
            assert spool.is_dir() and (spool.stat().st_mode & 0o077) == 0
    finally:
        server.stop()
    assert not spool.exists()


def test_the_local_cli_of_the_files_owner_keeps_full_access(place: Path) -> None:
    out = place / "owner.csv"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "sql",
            "query",
            "--db",
            str(place / "owner.duckdb"),
            f"COPY (SELECT 42 AS answer) TO '{out}' (FORMAT csv, HEADER)",
        ],
        cwd=ROOT,
        env=server_env(None),
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.read_text() == "answer\n42\n"


@pytest.mark.parametrize(
    "sql", ["CREATE TABLE secret (x INT)", "SELECT 'COPY t TO x'", "DROP TABLE secret", "SELECT * FROM attach", "INSERT INTO load VALUES (1)"]
)
def test_statements_that_only_look_alike_pass(sql: str) -> None:
    (stmt,) = split(sql)
    file_access.check(stmt)


@pytest.mark.parametrize(
    ("sql", "direction"), [("COPY t FROM '/x'", "from"), ("COPY t (a, b) TO '/x'", "to"), ("COPY (SELECT a FROM t) TO '/x'", "to")]
)
def test_copy_refusal_names_its_direction(sql: str, direction: str) -> None:
    (stmt,) = split(sql)
    with pytest.raises(InsufficientPrivilege, match=f"COPY {direction} a file"):
        file_access.check(stmt)


def test_the_servers_own_search_index_and_parquet_export_work_behind_the_lock(place: Path) -> None:
    import httpx

    from tests.e2e.test_store_api import LEAK, MODAL, http_url

    env = {k: v for k, v in server_env(None).items() if k != "MEANSQL_HTTP_PORT"}
    server = ServerProcess(place / "store.duckdb", {**env, "MEANSQL_HTTP_PORT": "0"}, []).start()
    try:
        http = httpx.Client(base_url=http_url(server), timeout=30)
        for example in (MODAL, LEAK):
            assert http.post("/training-examples/", json=example).status_code == 201
        found = http.get("/training-examples/", params={"q": "memory leak"}).json()
        assert [e["domain"] for e in found["items"]] == ["troubleshooting"]
        with server.connect() as c:  # the BM25 index was built after the lock, with the extension loaded before it
            row = c.execute("SELECT count(*) FROM duckdb_schemas() WHERE schema_name = 'fts_main_training_examples'")
            assert row.fetchone() == (1,)
        assert http.get("/training-examples/export", params={"format": "parquet"}).content[:4] == b"PAR1"
    finally:
        output = server.stop()
    assert "uses ILIKE" not in output
