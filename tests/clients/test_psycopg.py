"""psycopg 3 against meansql and PostgreSQL: simple and extended protocol, types, transactions, errors."""

from __future__ import annotations

import datetime as dt
import decimal
import struct
import time
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.types.json import Json, Jsonb

from tests.clients.conftest import Target
from tests.conftest import ServerProcess
from tests.fake_provider import FakeProvider

UTC = dt.UTC

# (SQL type, Python value, the text Postgres prints for it)
TYPED_VALUES: list[tuple[str, Any, str]] = [
    ("smallint", 7, "7"),
    ("integer", -2147483648, "-2147483648"),
    ("bigint", 9007199254740993, "9007199254740993"),
    ("numeric(10,2)", decimal.Decimal("1234.50"), "1234.50"),
    ("double precision", 0.1, "0.1"),
    ("real", 1.5, "1.5"),
    ("boolean", True, "t"),
    ("text", "héllo, \"world\"", "héllo, \"world\""),
    ("date", dt.date(2024, 2, 29), "2024-02-29"),
    ("time", dt.time(12, 34, 56, 500000), "12:34:56.5"),
    ("timestamp", dt.datetime(2024, 1, 2, 3, 4, 5, 123000), "2024-01-02 03:04:05.123"),
    ("timestamptz", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02 03:04:05+00"),
    ("interval", dt.timedelta(days=1, hours=2), "1 day 02:00:00"),
    ("uuid", uuid.UUID("12345678-1234-5678-1234-567812345678"), "12345678-1234-5678-1234-567812345678"),
    ("bytea", b"\x00\x01\xfe", "\\x0001fe"),
    ("integer[]", [1, 2, None], "{1,2,NULL}"),
    ("text[]", ["a b", None, "x"], '{"a b",NULL,x}'),
    ("double precision[]", [1.5, -2.0], "{1.5,-2}"),
]


def _fresh(conn: psycopg.Connection[Any], table: str, columns: str) -> None:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
    conn.execute(sql.SQL("CREATE TABLE {} (" + columns + ")").format(sql.Identifier(table)))


@pytest.mark.parametrize(("sqltype", "value", "text"), TYPED_VALUES, ids=[t[0] for t in TYPED_VALUES])
def test_text_output_as_postgres_prints_it(target: Target, table_name: str, sqltype: str, value: Any,
                                           text: str) -> None:
    with target.connect() as conn:
        _fresh(conn, table_name, f"v {sqltype}")
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(sql.Identifier(table_name)), (value,))
        # The bytes the server sends, before psycopg reads them.
        res = conn.pgconn.exec_(f"SELECT v FROM {table_name}".encode())
        assert res.get_value(0, 0) == text.encode("utf-8")


@pytest.mark.parametrize("rows", [1, 200], ids=["few-rows", "bulk"])
def test_infinite_dates_and_timestamps(target: Target, table_name: str, rows: int) -> None:
    with target.connect() as conn:
        _fresh(conn, table_name, "id integer, d date, t timestamp")
        conn.execute(sql.SQL("INSERT INTO {} SELECT g, CASE g %% 3 WHEN 0 THEN 'infinity'::date WHEN 1 THEN '-infinity'::date "
                             "ELSE '2024-02-29'::date END, CASE g %% 3 WHEN 0 THEN '-infinity'::timestamp WHEN 1 THEN "
                             "'infinity'::timestamp ELSE '2024-01-02 03:04:05'::timestamp END "
                             "FROM generate_series(0, %s) AS s(g)").format(sql.Identifier(table_name)), (rows - 1,))
        query = f"SELECT d, t FROM {table_name} ORDER BY id".encode()
        for _ in range(2):  # the second run of a text knows how many rows it returns
            res = conn.pgconn.exec_(query)
            got = {tuple(res.get_value(i, j) for j in range(2)) for i in range(res.ntuples)}
            assert res.ntuples == rows
            assert got == {(b"infinity", b"-infinity"), (b"-infinity", b"infinity"), (b"2024-02-29", b"2024-01-02 03:04:05")} \
                if rows > 2 else got == {(b"infinity", b"-infinity")}
        res = conn.pgconn.exec_params(query, [], result_format=1)
        assert (res.get_value(0, 0), res.get_value(0, 1)) == (struct.pack("!i", 2**31 - 1), struct.pack("!q", -(2**63)))


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
@pytest.mark.parametrize(("sqltype", "value", "text"), TYPED_VALUES, ids=[t[0] for t in TYPED_VALUES])
def test_types_round_trip(target: Target, table_name: str, sqltype: str, value: Any, text: str,
                          binary: bool) -> None:
    with target.connect() as conn:
        _fresh(conn, table_name, f"id integer, v {sqltype}")
        with conn.cursor(binary=binary) as cur:
            cur.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s), (2, NULL)").format(sql.Identifier(table_name)),
                        (1, value))
            cur.execute(sql.SQL("SELECT v FROM {} ORDER BY id").format(sql.Identifier(table_name)))
            rows = cur.fetchall()
        assert rows == [(value,), (None,)]
        assert isinstance(rows[0][0], type(value))


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_json_and_jsonb(target: Target, table_name: str, binary: bool) -> None:
    doc = {"a": [1, 2, None], "b": "x"}
    with target.connect() as conn:
        _fresh(conn, table_name, "j json, b jsonb")
        with conn.cursor(binary=binary) as cur:
            cur.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(sql.Identifier(table_name)),
                        (Json(doc), Jsonb(doc)))
            cur.execute(sql.SQL("SELECT j, b FROM {}").format(sql.Identifier(table_name)))
            assert cur.fetchall() == [(doc, doc)]


