"""COPY FROM STDIN and COPY TO STDOUT from psql and psycopg, against meansql and PostgreSQL alike."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg import pq

from tests.clients.conftest import Target
from tests.conftest import psql

ROWS = [
    (1, "plain"), (2, None), (3, ""), (4, "has,comma"), (5, 'has "quote"'), (6, "multi\nline"),
    (7, "unicodé ☃ 日本"), (8, "tab\there"), (9, "back\\slash"), (10, "\\N"),
]

CSV = (
    'id,t\n1,plain\n2,\n3,""\n4,"has,comma"\n5,"has ""quote"""\n6,"multi\nline"\n7,unicodé ☃ 日本\n'
    "8,tab\there\n9,back\\slash\n10,\\N\n"
)
TEXT = (
    "1\tplain\n2\t\\N\n3\t\n4\thas,comma\n5\thas \"quote\"\n6\tmulti\\nline\n7\tunicodé ☃ 日本\n"
    "8\ttab\\there\n9\tback\\\\slash\n10\t\\\\N\n"
)


def _rows(target: Target, table: str) -> list[tuple[object, ...]]:
    with target.connect() as conn:
        return conn.execute(f"SELECT id, t FROM {table} ORDER BY id").fetchall()


def _create(target: Target, table: str) -> None:
    with target.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (id INT, t TEXT)")


@pytest.mark.parametrize(("fmt", "data", "options"), [
    ("csv", CSV, "csv header"),
    ("text", TEXT, ""),
])
def test_psql_copy_round_trip(target: Target, table_name: str, tmp_path: Path, fmt: str, data: str,
                              options: str) -> None:
    _create(target, table_name)
    src, out = tmp_path / f"in.{fmt}", tmp_path / f"out.{fmt}"
    src.write_text(data, encoding="utf-8")
    loaded = psql(target.url, f"\\copy {table_name} from '{src}' {options}")
    assert loaded.stdout.strip() == "COPY 10"
    assert _rows(target, table_name) == ROWS
    sent = psql(target.url, f"\\copy (SELECT id, t FROM {table_name} ORDER BY id) to '{out}' {options}")
    assert sent.stdout.strip() == "COPY 10"
    assert out.read_text(encoding="utf-8") == data


def test_psql_copy_options(target: Target, table_name: str, tmp_path: Path) -> None:
    _create(target, table_name)
    src, out = tmp_path / "in.psv", tmp_path / "out.psv"
    src.write_text("1|NIL\n2|a|b\n", encoding="utf-8")
    bad = psql(target.url, f"\\copy {table_name} from '{src}' with (format csv, delimiter '|', null 'NIL')",
               check=False)
    assert "extra data after last expected column" in bad.stderr
    assert _rows(target, table_name) == []  # the bad second line loads nothing
    src.write_text("1|NIL\n2|\"a|b\"\n3|\n", encoding="utf-8")
    psql(target.url, f"\\copy {table_name} (id, t) from '{src}' with (format csv, delimiter '|', null 'NIL')")
    assert _rows(target, table_name) == [(1, None), (2, "a|b"), (3, "")]
    psql(target.url, f"\\copy {table_name} to '{out}' with (format csv, delimiter ';', null 'NIL', header)")
    assert sorted(out.read_text().splitlines()) == sorted(["id;t", "1;NIL", "2;a|b", '3;'])
    psql(target.url, f"\\copy (select t from {table_name} order by id) to '{out}' (format text, null '-')")
    assert out.read_text() == "-\na|b\n\n"


def test_psycopg_copy_in_rows_and_blocks(target: Target, table_name: str) -> None:
    _create(target, table_name)
    with target.connect() as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {table_name} (id, t) FROM STDIN") as cp:
            for row in ROWS[:5]:
                cp.write_row(row)
        assert cur.rowcount == 5
        with cur.copy(f"COPY {table_name} FROM STDIN WITH (FORMAT csv)") as cp:
            block = CSV.split("\n", 6)[6].encode("utf-8")  # rows 6.. as raw CSV, split mid-row
            cp.write(block[:7])
            cp.write(block[7:])
        assert cur.rowcount == 5
    assert _rows(target, table_name) == ROWS


def test_psycopg_copy_out(target: Target, table_name: str) -> None:
    _create(target, table_name)
    with target.connect() as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {table_name} FROM STDIN") as cp:
            for row in ROWS:
                cp.write_row(row)
        with cur.copy(f"COPY (SELECT id, t FROM {table_name} ORDER BY id) TO STDOUT") as cp:
            cp.set_types(["int4", "text"])
            assert list(cp.rows()) == ROWS
        with cur.copy(f"COPY (SELECT id, t FROM {table_name} ORDER BY id) TO STDOUT (FORMAT csv, HEADER)") as cp:
            raw = b"".join(bytes(b) for b in cp)
        assert raw.decode("utf-8") == CSV
        assert cur.rowcount == 10
        with cur.copy(f"COPY {table_name} (t) TO STDOUT") as cp:
            blocks = [bytes(b) for b in cp]
        assert len(blocks) == 10  # one CopyData per row, as PostgreSQL sends
        assert sorted(blocks)[0] == b"\n"


