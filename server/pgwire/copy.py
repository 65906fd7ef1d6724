"""COPY ... FROM STDIN and COPY ... TO STDOUT: the statement, the text and CSV formats, the load.

Pure parts: `parse` reads a COPY statement into a `CopySpec`; `decode_text` reads
PostgreSQL's text format into rows; `TextEncoder`/`CsvEncoder` write rows as
PostgreSQL prints them. `CopyIn` collects the client's CopyData in a temporary
file and loads it into the target table with one INSERT through the session
(DuckDB's read_csv for CSV, an Arrow table for the text format), so a bad row
loads nothing. connection.py does the socket part.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import TokenError
from sqlglot.tokens import Token, TokenType

from server.errors import CharacterNotInRepertoire
from server.pgwire import types
from server.session import Session, TxState
from server.statements import Statement, ThreadTokenizer, split
from training.errors import MeansqlError

TOKENIZER = ThreadTokenizer(Postgres)


class BadCopyFileFormat(MeansqlError, code="22P04"):
    """A COPY row has too many or too few columns."""


class CopyFeatureNotSupported(MeansqlError, code="0A000"):
    """A COPY form meansql does not implement (binary format, a FORCE_* option, a server-side file)."""


class CopySyntaxError(MeansqlError, code="42601"):
    """A COPY statement meansql cannot read."""


class CopyOptionError(MeansqlError, code="22023"):
    """A COPY option with an invalid value."""


class InvalidTextRepresentation(MeansqlError, code="22P02"):
    """A COPY value that does not convert to its column's type."""


class CopyProtocolViolation(MeansqlError, code="08P01"):
    """A message other than CopyData/CopyDone/CopyFail/Flush/Sync during COPY FROM STDIN (the session survives)."""


class CopyFailed(MeansqlError, code="57014"):
    """The client sent CopyFail."""


@dataclass(frozen=True)
class CopySpec:
    """What one COPY statement asks for."""

    direction: str  # "in" (FROM STDIN) or "out" (TO STDOUT)
    table: str | None  # the table name as written
    columns: str | None  # the column list as written, without parentheses
    query: str | None  # COPY (query) TO STDOUT
    format: str = "text"
    header: bool = False
    delimiter: str = "\t"
    null: str = "\\N"
    quote: str = '"'
    escape: str = '"'

    def source_sql(self) -> str:
        """The query whose rows COPY TO sends, or whose columns COPY FROM fills."""
        if self.query is not None:
            return self.query
        return f"SELECT {self.columns or '*'} FROM {self.table}"


_OPTION_WORDS = {"FORMAT", "HEADER", "DELIMITER", "NULL", "QUOTE", "ESCAPE", "ENCODING", "FREEZE",
                 "FORCE_QUOTE", "FORCE_NOT_NULL", "FORCE_NULL", "CSV", "BINARY", "FORCE", "OIDS"}


def _string(sql: str, tok: Token) -> str:
    if tok.token_type == TokenType.BYTE_STRING and sql[tok.start] in "eE":
        return _unescape(sql[tok.start + 2:tok.end].encode("utf-8")).decode("utf-8")
    return tok.text