def test_row_description_oids(target: Target) -> None:
    with target.connect() as conn:
        cur = conn.execute(
            "SELECT 1::int2, 1::int4, 1::int8, 1.5::numeric(10,2), 1::float4, 1::float8, true, 'x'::text, "
            "DATE '2024-01-01', TIME '01:02:03', TIMESTAMP '2024-01-01', TIMESTAMPTZ '2024-01-01 00:00:00+00', "
            "INTERVAL '1 day', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, '\\x00'::bytea, ARRAY[1, 2], "
            "ARRAY['a'], ARRAY[1.5::float8]")
        oids = [d.type_code for d in cur.description or []]
    assert oids == [21, 23, 20, 1700, 700, 701, 16, 25, 1082, 1083, 1114, 1184, 1186, 2950, 17, 1007, 1009, 1022]


def test_float_and_numeric_text(target: Target) -> None:
    with target.connect() as conn:
        res = conn.pgconn.exec_(
            b"SELECT 1e15::float8, 0.1::float4, 1.0::numeric(10,3), -0.00001::float8, 123456789.125::float8, "
            b"'NaN'::float8, 100000::float4, 1e6::float4")
        row = [res.get_value(0, i) for i in range(res.nfields)]
    assert row == [b"1e+15", b"0.1", b"1.000", b"-1e-05", b"123456789.125", b"NaN", b"100000", b"1e+06"]


def test_extended_query_with_parameters(target: Target, table_name: str) -> None:
    with target.connect() as conn:
        _fresh(conn, table_name, "id integer primary key, name text, price numeric(10,2)")
        t = sql.Identifier(table_name)
        with conn.cursor() as cur:
            cur.executemany(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(t),
                            [(i, f"item {i}", decimal.Decimal(i) / 4) for i in range(1, 11)])
            assert cur.rowcount == 10
            cur.execute(sql.SQL("SELECT name, price FROM {} WHERE id = %s").format(t), (3,))
            assert cur.fetchall() == [("item 3", decimal.Decimal("0.75"))]
            cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE id > %s AND name <> %s").format(t), (5, "item 9"))
            assert cur.fetchone() == (4,)
            cur.execute(sql.SQL("UPDATE {} SET price = %s WHERE id <= %s").format(t), (decimal.Decimal("9.99"), 2))
            assert cur.rowcount == 2
            assert cur.statusmessage == "UPDATE 2"
            cur.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(t), (10,))
            assert cur.statusmessage == "DELETE 1"


@pytest.mark.parametrize("prepare", [None, True], ids=["unprepared", "prepared"])
def test_insert_runs_exactly_once(target: Target, table_name: str, prepare: bool | None) -> None:
    with target.connect() as conn:
        _fresh(conn, table_name, "id integer, name text")
        t = sql.Identifier(table_name)
        for i in range(3):
            conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(t), (i, "x"), prepare=prepare)
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t)).fetchone()
    assert row == (3,)


def test_prepared_statement_reused(target: Target) -> None:
    with target.connect() as conn:
        conn.prepare_threshold = 0
        for i in range(5):
            assert conn.execute("SELECT %s::int * 2, %s::text", (i, f"v{i}")).fetchone() == (i * 2, f"v{i}")


