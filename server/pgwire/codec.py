"""Pure message codec: backend messages as bytes, frontend message bodies as values.

No sockets here; connection.py does the I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from buenavista.postgres import ServerResponse

from server.pgwire import types

# Per-type body limits, checked before a body is read (PostgreSQL's own values).
SMALL_MESSAGE_LIMIT = 10_000
SMALL_TYPES = frozenset(b"SHDECX")
KNOWN_TYPES = frozenset(b"QPBDEHSCXpdcfF")
STARTUP_MIN, STARTUP_MAX = 8, 10_004

PROTOCOL_3 = 196608
SSL_REQUEST = 80877103
GSS_REQUEST = 80877104
CANCEL_REQUEST = 80877102


def _msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _cstr(text: str) -> bytes:
    return text.encode("utf-8").replace(b"\x00", b"") + b"\x00"


def authentication_ok() -> bytes:
    return _msg(ServerResponse.AUTHENTICATION_REQUEST, struct.pack("!i", 0))


def parameter_status(name: str, value: str) -> bytes:
    return _msg(ServerResponse.PARAMETER_STATUS, _cstr(name) + _cstr(value))


def backend_key_data(pid: int, secret: int) -> bytes:
    return _msg(ServerResponse.BACKEND_KEY_DATA, struct.pack("!II", pid, secret))


def ready_for_query(status: bytes) -> bytes:
    return _msg(ServerResponse.READY_FOR_QUERY, status)


def notification_response(pid: int, channel: str, payload: str) -> bytes:
    return _msg(b"A", struct.pack("!i", pid) + _cstr(channel) + _cstr(payload))


def command_complete(tag: str) -> bytes:
    return _msg(ServerResponse.COMMAND_COMPLETE, _cstr(tag))


def empty_query() -> bytes:
    return _msg(ServerResponse.EMPTY_QUERY_RESPONSE)


def parse_complete() -> bytes:
    return _msg(ServerResponse.PARSE_COMPLETE)


def bind_complete() -> bytes:
    return _msg(ServerResponse.BIND_COMPLETE)


def close_complete() -> bytes:
    return _msg(ServerResponse.CLOSE_COMPLETE)


def no_data() -> bytes:
    return _msg(ServerResponse.NO_DATA)


def portal_suspended() -> bytes:
    return _msg(ServerResponse.PORTAL_SUSPENDED)


def parameter_description(oids: Sequence[int]) -> bytes:
    return _msg(ServerResponse.PARAMETER_DESCRIPTION, struct.pack(f"!h{len(oids)}I", len(oids), *oids))


def row_description(columns: Sequence[tuple[str, int]], formats: Sequence[int]) -> bytes:
    body = bytearray(struct.pack("!h", len(columns)))
    for i, (name, oid) in enumerate(columns):
        fmt = formats[i] if i < len(formats) else (formats[0] if len(formats) == 1 else 0)
        body += _cstr(name)
        body += struct.pack("!IhIhih", 0, 0, oid, types.TYPE_SIZES.get(oid, -1), -1, fmt)
    return _msg(ServerResponse.ROW_DESCRIPTION, bytes(body))


def data_row(values: Sequence[bytes | None]) -> bytes:
    body = bytearray(struct.pack("!h", len(values)))
    for v in values:
        if v is None:
            body += b"\xff\xff\xff\xff"
        else:
            body += struct.pack("!i", len(v))
            body += v
    return _msg(ServerResponse.DATA_ROW, bytes(body))


def _fields(severity: str, code: str, message: str, hint: str | None, position: int | None,
            detail: str | None) -> bytes:
    body = bytearray()
    body += b"S" + _cstr(severity) + b"V" + _cstr(severity) + b"C" + _cstr(code) + b"M" + _cstr(message)
    if detail:
        body += b"D" + _cstr(detail)
    if hint:
        body += b"H" + _cstr(hint)
    if position:
        body += b"P" + _cstr(str(position))
    return bytes(body) + b"\x00"


def error_response(severity: str, code: str, message: str, hint: str | None = None,
                   position: int | None = None, detail: str | None = None) -> bytes:
    return _msg(ServerResponse.ERROR_RESPONSE, _fields(severity, code, message, hint, position, detail))


def notice_response(severity: str, message: str) -> bytes:
    code = "01000" if severity == "WARNING" else "00000"
    return _msg(ServerResponse.NOTICE_RESPONSE, _fields(severity, code, message, None, None, None))


# -- frontend bodies -------------------------------------------------------------


class Reader:
    """Reads fields from one message body; raises ValueError when it runs short."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def cstr(self) -> str:
        end = self.body.find(b"\x00", self.pos)
        if end < 0:
            raise ValueError("missing string terminator")
        text = self.body[self.pos:end].decode("utf-8")
        self.pos = end + 1
        return text

    def int16(self) -> int:
        (v,) = struct.unpack_from("!h", self.body, self.pos)
        self.pos += 2
        return int(v)

    def int32(self) -> int:
        (v,) = struct.unpack_from("!i", self.body, self.pos)
        self.pos += 4
        return int(v)

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.body):
            raise ValueError("value runs past the end of the message")
        data = self.body[self.pos:self.pos + n]
        self.pos += n
        return data