@pytest.mark.parametrize(("data", "sqlstate"), [
    ("1\tok\nx\tbad int\n", "22P02"),
    ("1\tok\n2\ttoo\tmany\n", "22P04"),
    ("1\tok\n2\n", "22P04"),
    ("1\tok\n2\t\xff\n", "22021"),
])
def test_bad_row_loads_nothing(target: Target, table_name: str, data: str, sqlstate: str) -> None:
    _create(target, table_name)
    raw = data.encode("latin-1") if "\xff" in data else data.encode("utf-8")
    with target.connect() as conn:
        with pytest.raises(psycopg.Error) as err, conn.cursor() as cur, \
                cur.copy(f"COPY {table_name} FROM STDIN") as cp:
            cp.write(raw)
        assert err.value.sqlstate == sqlstate
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert _rows(target, table_name) == []


def test_bad_csv_row(target: Target, table_name: str) -> None:
    _create(target, table_name)
    with target.connect() as conn:
        for data, sqlstate in ((b"1,a\nz,b\n", "22P02"), (b"1,a\n2,b,c\n", "22P04"), (b"1,a\n2\n", "22P04")):
            with pytest.raises(psycopg.Error) as err, conn.cursor() as cur, \
                    cur.copy(f"COPY {table_name} FROM STDIN (FORMAT csv)") as cp:
                cp.write(data)
            assert err.value.sqlstate == sqlstate
        assert conn.execute(f"SELECT count(*) FROM {table_name}").fetchone() == (0,)


def test_copy_error_in_transaction_aborts_it(target: Target, table_name: str) -> None:
    _create(target, table_name)
    with target.connect() as conn:
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {table_name} VALUES (0, 'before')")
        with pytest.raises(psycopg.Error), conn.cursor() as cur, cur.copy(f"COPY {table_name} FROM STDIN") as cp:
            cp.write(b"x\ty\n")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.execute("ROLLBACK")
        assert conn.execute(f"SELECT count(*) FROM {table_name}").fetchone() == (0,)


def test_copy_fail_from_client(target: Target, table_name: str) -> None:
    _create(target, table_name)
    with target.connect() as conn:
        pg = conn.pgconn
        pg.send_query(f"COPY {table_name} FROM STDIN".encode())
        res = pg.get_result()
        assert res is not None and res.status == pq.ExecStatus.COPY_IN
        pg.put_copy_data(b"1\tx\n")
        pg.put_copy_end(b"client gave up")
        res = pg.get_result()
        assert res is not None and res.status == pq.ExecStatus.FATAL_ERROR
        assert res.error_field(pq.DiagnosticField.SQLSTATE) == b"57014"
        assert res.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) == b"COPY from stdin failed: client gave up"
        assert pg.get_result() is None
        assert conn.execute(f"SELECT count(*) FROM {table_name}").fetchone() == (0,)


def test_copy_of_missing_table(target: Target) -> None:
    with target.connect() as conn:
        with pytest.raises(psycopg.errors.UndefinedTable), conn.cursor() as cur, \
                cur.copy("COPY no_such_table_for_copy FROM STDIN"):
            pass
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_copy_in_array_columns_in_text_format(target: Target, table_name: str) -> None:
    """Arrays in COPY's text format ({a,"b c",NULL}), from psycopg's write_row and from raw blocks."""
    with target.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table_name}")
        conn.execute(f"CREATE TABLE {table_name} (id INT, tags TEXT[], scores INT[])")
        with conn.cursor().copy(f"COPY {table_name} (id, tags, scores) FROM STDIN") as cp:
            cp.write_row((1, ["alpha", "beta"], [1, 2]))
            cp.write_row((2, ["has space", "has,comma", 'q"uote'], None))
        with conn.cursor().copy(f"COPY {table_name} FROM STDIN") as cp:
            cp.write('3\t{x,"y z",NULL}\t{7}\n4\t{}\t\\N\n')
        rows = conn.execute(f"SELECT id, tags, scores FROM {table_name} ORDER BY id").fetchall()
    assert rows == [
        (1, ["alpha", "beta"], [1, 2]),
        (2, ["has space", "has,comma", 'q"uote'], None),
        (3, ["x", "y z", None], [7]),
        (4, [], None),
    ]


def test_copy_in_array_columns_in_csv_format(target: Target, table_name: str, tmp_path: Path) -> None:
    """Arrays in COPY's CSV format: the {a,b} form inside CSV quoting, from raw blocks and from psql's \\copy."""
    with target.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table_name}")
        conn.execute(f"CREATE TABLE {table_name} (id INT, tags TEXT[], scores INT[])")
        with conn.cursor().copy(f"COPY {table_name} FROM STDIN (FORMAT csv)") as cp:
            cp.write('1,"{x,""y z"",NULL}","{7,8}"\n2,{},\n')
    path = tmp_path / "arrays.csv"
    path.write_text('id,tags,scores\n3,"{""a,b"",c}",{-1}\n')
    psql(target.url, f"\\copy {table_name} FROM '{path}' WITH (FORMAT csv, HEADER)")
    with target.connect() as conn:
        rows = conn.execute(f"SELECT id, tags, scores FROM {table_name} ORDER BY id").fetchall()
        with conn.cursor().copy(f"COPY (SELECT id, tags, scores FROM {table_name} ORDER BY id) TO STDOUT (FORMAT csv)") as cp:
            out = b"".join(bytes(block) for block in cp).decode()
    assert rows == [(1, ["x", "y z", None], [7, 8]), (2, [], None), (3, ["a,b", "c"], [-1])]
    assert out == '1,"{x,""y z"",NULL}","{7,8}"\n2,{},\n3,"{""a,b"",c}",{-1}\n'