def parse(stmt: Statement) -> CopySpec | None:
    """The CopySpec of a COPY ... FROM STDIN / TO STDOUT statement; None for any other statement."""
    if not stmt.words or stmt.words[0] != "COPY":
        return None
    sql = stmt.text
    try:
        toks = TOKENIZER.tokenize(sql)
    except TokenError as exc:
        raise CopySyntaxError(f"syntax error in COPY: {exc}") from exc
    i = 1
    table = columns = query = None
    if i < len(toks) and toks[i].token_type == TokenType.L_PAREN:
        end = _matching(toks, i)
        query = sql[toks[i].end + 1:toks[end].start].strip()
        i = end + 1
    else:
        start = i
        while i < len(toks) and toks[i].token_type not in (TokenType.L_PAREN, TokenType.FROM) \
                and toks[i].text.upper() != "TO":
            i += 1
        if i == start or i >= len(toks):
            return None
        table = sql[toks[start].start:toks[i - 1].end + 1]
        if toks[i].token_type == TokenType.L_PAREN:
            end = _matching(toks, i)
            columns = sql[toks[i].end + 1:toks[end].start].strip()
            i = end + 1
    if i + 1 >= len(toks):
        return None
    way, target = toks[i].text.upper(), toks[i + 1].text.upper()
    if (way, target) not in (("FROM", "STDIN"), ("TO", "STDOUT")) or toks[i + 1].token_type != TokenType.VAR:
        return None  # COPY to or from a file: DuckDB's own COPY
    if way == "FROM" and query is not None:
        raise CopySyntaxError("COPY (query) FROM is not supported: COPY FROM needs a table")
    options = _options(sql, toks[i + 2:])
    fmt = options.pop("format", "text").lower()
    if fmt == "binary":
        raise CopyFeatureNotSupported("COPY BINARY is not supported by meansql",
                                      hint="use FORMAT text or FORMAT csv")
    if fmt not in ("text", "csv"):
        raise CopyOptionError(f'COPY format "{fmt}" not recognized')
    csv = fmt == "csv"
    delimiter = options.pop("delimiter", "," if csv else "\t")
    quote = options.pop("quote", '"')
    spec = CopySpec(
        direction="in" if way == "FROM" else "out", table=table, columns=columns, query=query, format=fmt,
        header=_bool(options.pop("header", "false")), delimiter=delimiter,
        null=options.pop("null", "" if csv else "\\N"), quote=quote, escape=options.pop("escape", quote),
    )
    encoding = options.pop("encoding", "UTF8").upper().replace("-", "").replace("_", "")
    if encoding != "UTF8":
        raise CopyFeatureNotSupported(f"COPY encoding {encoding} is not supported: meansql speaks UTF8 only")
    options.pop("freeze", None)
    if options:
        raise CopyFeatureNotSupported(f"COPY option {next(iter(options)).upper()} is not supported by meansql")
    _check(spec)
    return spec


def _matching(toks: list[Token], i: int) -> int:
    depth = 0
    for j in range(i, len(toks)):
        if toks[j].token_type == TokenType.L_PAREN:
            depth += 1
        elif toks[j].token_type == TokenType.R_PAREN:
            depth -= 1
            if depth == 0:
                return j
    raise CopySyntaxError("syntax error in COPY: unbalanced parentheses")


def _options(sql: str, toks: list[Token]) -> dict[str, str]:
    """COPY options, both `WITH (FORMAT csv, HEADER)` and the older `CSV HEADER DELIMITER ','` form."""
    if toks and toks[0].token_type == TokenType.WITH:
        toks = toks[1:]
    out: dict[str, str] = {}
    if toks and toks[0].token_type == TokenType.L_PAREN:
        end = _matching(toks, 0)
        if end != len(toks) - 1:
            raise CopySyntaxError(f'syntax error at or near "{toks[end + 1].text}"')
        items: list[list[Token]] = [[]]
        for tok in toks[1:end]:
            if tok.token_type == TokenType.COMMA:
                items.append([])
            else:
                items[-1].append(tok)
        for item in items:
            if not item:
                raise CopySyntaxError("syntax error in COPY options")
            name = item[0].text.lower()
            if name in out:
                raise CopySyntaxError("conflicting or redundant options")
            value = "true" if len(item) == 1 else _string(sql, item[1]) if item[1].token_type in (
                TokenType.STRING, TokenType.BYTE_STRING, TokenType.HEREDOC_STRING) else item[1].text
            out[name] = value
        return out
    i = 0
    while i < len(toks):
        word = toks[i].text.upper()
        i += 1
        if word == "CSV":
            out["format"] = "csv"
        elif word == "BINARY":
            out["format"] = "binary"
        elif word == "HEADER":
            out["header"] = "true"
        elif word in ("DELIMITER", "NULL", "QUOTE", "ESCAPE", "ENCODING"):
            if i < len(toks) and toks[i].token_type == TokenType.ALIAS:
                i += 1
            if i >= len(toks):
                raise CopySyntaxError(f"syntax error in COPY: {word} needs a value")
            out[word.lower()] = _string(sql, toks[i])
            i += 1
        else:
            raise CopyFeatureNotSupported(f"COPY option {word} is not supported by meansql")
    return out


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "on", "1", "yes", "match"):
        return True
    if v in ("false", "off", "0", "no"):
        return False
    raise CopyOptionError(f"header requires a Boolean value or \"match\", not {value!r}")


