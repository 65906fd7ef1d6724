"""Pure pieces of the wire: binary codec round trips, float text, parameter type inference."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest
import sqlglot

from server.pgwire import codec, params, types


@pytest.mark.parametrize(("value", "oid", "hex_"), [
    (decimal.Decimal("1.50"), types.NUMERIC, "000200000000000200011388"),
    (decimal.Decimal("-12345.678"), types.NUMERIC, "0003000140000003000109291a7c"),
    (decimal.Decimal("0"), types.NUMERIC, "0000000000000000"),
    (dt.date(2000, 1, 2), types.DATE, "00000001"),
    (dt.datetime(2000, 1, 1, 0, 0, 1), types.TIMESTAMP, "00000000000f4240"),
    (dt.timedelta(days=1, hours=2), types.INTERVAL, "00000001ad2748000000000100000000"),
    ([1, None], types.ARRAY_OIDS[types.INT4], "00000001000000010000001700000002000000010000000400000001ffffffff"),
])
def test_binary_encoding_is_postgres_layout(value: object, oid: int, hex_: str) -> None:
    data = codec.encode_binary(value, oid)
    assert data.hex() == hex_
    assert codec.decode_binary(data, oid) == value


@pytest.mark.parametrize(("value", "oid"), [
    (True, types.BOOL), (-5, types.INT2), (2**31 - 1, types.INT4), (-(2**62), types.INT8), (0.1, types.FLOAT8),
    (1.5, types.FLOAT4), (b"\x00\xff", types.BYTEA), (dt.time(1, 2, 3, 4), types.TIME),
    (dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=dt.UTC), types.TIMESTAMPTZ), (uuid.UUID(int=7), types.UUID),
    (decimal.Decimal("100000.0001"), types.NUMERIC), (12345678901234567890, types.NUMERIC),
    (["a", None, "b c"], types.ARRAY_OIDS[types.TEXT]), ([1.5, -2.0], types.ARRAY_OIDS[types.FLOAT8]),
])
def test_binary_round_trip(value: object, oid: int) -> None:
    assert codec.decode_binary(codec.encode_binary(value, oid), oid) == value


@pytest.mark.parametrize(("value", "oid", "text"), [
    (1e15, types.FLOAT8, "1e+15"), (1e14, types.FLOAT8, "100000000000000"), (1e-5, types.FLOAT8, "1e-05"),
    (0.0001, types.FLOAT8, "0.0001"), (0.1, types.FLOAT4, "0.1"), (1e6, types.FLOAT4, "1e+06"),
    (123456.0, types.FLOAT4, "123456"), (-0.0, types.FLOAT8, "-0"),
])
def test_float_text(value: float, oid: int, text: str) -> None:
    assert types.float_text(value, oid) == text


def test_interval_text() -> None:
    assert types.interval_text(dt.timedelta(hours=-2)) == "-02:00:00"
    assert types.interval_text(dt.timedelta(days=-1)) == "-1 days"
    assert types.interval_text(dt.timedelta(days=1, microseconds=500)) == "1 day 00:00:00.0005"


SCHEMA = {"t": {"id": "INTEGER", "name": "VARCHAR", "price": "DECIMAL(10,2)", "at": "TIMESTAMP WITH TIME ZONE"}}


@pytest.mark.parametrize(("sql", "oids"), [
    ("SELECT * FROM t WHERE id = $1", [23]),
    ("SELECT * FROM t x WHERE x.name = $2 AND $1 < x.price", [1700, 25]),
    ("INSERT INTO t VALUES ($1, $2, $3, $4)", [23, 25, 1700, 1184]),
    ("INSERT INTO t (price, id) VALUES ($1, $2)", [1700, 23]),
    ("UPDATE t SET name = $1 WHERE id IN ($2, $3)", [25, 23, 23]),
    ("SELECT $1::int8, CAST($2 AS date) LIMIT $3", [20, 1082, 20]),
    ("SELECT $1", [25]),
])
def test_parameter_types(sql: str, oids: list[int]) -> None:
    tree = sqlglot.parse_one(sql, read="postgres")
    assert params.infer(tree, lambda name: SCHEMA.get(name, {}), []) == oids


def test_client_types_win() -> None:
    tree = sqlglot.parse_one("SELECT * FROM t WHERE id = $1", read="postgres")
    assert params.infer(tree, lambda name: SCHEMA.get(name, {}), [20]) == [20]


def test_parameters_found_by_token_when_text_does_not_parse() -> None:
    assert params.from_tokens("SELECT weird $2::oid[] ~~~ $1") == {1: 1028, 0: 0}
