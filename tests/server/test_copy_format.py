"""The pure parts of COPY and of bulk DataRows: statement options, the text format, CSV quoting, framing."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from server.pgwire import codec, copy, types
from server.statements import split


def _spec(sql: str) -> copy.CopySpec | None:
    (stmt,) = split(sql)
    return copy.parse(stmt)


@pytest.mark.parametrize(("sql", "want"), [
    ("COPY t FROM STDIN", dict(direction="in", table="t", format="text", delimiter="\t", null="\\N")),
    ('COPY "My T" (a, "B") FROM stdin WITH (FORMAT csv, HEADER, DELIMITER \';\', NULL \'NIL\')',
     dict(table='"My T"', columns='a, "B"', format="csv", header=True, delimiter=";", null="NIL")),
    ("copy t from stdin csv header delimiter as '|' quote '''' escape '\\'",
     dict(format="csv", header=True, delimiter="|", quote="'", escape="\\")),
    ("COPY (SELECT 1, ';') TO STDOUT (FORMAT csv, HEADER false)",
     dict(direction="out", query="SELECT 1, ';'", header=False, null="")),
    ("COPY t TO STDOUT WITH DELIMITER E'\\t' NULL ''", dict(direction="out", delimiter="\t", null="")),
])
def test_parse_options(sql: str, want: dict[str, object]) -> None:
    spec = _spec(sql)
    assert spec is not None
    for key, value in want.items():
        assert getattr(spec, key) == value, key


def test_other_copy_forms_are_left_to_duckdb() -> None:
    assert _spec("COPY t TO 'out.parquet' (FORMAT parquet)") is None
    assert _spec("COPY t FROM 'in.csv'") is None


@pytest.mark.parametrize(("sql", "error"), [
    ("COPY t FROM STDIN (FORMAT binary)", copy.CopyFeatureNotSupported),
    ("COPY t FROM STDIN (DELIMITER '||')", copy.CopyFeatureNotSupported),
    ("COPY t FROM STDIN (FORMAT csv, DELIMITER '\"')", copy.CopyOptionError),
    ("COPY t FROM STDIN (FORCE_QUOTE *)", copy.CopyFeatureNotSupported),
    ("COPY (SELECT 1) FROM STDIN", copy.CopySyntaxError),
])
def test_bad_options(sql: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        _spec(sql)


def test_text_format_escapes_both_ways() -> None:
    values = ["a\tb", "line\nnext", "back\\slash", "\\N", "", None, "cr\r", "é☃"]
    enc = copy.TextEncoder()
    line = enc.row(values)
    assert line == "a\\tb\tline\\nnext\tback\\\\slash\t\\\\N\t\t\\N\tcr\\r\té☃\n".encode()
    names = [f"c{i}" for i in range(len(values))]
    assert list(copy.decode_text(line, delimiter="\t", null="\\N", names=names)) == [values]


def test_text_format_octal_hex_and_end_marker() -> None:
    data = b"\\101\\x42\\y|\\|x\n\\.\nignored|row\n"
    assert list(copy.decode_text(data, delimiter="|", null="\\N", names=["a", "b"])) == [["ABy", "|x"]]


@pytest.mark.parametrize(("data", "error"), [
    (b"1\t2\t3\n", copy.BadCopyFileFormat), (b"1\n", copy.BadCopyFileFormat), (b"\xff\tx\n", Exception),
])
def test_text_format_bad_rows(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        list(copy.decode_text(data, delimiter="\t", null="\\N", names=["a", "b"]))


def test_csv_quotes_only_where_postgres_does() -> None:
    enc = copy.CsvEncoder()
    assert enc.row(["plain", "", None, "a,b", 'q"', "x\ny", " sp "]) == b'plain,"",,"a,b","q""","x\ny", sp \n'
    assert copy.CsvEncoder(escape="\\").row(['q"\\']) == b'"q\\"\\\\"\n'
    assert enc.row(["\\."]) == b'"\\."\n'


def test_bulk_data_rows_equal_row_by_row() -> None:
    con = duckdb.connect()
    sql = ("SELECT i, (i * 7)::VARCHAR || 'é' AS s, i % 2 = 0 AS b, DATE '2020-01-01' + i::INT AS d, "
           "CASE WHEN i % 3 = 0 THEN NULL ELSE i::INT END AS n, '' AS e FROM range(1000) t(i)")
    rows = con.execute(sql).fetchall()
    want = b"".join(codec.data_row([None if v is None else types.to_text(v).encode() for v in r]) for r in rows)
    con.execute(sql)
    got = b"".join(codec.data_rows(batch.columns) for batch in con.to_arrow_reader(300))
    assert got == want
    assert types.to_text(dt.date(2020, 1, 1)) == "2020-01-01"
