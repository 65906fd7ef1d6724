"""pg8000.native against meansql and PostgreSQL: parameters (sent as unknown-typed text), types, errors."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterator
from typing import Any

import pg8000.native
import pytest

from tests.clients.conftest import Target

UTC = dt.UTC

VALUES: list[tuple[str, Any]] = [
    ("smallint", 12),
    ("integer", -5),
    ("bigint", 2**40),
    ("numeric(10,2)", decimal.Decimal("3.10")),
    ("double precision", 2.5e-7),
    ("real", 0.25),
    ("boolean", True),
    ("text", "it's \"quoted\""),
    ("date", dt.date(1999, 12, 31)),
    ("time", dt.time(23, 59, 59)),
    ("timestamp", dt.datetime(2024, 5, 6, 7, 8, 9, 10)),
    ("timestamptz", dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
    ("interval", dt.timedelta(days=3, minutes=4)),
    ("uuid", uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
    ("bytea", b"\x00bin\xff"),
    ("integer[]", [3, None, 4]),
    ("text[]", ["x,y", "NULL", None]),
]


@pytest.fixture()
def conn(target: Target) -> Iterator[pg8000.native.Connection]:
    c = pg8000.native.Connection(user=target.user, host=target.host, port=target.port, database=target.dbname)
    yield c
    c.close()


@pytest.mark.parametrize(("sqltype", "value"), VALUES, ids=[v[0] for v in VALUES])
def test_types_round_trip(conn: pg8000.native.Connection, table_name: str, sqltype: str, value: Any) -> None:
    conn.run(f"DROP TABLE IF EXISTS {table_name}")
    conn.run(f"CREATE TABLE {table_name} (id integer, v {sqltype})")
    conn.run(f"INSERT INTO {table_name} VALUES (:id, :v), (2, NULL)", id=1, v=value)
    assert conn.row_count == 2
    rows = conn.run(f"SELECT v FROM {table_name} WHERE id = :id OR id = :other ORDER BY id", id=1, other=2)
    assert rows == [[value], [None]]


def test_parameters_in_expressions(conn: pg8000.native.Connection, table_name: str) -> None:
    conn.run(f"DROP TABLE IF EXISTS {table_name}")
    conn.run(f"CREATE TABLE {table_name} (id integer, name text, price numeric(8,2))")
    for i in range(1, 6):
        conn.run(f"INSERT INTO {table_name} (id, name, price) VALUES (:i, :n, :p)", i=i, n=f"n{i}",
                 p=decimal.Decimal(i) * decimal.Decimal("1.25"))
    rows = conn.run(f"SELECT id, price * 2 FROM {table_name} WHERE price > :low AND name <> :skip ORDER BY id",
                    low=decimal.Decimal("2"), skip="n4")
    assert rows == [[2, decimal.Decimal("5.00")], [3, decimal.Decimal("7.50")], [5, decimal.Decimal("12.50")]]
    assert conn.run(f"UPDATE {table_name} SET name = :n WHERE id BETWEEN :a AND :b", n="z", a=2, b=3) is None
    assert conn.row_count == 2
    assert conn.run(f"SELECT count(*) FROM {table_name} WHERE name = :n", n="z") == [[2]]
    assert conn.run("SELECT :a::int + :b::int, :c::text", a=1, b=2, c="c") == [[3, "c"]]


def test_columns_describe_types(conn: pg8000.native.Connection) -> None:
    conn.run("SELECT 1::int4 AS a, 'x'::text AS b, 1.5::float8 AS c, DATE '2024-01-01' AS d")
    assert [(c["name"], c["type_oid"]) for c in conn.columns or []] == [("a", 23), ("b", 25), ("c", 701), ("d", 1082)]


@pytest.mark.parametrize(("query", "code"), [
    ("SELECT FROM WHERE", "42601"),
    ("SELECT * FROM no_such_table", "42P01"),
    ("SELECT no_such FROM (SELECT 1 AS a) s", "42703"),
    ("SELECT 10 / :zero::int", "22012"),
    ("SELECT 'twelve'::int", "22P02"),
])
def test_errors(conn: pg8000.native.Connection, query: str, code: str) -> None:
    with pytest.raises(pg8000.native.DatabaseError) as info:
        conn.run(query, **({"zero": 0} if ":zero" in query else {}))
    fields = info.value.args[0]
    assert fields["S"] == "ERROR"
    assert fields["C"] == code
    assert fields["M"]
    assert conn.run("SELECT 1") == [[1]]


def test_failed_transaction_and_rollback(conn: pg8000.native.Connection, table_name: str) -> None:
    conn.run(f"DROP TABLE IF EXISTS {table_name}")
    conn.run(f"CREATE TABLE {table_name} (id integer primary key)")
    conn.run("START TRANSACTION")
    conn.run(f"INSERT INTO {table_name} VALUES (:i)", i=1)
    with pytest.raises(pg8000.native.DatabaseError) as info:
        conn.run(f"INSERT INTO {table_name} VALUES (:i)", i=1)
    assert info.value.args[0]["C"] == "23505"
    with pytest.raises(pg8000.native.DatabaseError) as info:
        conn.run("SELECT :x::int", x=1)
    assert info.value.args[0]["C"] == "25P02"
    conn.run("ROLLBACK")
    assert conn.run(f"SELECT count(*) FROM {table_name}") == [[0]]


def test_parameter_status_tracked(conn: pg8000.native.Connection) -> None:
    assert conn.parameter_statuses["client_encoding"] == "UTF8"
    conn.run("SET application_name TO 'pg8000-check'")
    assert conn.parameter_statuses["application_name"] == "pg8000-check"
    assert conn.run("SHOW application_name") == [["pg8000-check"]]