def test_transactions_and_status(target: Target, table_name: str) -> None:
    with target.connect() as conn:
        _fresh(conn, table_name, "id integer")
        t = sql.Identifier(table_name)
        conn.autocommit = False
        info = conn.info
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(t))
        assert info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.rollback()
        assert info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        conn.execute(sql.SQL("INSERT INTO {} VALUES (2)").format(t))
        conn.commit()
        assert conn.execute(sql.SQL("SELECT id FROM {}").format(t)).fetchall() == [(2,)]


@pytest.mark.parametrize("prepare", [None, True], ids=["unprepared", "prepared"])
def test_failed_transaction_until_rollback(target: Target, prepare: bool | None) -> None:
    with psycopg.connect(target.url) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table_here")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        for _ in range(2):
            with pytest.raises(errors.InFailedSqlTransaction):
                conn.execute("SELECT %s::int", (1,), prepare=prepare)
            with pytest.raises(errors.InFailedSqlTransaction):
                conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT %s::int", (5,), prepare=prepare).fetchone() == (5,)


def test_commit_of_failed_transaction_rolls_back(target: Target) -> None:
    with target.connect() as conn:
        conn.execute("BEGIN")
        with pytest.raises(errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        cur = conn.execute("COMMIT")
        assert cur.statusmessage == "ROLLBACK"
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_begin_inside_a_string_is_not_a_transaction(target: Target) -> None:
    with target.connect() as conn:
        assert conn.execute("SELECT 'BEGIN'").fetchone() == ("BEGIN",)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


@pytest.mark.parametrize(("query", "error", "message"), [
    ("SELEC 1", errors.SyntaxError, 'syntax error at or near "SELEC"'),
    ("SELECT * FROM no_such_table", errors.UndefinedTable, 'relation "no_such_table" does not exist'),
    ("SELECT no_such_column FROM (SELECT 1 AS a) s", errors.UndefinedColumn,
     'column "no_such_column" does not exist'),
    ("SELECT 1 / 0", errors.DivisionByZero, "division by zero"),
    ("SELECT 7 % 0", errors.DivisionByZero, "division by zero"),
    ("SELECT 1.5 / 0", errors.DivisionByZero, "division by zero"),
    ("SELECT 'abc'::integer", errors.InvalidTextRepresentation, 'invalid input syntax for type integer: "abc"'),
])
def test_errors_have_postgres_sqlstates(target: Target, query: str, error: type[Exception], message: str) -> None:
    with target.connect() as conn:
        with pytest.raises(error) as info:
            conn.execute(query)
        assert info.value.diag.severity == "ERROR"
        assert info.value.diag.message_primary == message
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_syntax_error_position(target: Target) -> None:
    with target.connect() as conn:
        with pytest.raises(errors.SyntaxError) as info:
            conn.execute("SELECT 1 FROM")
        assert info.value.diag.statement_position is not None
        with pytest.raises(errors.SyntaxError) as info:
            conn.execute("SELEC 1")
        assert info.value.diag.statement_position == "1"


def test_integer_division_truncates(target: Target) -> None:
    with target.connect() as conn:
        assert conn.execute("SELECT 7 / 2, -7 / 2, 7 % 3").fetchone() == (3, -3, 1)


def test_constraint_violations(target: Target, table_name: str) -> None:
    with target.connect() as conn:
        _fresh(conn, table_name, "id integer primary key, name text not null")
        t = sql.Identifier(table_name)
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(t), (1, "a"))
        with pytest.raises(errors.UniqueViolation) as unique:
            conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(t), (1, "b"))
        assert (unique.value.diag.message_primary or "").startswith("duplicate key value violates unique constraint")
        assert unique.value.diag.message_detail == "Key (id)=(1) already exists."
        with pytest.raises(errors.NotNullViolation) as notnull:
            conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(t), (2, None))
        assert notnull.value.diag.message_primary == \
            f'null value in column "name" of relation "{table_name}" violates not-null constraint'


def test_statement_timeout_cancels(target: Target) -> None:
    with target.connect() as conn:
        conn.execute("SET statement_timeout = '100ms'")
        with pytest.raises(errors.QueryCanceled):
            conn.execute("SELECT count(*) FROM generate_series(1, 100000000000) AS a(x), generate_series(1, 10) b(y)")
        conn.execute("RESET statement_timeout")
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)