def _check(spec: CopySpec) -> None:
    if len(spec.delimiter.encode("utf-8")) != 1:
        raise CopyFeatureNotSupported("COPY delimiter must be a single one-byte character")
    if spec.delimiter in "\r\n":
        raise CopyOptionError("COPY delimiter cannot be newline or carriage return")
    if "\r" in spec.null or "\n" in spec.null:
        raise CopyOptionError("COPY null representation cannot use newline or carriage return")
    if spec.format == "csv":
        if len(spec.quote.encode("utf-8")) != 1:
            raise CopyFeatureNotSupported("COPY quote must be a single one-byte character")
        if len(spec.escape.encode("utf-8")) != 1:
            raise CopyFeatureNotSupported("COPY escape must be a single one-byte character")
        if spec.delimiter == spec.quote:
            raise CopyOptionError("COPY delimiter and quote must be different")
        if spec.delimiter in spec.null:
            raise CopyOptionError("COPY delimiter must not appear in the NULL specification")
    elif spec.delimiter in "\\.abcdefghijklmnopqrstuvwxyz0123456789":
        raise CopyOptionError(f'COPY delimiter cannot be "{spec.delimiter}"')


# -- the text format ----------------------------------------------------------------

_SIMPLE_ESCAPES = {ord("b"): 8, ord("f"): 12, ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("v"): 11}
_HEX = b"0123456789abcdefABCDEF"


def _unescape(raw: bytes) -> bytes:
    """One field of the text format with its backslash sequences resolved."""
    if b"\\" not in raw:
        return raw
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        i += 1
        if c != 0x5C or i >= n:
            out.append(c)
            continue
        c = raw[i]
        i += 1
        if 0x30 <= c <= 0x37:  # \ooo
            value = c - 0x30
            for _ in range(2):
                if i < n and 0x30 <= raw[i] <= 0x37:
                    value = value * 8 + raw[i] - 0x30
                    i += 1
            out.append(value & 0xFF)
        elif c == 0x78 and i < n and raw[i] in _HEX:  # \xh or \xhh
            j = i + 1 if i + 1 < n and raw[i + 1] in _HEX else i
            out.append(int(raw[i:j + 1], 16))
            i = j + 1
        else:
            out.append(_SIMPLE_ESCAPES.get(c, c))
    return bytes(out)


def _split_escaped(line: bytes, delim: int) -> list[bytes]:
    """A line split at delimiters that no backslash escapes."""
    fields: list[bytes] = []
    start = i = 0
    n = len(line)
    while i < n:
        c = line[i]
        if c == 0x5C:
            i += 2
            continue
        if c == delim:
            fields.append(line[start:i])
            start = i + 1
        i += 1
    fields.append(line[start:])
    return fields


