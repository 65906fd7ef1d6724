"""A raw pg-wire client for tests: frontend message builders and a reader of backend messages.

Used by the protocol parity and fuzz tests and by bench/fuzz_wire.py; it knows
just enough of the protocol to log in with trust authentication.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PROTOCOL_3 = 196608


def msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def cstr(text: str) -> bytes:
    return text.encode("utf-8") + b"\x00"


def startup(user: str = "postgres", database: str = "postgres", **extra: str) -> bytes:
    body = struct.pack("!i", PROTOCOL_3) + cstr("user") + cstr(user) + cstr("database") + cstr(database)
    for k, v in extra.items():
        body += cstr(k) + cstr(v)
    body += b"\x00"
    return struct.pack("!i", len(body) + 4) + body


def query(sql: str) -> bytes:
    return msg(b"Q", cstr(sql))


def parse(sql: str, name: str = "", oids: Sequence[int] = ()) -> bytes:
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack(f"!H{len(oids)}I", len(oids), *oids))


def bind(portal: str = "", statement: str = "", values: Sequence[bytes | None] = (),
         param_formats: Sequence[int] = (), result_formats: Sequence[int] = ()) -> bytes:
    body = cstr(portal) + cstr(statement)
    body += struct.pack(f"!H{len(param_formats)}h", len(param_formats), *param_formats)
    body += struct.pack("!H", len(values))
    for v in values:
        body += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v
    body += struct.pack(f"!H{len(result_formats)}h", len(result_formats), *result_formats)
    return msg(b"B", body)


def describe(what: bytes, name: str = "") -> bytes:
    return msg(b"D", what + cstr(name))


def execute(portal: str = "", limit: int = 0) -> bytes:
    return msg(b"E", cstr(portal) + struct.pack("!i", limit))


def close(what: bytes, name: str = "") -> bytes:
    return msg(b"C", what + cstr(name))


def sync() -> bytes:
    return msg(b"S")


def flush() -> bytes:
    return msg(b"H")


def terminate() -> bytes:
    return msg(b"X")


def copy_data(data: bytes) -> bytes:
    return msg(b"d", data)


def copy_done() -> bytes:
    return msg(b"c")


def copy_fail(message: str) -> bytes:
    return msg(b"f", cstr(message))


@dataclass
class Message:
    kind: str
    body: bytes

    def fields(self) -> dict[str, str]:
        """Fields of an ErrorResponse or NoticeResponse."""
        out: dict[str, str] = {}
        for part in self.body.split(b"\x00"):
            if part:
                out[chr(part[0])] = part[1:].decode("utf-8", "replace")
        return out


class Closed(Exception):
    """The server closed the connection."""


class RawConnection:
    """One socket speaking raw protocol 3."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self._buf = bytearray()

    def login(self, user: str = "postgres", database: str = "postgres") -> list[Message]:
        self.send(startup(user, database))
        return self.until_ready()

    def send(self, *messages: bytes) -> None:
        self.sock.sendall(b"".join(messages))

    def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed("connection closed")
            self._buf += chunk

    def read(self) -> Message:
        self._fill(5)
        kind = chr(self._buf[0])
        (length,) = struct.unpack_from("!i", self._buf, 1)
        self._fill(1 + length)
        body = bytes(self._buf[5:1 + length])
        del self._buf[:1 + length]
        return Message(kind, body)

    def until_ready(self, count: int = 1) -> list[Message]:
        """Messages up to and including the count-th ReadyForQuery (or until the server closes)."""
        out: list[Message] = []
        seen = 0
        while seen < count:
            try:
                m = self.read()
            except (Closed, ConnectionResetError):
                out.append(Message("<closed>", b""))
                return out
            out.append(m)
            if m.kind == "Z":
                seen += 1
        return out

    def until_closed(self, timeout: float = 5.0) -> list[Message]:
        out: list[Message] = []
        deadline = time.monotonic() + timeout
        self.sock.settimeout(timeout)
        while time.monotonic() < deadline:
            try:
                out.append(self.read())
            except (Closed, ConnectionResetError):
                out.append(Message("<closed>", b""))
                return out
        raise TimeoutError("server kept the connection open")

    def close(self) -> None:
        self.sock.close()


def summary(messages: Iterable[Message]) -> list[tuple[str, ...]]:
    """What parity compares: message types, SQLSTATEs, severities, tags, column counts, status bytes."""
    out: list[tuple[str, ...]] = []
    for m in messages:
        if m.kind in ("S", "K"):  # ParameterStatus and BackendKeyData differ by design
            continue
        if m.kind == "E":
            f = m.fields()
            out.append(("E", f.get("V", f.get("S", "")), f.get("C", "")))
        elif m.kind == "N":
            out.append(("N", m.fields().get("V", "")))
        elif m.kind == "Z":
            out.append(("Z", m.body.decode()))
        elif m.kind == "C":
            out.append(("C", m.body.rstrip(b"\x00").decode()))
        elif m.kind in ("T", "D", "t"):
            out.append((m.kind, str(struct.unpack_from("!H", m.body)[0])))
        elif m.kind == "d":
            out.append(("d", m.body.decode("utf-8", "replace")))
        else:
            out.append((m.kind,))
    return out
