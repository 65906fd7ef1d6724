"""Extended-protocol sequences in raw messages: the same replies, SQLSTATEs and status bytes from both servers."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from tests.clients.conftest import Target


def _msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _cstr(text: str) -> bytes:
    return text.encode() + b"\x00"


def parse(query: str, name: str = "", oids: tuple[int, ...] = ()) -> bytes:
    return _msg(b"P", _cstr(name) + _cstr(query) + struct.pack(f"!h{len(oids)}I", len(oids), *oids))


def bind(portal: str = "", statement: str = "", params: tuple[bytes | None, ...] = ()) -> bytes:
    body = _cstr(portal) + _cstr(statement) + struct.pack("!hh", 0, len(params))
    for p in params:
        body += struct.pack("!i", -1) if p is None else struct.pack("!i", len(p)) + p
    return _msg(b"B", body + struct.pack("!h", 0))


def describe(kind: str, name: str = "") -> bytes:
    return _msg(b"D", kind.encode() + _cstr(name))


def execute(portal: str = "", limit: int = 0) -> bytes:
    return _msg(b"E", _cstr(portal) + struct.pack("!i", limit))


def close(kind: str, name: str = "") -> bytes:
    return _msg(b"C", kind.encode() + _cstr(name))


SYNC, FLUSH = _msg(b"S"), _msg(b"H")


def query(sql: str) -> bytes:
    return _msg(b"Q", _cstr(sql))


class Raw:
    """A bare protocol-3 client that reports each reply as a short string."""

    def __init__(self, target: Target) -> None:
        self.sock = socket.create_connection((target.host, target.port), timeout=10)
        params = _cstr("user") + _cstr(target.user) + _cstr("database") + _cstr(target.dbname) + b"\x00"
        self.sock.sendall(struct.pack("!ii", len(params) + 8, 196608) + params)
        self.buf = b""
        self.until_ready()

    def _one(self) -> tuple[bytes, bytes]:
        while len(self.buf) < 5 or len(self.buf) < 1 + struct.unpack("!i", self.buf[1:5])[0]:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buf += data
        n = struct.unpack("!i", self.buf[1:5])[0]
        kind, body, self.buf = self.buf[:1], self.buf[5:1 + n], self.buf[1 + n:]
        return kind, body

    @staticmethod
    def _show(kind: bytes, body: bytes) -> str | None:
        if kind in (b"E", b"N"):
            fields = dict((f[:1], f[1:]) for f in body.split(b"\x00") if f)
            return f"{kind.decode()}:{fields[b'C'].decode()}"
        if kind == b"Z":
            return f"Z:{body.decode()}"
        if kind == b"C":
            return "C:" + body.rstrip(b"\x00").decode()
        if kind == b"D":
            (n,) = struct.unpack("!h", body[:2])
            (size,) = struct.unpack("!i", body[2:6])
            return "D:" + ("NULL" if size < 0 else body[6:6 + size].decode()) if n else "D"
        if kind == b"t":
            (n,) = struct.unpack("!h", body[:2])
            return "t:" + ",".join(str(x) for x in struct.unpack(f"!{n}I", body[2:2 + 4 * n]))
        if kind in (b"S", b"K"):
            return None
        return kind.decode()

    def until_ready(self) -> list[str]:
        out = []
        while True:
            kind, body = self._one()
            shown = self._show(kind, body)
            if shown is not None:
                out.append(shown)
            if kind == b"Z":
                return out

    def until(self, count: int) -> list[str]:
        out: list[str] = []
        while len(out) < count:
            shown = self._show(*self._one())
            if shown is not None:
                out.append(shown)
        return out

    def send(self, *messages: bytes) -> Raw:
        self.sock.sendall(b"".join(messages))
        return self

    def close(self) -> None:
        self.sock.sendall(_msg(b"X"))
        self.sock.close()


@pytest.fixture()
def raw(target: Target) -> Iterator[Raw]:
    r = Raw(target)
    yield r
    r.close()


def test_portal_row_limits_suspend_and_continue(raw: Raw) -> None:
    raw.send(parse("SELECT i FROM generate_series(1, 5) AS g(i)"), bind(), execute("", 2), execute("", 2),
             execute("", 2), SYNC)
    assert raw.until_ready() == ["1", "2", "D:1", "D:2", "s", "D:3", "D:4", "s", "D:5", "C:SELECT 1", "Z:I"]


def test_named_portal_lives_until_the_transaction_ends(raw: Raw) -> None:
    assert raw.send(query("BEGIN")).until_ready() == ["C:BEGIN", "Z:T"]
    raw.send(parse("SELECT i FROM generate_series(1, 3) AS g(i)", "s1"), bind("p1", "s1"), SYNC)
    assert raw.until_ready() == ["1", "2", "Z:T"]
    assert raw.send(execute("p1", 2), SYNC).until_ready() == ["D:1", "D:2", "s", "Z:T"]
    assert raw.send(describe("P", "p1"), execute("p1", 0), SYNC).until_ready() == ["T", "D:3", "C:SELECT 1", "Z:T"]
    assert raw.send(close("P", "p1"), execute("p1"), SYNC).until_ready() == ["3", "E:34000", "Z:E"]
    assert raw.send(query("ROLLBACK")).until_ready() == ["C:ROLLBACK", "Z:I"]


def test_error_skips_to_sync(raw: Raw) -> None:
    raw.send(parse("SELECT 1 / i FROM generate_series(0, 1) AS g(i)"), bind(), execute(), parse("SELECT 2"), bind(),
             execute(), SYNC)
    assert raw.until_ready() == ["1", "2", "E:22012", "Z:I"]
    raw.send(parse("SELECT 2"), bind(), execute(), SYNC)
    assert raw.until_ready() == ["1", "2", "D:2", "C:SELECT 1", "Z:I"]


def test_failed_transaction_refuses_parse_bind_describe(raw: Raw) -> None:
    assert raw.send(query("BEGIN")).until_ready() == ["C:BEGIN", "Z:T"]
    raw.send(parse("SELECT 1", "ok"), SYNC)
    assert raw.until_ready() == ["1", "Z:T"]
    assert raw.send(query("SELECT * FROM no_such_table_at_all")).until_ready() == ["E:42P01", "Z:E"]
    assert raw.send(parse("SELECT 1"), SYNC).until_ready() == ["E:25P02", "Z:E"]
    assert raw.send(bind("", "ok"), SYNC).until_ready() == ["E:25P02", "Z:E"]
    assert raw.send(describe("S", "ok"), SYNC).until_ready() == ["E:25P02", "Z:E"]
    assert raw.send(query("SELECT 1")).until_ready() == ["E:25P02", "Z:E"]
    raw.send(parse("ROLLBACK"), bind(), execute(), SYNC)
    assert raw.until_ready() == ["1", "2", "C:ROLLBACK", "Z:I"]
    assert raw.send(bind("", "ok"), execute(), SYNC).until_ready() == ["2", "D:1", "C:SELECT 1", "Z:I"]


def test_unknown_statement_and_portal(raw: Raw) -> None:
    assert raw.send(bind("", "nope"), SYNC).until_ready() == ["E:26000", "Z:I"]
    assert raw.send(describe("P", "nope"), SYNC).until_ready() == ["E:34000", "Z:I"]
    raw.send(parse("SELECT 1", "s"), close("S", "s"), bind("", "s"), SYNC)
    assert raw.until_ready() == ["1", "3", "E:26000", "Z:I"]


def test_flush_sends_replies_without_sync(raw: Raw) -> None:
    raw.send(parse("SELECT $1::int + 1", "f", (0,)), describe("S", "f"), FLUSH)
    assert raw.until(3) == ["1", "t:23", "T"]
    raw.send(bind("", "f", (b"41",)), execute(), SYNC)
    assert raw.until_ready() == ["2", "D:42", "C:SELECT 1", "Z:I"]


def test_describe_statement_does_not_run_it(raw: Raw, table_name: str) -> None:
    raw.send(query(f"DROP TABLE IF EXISTS {table_name}; CREATE TABLE {table_name} (id integer, name text)"))
    raw.until_ready()
    raw.send(parse(f"INSERT INTO {table_name} VALUES ($1, $2)", "ins"), describe("S", "ins"), SYNC)
    assert raw.until_ready() == ["1", "t:23,25", "n", "Z:I"]
    raw.send(bind("", "ins", (b"1", b"a")), describe("P"), execute(), SYNC)
    assert raw.until_ready() == ["2", "n", "C:INSERT 0 1", "Z:I"]
    raw.send(parse(f"SELECT name FROM {table_name} WHERE id = $1", "sel"), describe("S", "sel"), SYNC)
    assert raw.until_ready() == ["1", "t:23", "T", "Z:I"]
    assert raw.send(query(f"SELECT count(*) FROM {table_name}")).until_ready() == ["T", "D:1", "C:SELECT 1", "Z:I"]


def test_wrong_parameter_count(raw: Raw) -> None:
    raw.send(parse("SELECT $1::int", "one"), bind("", "one", (b"1", b"2")), SYNC)
    assert raw.until_ready() == ["1", "E:08P01", "Z:I"]