def test_notices_reach_the_client(target: Target) -> None:
    with target.connect() as conn:
        seen: list[tuple[str | None, str | None]] = []
        conn.add_notice_handler(lambda d: seen.append((d.severity, d.sqlstate)))
        conn.execute("COMMIT")
    assert seen == [("WARNING", "25P01")]


def test_set_show_and_reported_parameters(target: Target) -> None:
    with target.connect() as conn:
        info = conn.info
        assert int(info.parameter_status("server_version").split(".")[0]) >= 15  # type: ignore[union-attr]
        for name in ("server_encoding", "client_encoding", "DateStyle", "TimeZone", "integer_datetimes",
                     "standard_conforming_strings"):
            assert info.parameter_status(name), name
        conn.execute("SET application_name = 'reporting'")
        assert info.parameter_status("application_name") == "reporting"
        conn.execute("SET TimeZone = 'America/New_York'")
        assert info.parameter_status("TimeZone") == "America/New_York"
        conn.execute("SET DateStyle = 'ISO'")
        assert info.parameter_status("DateStyle") == "ISO, MDY"
        cur = conn.execute("SHOW TimeZone")
        assert cur.description is not None and cur.description[0].name == "TimeZone"
        assert cur.fetchone() == ("America/New_York",)
        conn.execute("SET statement_timeout = 5000")
        assert conn.execute("SHOW statement_timeout").fetchone() == ("5s",)
        conn.execute("SET search_path TO public")
        assert conn.execute("SELECT current_setting('search_path')").fetchone() == ("public",)
        assert conn.execute("SELECT set_config('application_name', 'other', false)").fetchone() == ("other",)
        assert conn.execute("SHOW application_name").fetchone() == ("other",)
        assert info.parameter_status("application_name") == "other"
        conn.execute("RESET application_name")
        assert conn.execute("SHOW application_name").fetchone() == ("",)
        with pytest.raises(errors.InvalidParameterValue):
            conn.execute("SET extra_float_digits = 'lots'")
        with pytest.raises(errors.CantChangeRuntimeParam):
            conn.execute("SET server_version = '1'")


def test_timestamptz_follows_session_time_zone(target: Target) -> None:
    with target.connect() as conn:
        conn.execute("SET TimeZone = 'Asia/Kolkata'")
        res = conn.pgconn.exec_(b"SELECT TIMESTAMPTZ '2024-01-02 00:00:00+00'")
    assert res.get_value(0, 0) == b"2024-01-02 05:30:00+05:30"


def test_extra_float_digits_zero(target: Target) -> None:
    with target.connect() as conn:
        conn.execute("SET extra_float_digits = 0")
        row = conn.execute("SELECT 0.1::float8 + 0.2::float8").fetchone()
    assert row == (0.3,)


def test_means_query_calls_the_model_once_per_value(meansql_server: ServerProcess,
                                                    client_provider: FakeProvider) -> None:
    """Describe (statement and portal) never runs a statement: each text is judged once, not twice."""
    with meansql_server.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS means_once")
        conn.execute("CREATE TABLE means_once (id integer, description text)")
        conn.execute("INSERT INTO means_once VALUES (1, 'bamboo toothbrush'), (2, 'plastic fork')")
        conn.execute("SET meansql.cache = off")
        for prepare in (False, True):
            client_provider.reset()
            rows = conn.execute("SELECT id FROM means_once WHERE description MEANS %s AND id > %s ORDER BY id",
                                ("eco-friendly", 0), prepare=prepare).fetchall()
            assert rows == [(1,)]
            assert len(client_provider.requests) == 2  # one call per row, none for Describe


def test_idle_in_transaction_session_timeout(target: Target) -> None:
    with target.connect() as conn:
        conn.execute("SET idle_in_transaction_session_timeout = '300ms'")
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("300ms",)
        time.sleep(0.6)  # idle outside a transaction: no limit
        assert conn.execute("SELECT 1").fetchone() == (1,)
        conn.execute("BEGIN")
        conn.execute("SELECT 1")
        time.sleep(1.0)
        with pytest.raises(errors.IdleInTransactionSessionTimeout) as caught:
            conn.execute("SELECT 2")
        assert caught.value.sqlstate == "25P03"
        assert caught.value.diag.severity == "FATAL"
        assert str(caught.value) == "terminating connection due to idle-in-transaction timeout"
        assert conn.closed
    with target.connect() as other:  # the server goes on
        assert other.execute("SELECT 3").fetchone() == (3,)
