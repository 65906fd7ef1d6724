"""Raw message sequences sent to meansql and to PostgreSQL 15 get the same answers.

Compared: backend message types and order, SQLSTATEs and severities, command
tags, column counts, CopyData payloads and ReadyForQuery status bytes. Not
compared: message texts, ParameterStatus, BackendKeyData.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from tests.clients.conftest import (  # noqa: F401  (session fixtures shared with the client matrix)
    PostgresServer,
    client_provider,
    meansql_server,
    postgres,
)
from tests.conftest import ServerProcess
from tests.fix_wire import (
    RawConnection,
    bind,
    close,
    copy_data,
    copy_done,
    copy_fail,
    describe,
    execute,
    flush,
    msg,
    parse,
    query,
    summary,
    sync,
    terminate,
)

INT4 = 23
MANY = 65_535

# id, messages, ReadyForQuery count to wait for (None: until the server closes)
CASES: list[tuple[str, list[bytes], int | None]] = [
    ("simple_select", [query("SELECT 1 AS x")], 1),
    ("simple_empty", [query("")], 1),
    ("simple_only_semicolons", [query(" ; ; ")], 1),
    ("simple_multi_error_in_middle",
     [query("SELECT 1; SELECT * FROM parity_missing; SELECT 2")], 1),
    ("simple_invalid_utf8", [msg(b"Q", b"SELECT '\xff'\x00"), query("SELECT 1")], 2),
    ("simple_begin_in_string", [query("SELECT 'BEGIN; COMMIT'")], 1),
    ("simple_begin_then_commit", [query("BEGIN; SELECT 1"), query("COMMIT")], 2),
    ("aborted_txn_simple",
     [query("BEGIN"), query("SELECT * FROM parity_missing"), query("SELECT 1"), query("COMMIT"),
      query("SELECT 1")], 5),
    ("aborted_txn_in_one_query", [query("BEGIN; SELECT * FROM parity_missing; SELECT 1"), query("ROLLBACK")], 2),
    ("aborted_txn_extended",
     [query("BEGIN"), query("SELECT * FROM parity_missing"),
      parse("SELECT 1"), sync(),
      bind(), sync(),
      parse("SELECT 1", "s_ok"), sync(),
      query("ROLLBACK"), query("SELECT 1")], 7),
    ("aborted_txn_rollback_via_extended",
     [query("BEGIN"), query("SELECT * FROM parity_missing"),
      parse("ROLLBACK"), bind(), execute(), sync(), query("SELECT 1")], 4),
    ("pipeline_abort",
     [parse("SELECT * FROM parity_missing"), bind(), execute(),
      parse("SELECT 1"), bind(), execute(), sync(),
      parse("SELECT 2"), bind(), describe(b"P"), execute(), sync()], 2),
    ("pipeline_error_then_two_syncs", [parse("SELEC 1"), sync(), sync()], 2),
    ("extended_empty_query", [parse(""), bind(), describe(b"P"), execute(), sync()], 1),
    ("extended_select", [parse("SELECT 1 AS x, 'a' AS y"), bind(), describe(b"P"), execute(), sync()], 1),
    ("extended_describe_statement",
     [parse("SELECT $1::int AS x", "s1", [INT4]), describe(b"S", "s1"), sync()], 1),
    ("extended_describe_no_data", [parse("SET application_name = 'x'", "s1"), describe(b"S", "s1"), sync()], 1),
    ("bind_without_parse", [bind("", "nope"), execute(), sync()], 1),
    ("execute_unknown_portal", [execute("nope"), sync()], 1),
    ("describe_unknown_statement", [describe(b"S", "nope"), sync()], 1),
    ("describe_unknown_portal", [describe(b"P", "nope"), sync()], 1),
    ("close_unknown_statement", [close(b"S", "nope"), sync()], 1),
    ("close_unknown_portal", [close(b"P", "nope"), sync()], 1),
    ("cursor_declared_is_a_portal",
     [query("BEGIN"), query("DECLARE pc CURSOR FOR SELECT 1 AS x, 'a' AS y"), describe(b"P", "pc"), sync(),
      parse("FETCH 1 FROM pc"), bind(), describe(b"P"), execute(), sync(),
      close(b"P", "pc"), sync(), query("FETCH pc"), query("ROLLBACK")], 7),
    ("cursor_fetch_unknown_extended", [parse("FETCH 1 FROM nope"), describe(b"S"), bind(), execute(), sync()], 1),
    ("cursor_declare_outside_transaction", [query("DECLARE c CURSOR FOR SELECT 1"), query("SELECT 1")], 2),
    ("savepoint_rollback_to_after_error",
     [query("BEGIN"), query("SAVEPOINT a"), query("SELECT * FROM parity_missing"), query("ROLLBACK TO SAVEPOINT a"),
      query("SELECT 1"), query("COMMIT")], 6),
    ("sync_alone", [sync()], 1),
    ("flush_then_sync", [parse("SELECT 1"), flush(), bind(), execute(), flush(), sync()], 1),
    ("parse_two_commands", [parse("SELECT 1; SELECT 2"), sync()], 1),
    ("parse_duplicate_name", [parse("SELECT 1", "dup"), parse("SELECT 2", "dup"), sync()], 1),
    ("parse_reuse_after_close", [parse("SELECT 1", "c1"), close(b"S", "c1"), parse("SELECT 2", "c1"), sync()], 1),
    ("bind_wrong_parameter_count", [parse("SELECT $1::int", "p1", [INT4]), bind("", "p1"), sync()], 1),
    ("execute_with_row_limit",
     [parse("SELECT x FROM (VALUES (1), (2), (3)) v(x) ORDER BY x"), bind(), execute("", 2), execute("", 2),
      sync()], 1),
    ("unnamed_portal_gone_after_sync", [parse("SELECT 1"), bind(), sync(), execute(), sync()], 2),
    ("named_portal_across_statements",
     [parse("SELECT 1", "s1"), bind("p1", "s1"), execute("p1"), sync(), bind("", "s1"), execute(), sync()], 2),
    ("parameters_65535",
     [parse("SELECT $1::int + $65535::int", "big", [INT4] * MANY), bind("", "big", [b"1"] * MANY), execute(),
      sync()], 1),
    ("copy_out_simple", [query("COPY (SELECT 1 AS a, 'x y' AS b) TO STDOUT")], 1),
    ("copy_out_csv_header", [query("COPY (SELECT 1 AS a, 'x,y' AS b) TO STDOUT (FORMAT csv, HEADER)")], 1),
    ("copy_in_simple",
     [query("BEGIN"), query("COPY parity_t FROM STDIN"), copy_data(b"1\tone\n2\t\\N\n"), copy_done(),
      query("ROLLBACK")], 3),
    ("copy_in_fail",
     [query("COPY parity_t FROM STDIN"), copy_data(b"1\tone\n"), copy_fail("stop"), query("SELECT 1")], 2),
    ("copy_in_bad_row",
     [query("COPY parity_t FROM STDIN"), copy_data(b"x\tone\n"), copy_done(), query("SELECT 1")], 2),
    ("copy_in_extended",
     [query("BEGIN"), parse("COPY parity_t FROM STDIN"), bind(), execute(), copy_data(b"3\tthree\n"),
      copy_done(), sync(), query("ROLLBACK")], 3),
    ("copy_in_query_during_copy",
     [query("COPY parity_t FROM STDIN"), query("SELECT 1"), query("SELECT 2")], 2),
    ("copy_in_flush_during_copy",
     [query("BEGIN"), query("COPY parity_t FROM STDIN"), flush(), copy_data(b"4\tfour\n"), copy_done(),
      query("ROLLBACK")], 3),
    ("copy_in_sync_during_copy",
     [query("BEGIN"), query("COPY parity_t FROM STDIN"), sync(), copy_data(b"5\tfive\n"), copy_done(),
      query("ROLLBACK")], 3),
    ("copy_missing_table", [query("COPY parity_missing FROM STDIN"), query("SELECT 1")], 2),
    ("copy_messages_outside_copy", [copy_data(b"1\tx\n"), copy_done(), copy_fail("x"), sync()], 1),
    ("terminate", [terminate()], None),
    ("unknown_message_type", [msg(b"Y", b"")], None),
    ("length_below_four", [b"Q\x00\x00\x00\x03"], None),
    ("negative_length", [b"Q\xff\xff\xff\xfe"], None),
    ("oversized_sync", [b"S" + struct.pack("!i", 20_000)], None),
]


@pytest.fixture(scope="module")
def servers(meansql_server: ServerProcess, postgres: PostgresServer) -> Iterator[dict[str, tuple[int, str]]]:  # noqa: F811
    import psycopg

    found = {"meansql": (meansql_server.port, "default"), "postgres": (postgres.port, "postgres")}
    for port, db in found.values():
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/{db}", autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS parity_t")
            conn.execute("CREATE TABLE parity_t (a INT, b TEXT)")
    yield found


def _run(port: int, db: str, messages: list[bytes], ready: int | None) -> list[tuple[str, ...]]:
    conn = RawConnection("127.0.0.1", port)
    try:
        conn.login(database=db)
        conn.send(*messages)
        got = conn.until_closed() if ready is None else conn.until_ready(ready)
    finally:
        conn.close()
    return summary(got)


def test_enough_sequences() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize(("messages", "ready"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_same_answers_as_postgres(servers: dict[str, tuple[int, str]], messages: list[bytes],
                                  ready: int | None) -> None:
    want = _run(*servers["postgres"], messages, ready)
    got = _run(*servers["meansql"], messages, ready)
    assert got == want
