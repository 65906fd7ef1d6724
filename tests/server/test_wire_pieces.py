"""Statement splitting and the type table (pure)."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest

from server.pgwire import types
from server.statements import Kind, split


def test_split_ignores_semicolons_in_strings_and_comments() -> None:
    stmts = split("SELECT 'a;b'; -- c; d\nSELECT $$x;y$$ ;; /* ; */")
    assert [s.text for s in stmts] == ["SELECT 'a;b'", "-- c; d\nSELECT $$x;y$$"]
    assert split("  ;  -- nothing\n") == []


@pytest.mark.parametrize(("sql", "kind", "tag"), [
    ("SELECT 'begin'", Kind.ROWS, "SELECT"),
    ("begin", Kind.BEGIN, "BEGIN"),
    ("START TRANSACTION", Kind.BEGIN, "START"),
    ("commit", Kind.COMMIT, "COMMIT"),
    ("CREATE OR REPLACE TABLE t (a int)", Kind.OTHER, "CREATE TABLE"),
    ("insert into t values (1)", Kind.DML, "INSERT"),
    ("(SELECT 1)", Kind.ROWS, "("),
    ("SET application_name = 'x'", Kind.SET, "SET"),
    ("WITH x AS (SELECT 1) SELECT * FROM x", Kind.ROWS, "WITH"),
])
def test_kinds(sql: str, kind: Kind, tag: str) -> None:
    (stmt,) = split(sql)
    assert stmt.kind is kind and stmt.tag == tag


@pytest.mark.parametrize(("value", "text"), [
    (True, "t"), (False, "f"), (42, "42"), (1.5, "1.5"), (3.0, "3"), (float("inf"), "Infinity"), (float("nan"), "NaN"),
    (decimal.Decimal("1.50"), "1.50"), (dt.date(2026, 1, 2), "2026-01-02"),
    (dt.datetime(2026, 1, 2, 3, 4, 5), "2026-01-02 03:04:05"),
    (dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "2026-01-02 03:04:05+00"),
    (dt.timedelta(days=3), "3 days"), (dt.timedelta(days=1, hours=2, seconds=3), "1 day 02:00:03"),
    (dt.timedelta(0), "00:00:00"), (b"\x01\xff", "\\x01ff"), ([1, None, 3], "{1,NULL,3}"),
    (["a b", "c,d", 'e"'], '{"a b","c,d","e\\""}'),
    (uuid.UUID("12345678-1234-5678-1234-567812345678"), "12345678-1234-5678-1234-567812345678"),
    ({"a": 1}, '{"a": 1}'),
])
def test_text_output_as_postgres_prints_it(value: object, text: str) -> None:
    assert types.to_text(value) == text


@pytest.mark.parametrize(("duck", "oid"), [
    ("INTEGER", 23), ("BIGINT", 20), ("SMALLINT", 21), ("DOUBLE", 701), ("FLOAT", 700), ("BOOLEAN", 16),
    ("VARCHAR", 25), ("DECIMAL(10,2)", 1700), ("DATE", 1082), ("TIMESTAMP", 1114),
    ("TIMESTAMP WITH TIME ZONE", 1184), ("INTERVAL", 1186), ("UUID", 2950), ("BLOB", 17), ("JSON", 114),
    ("INTEGER[]", 1007), ("VARCHAR[]", 1009), ("STRUCT(a INTEGER)", 114),
])
def test_oids(duck: str, oid: int) -> None:
    assert types.oid_of(duck) == oid


def test_text_array_parameters() -> None:
    assert types.parse_text_param('{a,"b c",NULL,"NULL"}', 1009) == ["a", "b c", None, "NULL"]
    assert types.parse_text_param("{1,2}", 1007) == [1, 2]
