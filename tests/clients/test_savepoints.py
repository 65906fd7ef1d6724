"""SAVEPOINT, RELEASE and ROLLBACK TO SAVEPOINT from psycopg and SQLAlchemy, against meansql and PostgreSQL.

DuckDB keeps no savepoints: meansql rolls back to a savepoint set before the
transaction changed anything, and refuses (0A000) to roll back to one set after
changes; the last test states that difference and runs against meansql only.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import create_engine, text

from tests.clients.conftest import Target
from tests.conftest import ServerProcess


@pytest.fixture()
def letters(target: Target, table_name: str) -> Iterator[str]:
    with target.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table_name}")
        conn.execute(f"CREATE TABLE {table_name} (id integer PRIMARY KEY, letter text)")
    yield table_name


def _rows(conn: psycopg.Connection[object], table: str) -> list[object]:
    return conn.execute(f"SELECT id, letter FROM {table} ORDER BY id").fetchall()


def test_savepoint_tags_and_errors(target: Target, letters: str) -> None:
    with target.connect() as conn:
        with pytest.raises(psycopg.errors.NoActiveSqlTransaction) as outside:
            conn.execute("SAVEPOINT a")
        assert outside.value.sqlstate == "25P01"
        assert "SAVEPOINT can only be used in transaction blocks" in str(outside.value)
        tags = []
        conn.execute("BEGIN")
        for sql in ("SAVEPOINT a", "SAVEPOINT b", "RELEASE b", "RELEASE SAVEPOINT a", "SAVEPOINT c", "ROLLBACK TO SAVEPOINT c", "ROLLBACK TO c"):
            tags.append(conn.execute(sql).statusmessage)
        with pytest.raises(psycopg.errors.InvalidSavepointSpecification) as unknown:
            conn.execute("RELEASE nowhere")
        assert unknown.value.sqlstate == "3B001"
        assert 'savepoint "nowhere" does not exist' in str(unknown.value)
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.execute("ROLLBACK")
    assert tags == ["SAVEPOINT", "SAVEPOINT", "RELEASE", "RELEASE", "SAVEPOINT", "ROLLBACK", "ROLLBACK"]


def test_rollback_to_savepoint_undoes_changes_and_errors(target: Target, letters: str) -> None:
    with target.connect() as conn:
        conn.execute("BEGIN")
        conn.execute("SAVEPOINT start")
        conn.execute(f"INSERT INTO {letters} VALUES (1, 'a')")
        conn.execute("ROLLBACK TO SAVEPOINT start")
        assert _rows(conn, letters) == []
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        conn.execute("ROLLBACK TO SAVEPOINT start")  # the failed transaction is usable again
        conn.execute(f"INSERT INTO {letters} VALUES (2, 'b')")
        conn.execute("RELEASE start")
        conn.execute("COMMIT")
        assert _rows(conn, letters) == [(2, "b")]


def test_psycopg_nested_transaction_rolls_back(target: Target, letters: str) -> None:
    with target.connect() as conn:
        with conn.transaction():
            with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
                conn.execute(f"INSERT INTO {letters} VALUES (1, 'a')")
                conn.execute(f"INSERT INTO {letters} VALUES (1, 'again')")
            conn.execute(f"INSERT INTO {letters} VALUES (3, 'c')")
        assert _rows(conn, letters) == [(3, "c")]


def test_sqlalchemy_begin_nested(target: Target, letters: str) -> None:
    engine = create_engine(target.url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            with conn.begin():
                nested = conn.begin_nested()
                conn.execute(text(f"INSERT INTO {letters} VALUES (1, 'a')"))
                nested.rollback()
                with conn.begin_nested():
                    conn.execute(text(f"INSERT INTO {letters} VALUES (2, 'b')"))
            rows = conn.execute(text(f"SELECT id, letter FROM {letters} ORDER BY id")).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [(2, "b")]


def test_rollback_to_savepoint_after_earlier_changes_is_refused(meansql_server: ServerProcess) -> None:
    """meansql only, by design: PostgreSQL would undo just the changes after the savepoint."""
    with meansql_server.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS sp_refused")
        conn.execute("CREATE TABLE sp_refused (id integer)")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO sp_refused VALUES (1)")
        conn.execute("SAVEPOINT later")
        conn.execute("INSERT INTO sp_refused VALUES (2)")
        with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
            conn.execute("ROLLBACK TO SAVEPOINT later")
        assert refused.value.sqlstate == "0A000"
        assert "after changes made before the savepoint" in str(refused.value)
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT count(*) FROM sp_refused").fetchone() == (0,)