def decode_text(data: bytes, *, delimiter: str, null: str, names: Sequence[str], header: bool = False,
                first_line: int = 1) -> Iterator[list[str | None]]:
    """Rows of PostgreSQL's text COPY format; `\\N` (or the NULL option) is None."""
    delim = delimiter.encode("utf-8")
    null_b = null.encode("utf-8")
    ncols = len(names)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, first_line):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line == b"\\.":
            return
        if header and number == first_line:
            continue
        raws = line.split(delim) if b"\\" not in line else _split_escaped(line, delim[0])
        if len(raws) != ncols:
            if len(raws) > ncols:
                raise BadCopyFileFormat(f"extra data after last expected column (line {number})")
            if not (ncols == 0 and raws == [b""]):
                raise BadCopyFileFormat(f'missing data for column "{names[len(raws)]}" (line {number})')
        row: list[str | None] = []
        for raw in raws:
            if raw == null_b:
                row.append(None)
                continue
            try:
                row.append(_unescape(raw).decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise CharacterNotInRepertoire(
                    f'invalid byte sequence for encoding "UTF8": 0x{raw[exc.start:exc.start + 1].hex()} '
                    f"(line {number})") from exc
        yield row


class TextEncoder:
    """Rows in PostgreSQL's text COPY format."""

    def __init__(self, delimiter: str = "\t", null: str = "\\N") -> None:
        table = {ord("\\"): "\\\\", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}
        table.setdefault(ord(delimiter), "\\" + delimiter)
        self._table = table
        self._delim = delimiter
        self._null = null

    def field(self, text: str) -> str:
        return text.translate(self._table)

    def row(self, values: Sequence[str | None]) -> bytes:
        null, table = self._null, self._table
        return (self._delim.join(null if v is None else v.translate(table) for v in values) + "\n").encode("utf-8")


class CsvEncoder:
    """Rows in PostgreSQL's CSV COPY format: quoted only where needed, NULL unquoted."""

    def __init__(self, delimiter: str = ",", null: str = "", quote: str = '"', escape: str = '"') -> None:
        self._delim, self._null, self._quote = delimiter, null, quote
        self._special = re.compile("[" + re.escape(delimiter + quote + "\r\n") + "]")
        self._table = {ord(quote): escape + quote}
        if escape != quote:
            self._table[ord(escape)] = escape + escape

    def field(self, text: str, single: bool = False) -> str:
        if text == self._null or self._special.search(text) or (single and text == "\\."):
            return self._quote + text.translate(self._table) + self._quote
        return text

    def row(self, values: Sequence[str | None]) -> bytes:
        null, single = self._null, len(values) == 1
        return (self._delim.join(null if v is None else self.field(v, single) for v in values) + "\n"
                ).encode("utf-8")


def encoder(spec: CopySpec) -> TextEncoder | CsvEncoder:
    if spec.format == "csv":
        return CsvEncoder(spec.delimiter, spec.null, spec.quote, spec.escape)
    return TextEncoder(spec.delimiter, spec.null)


def out_rows(spec: CopySpec, names: Sequence[str], rows: Iterator[Sequence[Any]]) -> Iterator[bytes]:
    """CopyData payloads of COPY TO STDOUT: the header line if asked for, then one per row."""
    enc = encoder(spec)
    if spec.header:
        yield (spec.delimiter.join(enc.field(n) for n in names) + "\n").encode("utf-8")
    to_text = types.to_text
    for row in rows:
        yield enc.row([None if v is None else to_text(v) for v in row])


# -- COPY FROM STDIN ---------------------------------------------------------------


@dataclass
class CopyIn:
    """The data of one COPY FROM STDIN, spooled to a temporary file until CopyDone."""

    spec: CopySpec
    names: list[str]  # target column names
    oids: list[int] = field(default_factory=list)  # their PostgreSQL types, where known
    spool_dir: str | None = None  # the server's private directory DuckDB may still read (file_access)
    size: int = 0
    _file: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._file = tempfile.NamedTemporaryFile(prefix="meansql-copy-", suffix=".csv", delete=False,
                                                 dir=self.spool_dir)

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size += len(data)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        try:
            os.unlink(self._file.name)
        except FileNotFoundError:
            pass

    def load(self, session: Session) -> int:
        """Insert every row into the target table in one statement; returns the row count."""
        self._file.close()
        if self.size == 0:
            return 0
        target = f"INSERT INTO {self.spec.table}" + (f" ({self.spec.columns})" if self.spec.columns else "")
        if self.spec.format == "csv":
            return self._load_csv(session, target)
        return self._load_text(session, target)

    def _load_csv(self, session: Session, target: str) -> int:
        s = self.spec
        columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(self.names))) + "}"
        source = (f"read_csv(?, delim = ?, quote = ?, escape = ?, header = ?, nullstr = ?,"
                  f" allow_quoted_nulls = false, auto_detect = false, strict_mode = true, columns = {columns})")
        args = [self._file.name, s.delimiter, s.quote, s.escape, s.header, s.null]
        try:
            if not any(oid in types.ELEMENT_OIDS for oid in self.oids):
                return _count(session.run(_stmt(f"{target} SELECT * FROM {source}"), args))
            # Array columns come in PostgreSQL's {a,b} form, which DuckDB's cast does not read: parsed here.
            read = session.cursor.execute(f"SELECT * FROM {source}", args).to_arrow_table()
        except Exception as exc:
            raise _csv_error(exc, self.names) from exc
        return self._insert(session, target, [self._column(i, c.to_pylist()) for i, c in enumerate(read.columns)])

    def _load_text(self, session: Session, target: str) -> int:
        with open(self._file.name, "rb") as f:
            data = f.read()
        cols: list[list[str | None]] = [[] for _ in self.names]
        for row in decode_text(data, delimiter=self.spec.delimiter, null=self.spec.null, names=self.names,
                               header=self.spec.header):
            for col, value in zip(cols, row):
                col.append(value)
        if not cols or not cols[0]:
            return 0
        return self._insert(session, target, [self._column(i, c) for i, c in enumerate(cols)])

    def _insert(self, session: Session, target: str, columns: list[pa.Array]) -> int:
        if not columns or not len(columns[0]):
            return 0
        table = pa.table({f"c{i}": c for i, c in enumerate(columns)})
        name = f"meansql_copy_{secrets.token_hex(6)}"
        session.cursor.register(name, table)
        try:
            return _count(session.run(_stmt(f"{target} SELECT * FROM {name}")))
        finally:
            session.cursor.unregister(name)


    def _column(self, i: int, values: list[str | None]) -> pa.Array:
        """Column i as text, or, for an array column, as lists of text read from PostgreSQL's {a,b} form."""
        if i < len(self.oids) and self.oids[i] in types.ELEMENT_OIDS:
            try:
                return pa.array([None if v is None else types.parse_array(v) for v in values], pa.list_(pa.string()))
            except IndexError:
                pass  # not in array form: DuckDB's cast reports it
        return pa.array(values, pa.string())


