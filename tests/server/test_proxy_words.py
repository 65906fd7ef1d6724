"""Which statements proxy mode takes for semantic: decided by the parse tree, literals and comments aside."""

from __future__ import annotations

import time

import pytest

from semantic_ops.operators import Registry
from server.pgwire.upstream import Target
from server.proxy import Proxy


@pytest.fixture(scope="module")
def proxy() -> Proxy:
    return Proxy(Target.parse("postgresql://u@localhost/db"), Registry.load(None))


@pytest.mark.parametrize(
    ("sql", "semantic"),
    [
        ("SELECT id FROM t WHERE d MEANS 'eco-friendly'", True),
        ("SELECT 1; SELECT id FROM t WHERE NOT d MEANS 'x'", True),
        ("SELECT semantic_matches(d, 'x') FROM t", True),
        ("SELECT * FROM t /* note */ WHERE d MEANS 'it''s'", True),
        ("SELECT means FROM t", False),  # a column named means
        ("SELECT 'x MEANS y' AS means", False),
        ("SELECT $$ a MEANS b $$", False),
        ("SELECT 1 -- WHERE d MEANS 'x'", False),
        ("SELECT * FROM t WHERE a = $1 AND b = $2", False),
    ],
)
def test_semantic_or_plain(proxy: Proxy, sql: str, semantic: bool) -> None:
    assert proxy.is_semantic(sql) is semantic


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id FROM t WHERE d MEANS 'eco-friendly'",
        "select id from t where d means 'x'",
        "SELECT Semantic_Matches(d, 'x') FROM t",
        "SELECT id FROM t WHERE d MEANS 'éco'",
        "SELECT 1; SELECT id FROM t WHERE NOT d mEaNs 'x'",
    ],
)
def test_the_relays_look_at_query_bytes_never_passes_a_semantic_statement(proxy: Proxy, sql: str) -> None:
    # The relay sends a simple Query upstream unread when this look finds nothing: it must find every statement
    # is_semantic takes for semantic.
    assert proxy.is_semantic(sql)
    body = b"Q" + (len(sql.encode()) + 5).to_bytes(4, "big") + sql.encode() + b"\x00"
    assert proxy._any_word_bytes(body, 5, len(body) - 1) is not None


def test_the_relays_look_at_query_bytes_passes_plain_ascii_and_stops_at_any_other_byte(proxy: Proxy) -> None:
    assert proxy._any_word_bytes(b"SELECT 1") is None
    assert proxy._any_word_bytes(b"SELECT id, total FROM orders WHERE id = 7") is None
    assert proxy._any_word_bytes("SELECT 'café'".encode()) is not None  # decoded and looked at closely


def test_a_bulk_insert_mentioning_the_word_is_looked_at_quickly(proxy: Proxy) -> None:
    sql = "INSERT INTO t VALUES " + ",".join(f"({i}, 'this means nothing')" for i in range(20_000))
    started = time.perf_counter()
    assert not proxy.is_semantic(sql)
    assert time.perf_counter() - started < 1.0  # the tokenizer would take seconds on these 600 kB


def test_refused_statements_become_stand_ins_that_fail_upstream(proxy: Proxy) -> None:
    # A Parse under a name no client uses: a Parse that fails leaves no statement behind.
    p = proxy.stand_in_parse("pipeline")
    assert p == proxy.marker.encode() + b"\x00" + f"SELECT {proxy.marker}_pipeline()".encode() + b"\x00\x00\x00"
    assert proxy.stand_in("transaction") == f"SELECT {proxy.marker}_transaction()".encode()
    assert b"in a Sync of its own" in proxy._refusals[b"pipeline"]


def test_without_the_attached_upstream_every_semantic_statement_is_refused_with_the_reason() -> None:
    off = Proxy(Target.parse("postgresql://u@localhost/db"), Registry.load(None), semantic_off="no scanner")
    assert off.stand_in_parse("off") == off.marker.encode() + b"\x00" + off.stand_in("off") + b"\x00\x00\x00"
    assert b"not available: no scanner" in off._refusals[b"off"]