@dataclass
class Bind:
    portal: str
    statement: str
    param_formats: list[int]
    values: list[bytes | None]
    result_formats: list[int]


def parse_startup(body: bytes) -> dict[str, str]:
    """Key/value pairs of a StartupMessage body (after the protocol word)."""
    parts = body.split(b"\x00")
    params: dict[str, str] = {}
    for i in range(0, len(parts) - 1, 2):
        if not parts[i]:
            break
        params[parts[i].decode("utf-8")] = parts[i + 1].decode("utf-8")
    return params


def parse_parse(body: bytes) -> tuple[str, str, list[int]]:
    r = Reader(body)
    name, query = r.cstr(), r.cstr()
    n = r.int16()
    if n < 0:
        raise ValueError("negative parameter count")
    oids = [r.int32() & 0xFFFFFFFF for _ in range(n)]
    return name, query, oids


def parse_bind(body: bytes) -> Bind:
    r = Reader(body)
    portal, statement = r.cstr(), r.cstr()
    fmts = [r.int16() for _ in range(max(r.int16(), 0))]
    n = r.int16()
    if n < 0:
        raise ValueError("negative parameter count")
    values: list[bytes | None] = []
    for _ in range(n):
        size = r.int32()
        values.append(None if size == -1 else r.take(size))
    result_formats = [r.int16() for _ in range(max(r.int16(), 0))]
    return Bind(portal, statement, fmts, values, result_formats)


def decode_binary(value: bytes, oid: int) -> Any:
    """A parameter sent in binary format."""
    if oid == types.BOOL:
        return value != b"\x00"
    if oid in (types.INT2, types.INT4, types.INT8):
        return int.from_bytes(value, "big", signed=True)
    if oid == types.FLOAT4:
        return struct.unpack("!f", value)[0]
    if oid == types.FLOAT8:
        return struct.unpack("!d", value)[0]
    if oid == types.BYTEA:
        return bytes(value)
    return value.decode("utf-8")


def encode_binary(value: Any, oid: int) -> bytes:
    """A result value in binary format, for the types clients ask binary for."""
    if oid == types.BOOL:
        return b"\x01" if value else b"\x00"
    if oid == types.INT2:
        return struct.pack("!h", value)
    if oid == types.INT4:
        return struct.pack("!i", value)
    if oid == types.INT8:
        return struct.pack("!q", value)
    if oid == types.FLOAT4:
        return struct.pack("!f", value)
    if oid == types.FLOAT8:
        return struct.pack("!d", value)
    if oid == types.BYTEA:
        return bytes(value)
    return types.to_text(value).encode("utf-8")