def _stmt(sql: str) -> Statement:
    return Statement(sql, ("INSERT", "INTO"))


def _count(result: Any) -> int:
    return int(result.tag.rsplit(" ", 1)[-1])


_COLUMNS = re.compile(r"Expected Number of Columns: (\d+) Found: (\d+)")
_LINE_NO = re.compile(r"CSV Error on Line: (\d+)")


def _csv_error(exc: Exception, names: Sequence[str]) -> Exception:
    """DuckDB's CSV reader errors in PostgreSQL's terms."""
    text = str(exc)
    line = _LINE_NO.search(text)
    where = f" (line {line.group(1)})" if line else ""
    m = _COLUMNS.search(text)
    if m:
        want, got = int(m.group(1)), int(m.group(2))
        if got > want:
            return BadCopyFileFormat(f"extra data after last expected column{where}")
        return BadCopyFileFormat(f'missing data for column "{names[got]}"{where}')
    if isinstance(exc, duckdb.ConversionException):
        why = next((ln.strip() for ln in text.splitlines() if "convert" in ln.lower()), text.splitlines()[0])
        return InvalidTextRepresentation(f"invalid input syntax: {why}{where}")
    if "unicode" in text.lower() or "utf" in text.lower():
        return CharacterNotInRepertoire(f'invalid byte sequence for encoding "UTF8"{where}')
    if "CSV Error" in text or "quote" in text.lower():
        return BadCopyFileFormat(f"{text.splitlines()[0]}{where}")
    return exc


def target_columns(session: Session, spec: CopySpec) -> list[tuple[str, int]]:
    """Names and type OIDs of the columns COPY FROM fills (errors for a missing table or column before any data)."""
    (stmt,) = split(f"{spec.source_sql()} LIMIT 0")
    result = session.run(stmt)
    if result.rows is not None:
        for _ in result.rows:
            pass
    return list(result.columns or [])


def fail(session: Session, message: str) -> CopyFailed:
    """The error CopyFail turns into; a transaction it happens in is aborted."""
    if session.tx is TxState.IN_TRANSACTION:
        session.tx = TxState.FAILED
    return CopyFailed(f"COPY from stdin failed: {message}")


def mark_failed(session: Session) -> None:
    if session.tx is TxState.IN_TRANSACTION:
        session.tx = TxState.FAILED
