"""Pure message codec: backend messages as bytes, frontend message bodies as values.

No sockets here; connection.py does the I/O.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from buenavista.postgres import ServerResponse

from server import errors
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


def row_description(columns: Sequence[tuple[str, int]], formats: Sequence[int],
                    origins: Sequence[tuple[int, int]] | None = None) -> bytes:
    """RowDescription; origins: each column's table OID and column number where it is a table's column."""
    body = bytearray(struct.pack("!h", len(columns)))
    for i, (name, oid) in enumerate(columns):
        fmt = formats[i] if i < len(formats) else (formats[0] if len(formats) == 1 else 0)
        table, attnum = origins[i] if origins is not None and i < len(origins) else (0, 0)
        body += _cstr(name)
        body += struct.pack("!IhIhih", table, attnum, oid, types.TYPE_SIZES.get(oid, -1), -1, fmt)
    return _msg(ServerResponse.ROW_DESCRIPTION, bytes(body))


_INT32 = struct.Struct("!i").pack
_ROW_HEAD = struct.Struct("!cih").pack
_NULL = b"\xff\xff\xff\xff"


def data_row(values: Sequence[bytes | None]) -> bytes:
    """One DataRow; the hot path of every result sent a row at a time."""
    parts: list[bytes] = []
    size = 6
    for v in values:
        if v is None:
            parts.append(_NULL)
            size += 4
        else:
            parts.append(_INT32(len(v)))
            parts.append(v)
            size += 4 + len(v)
    return _ROW_HEAD(b"D", size, len(values)) + b"".join(parts)


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
    code = errors.NOTICE_CODES.get(message) or ("01000" if severity == "WARNING" else "00000")
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

    def uint16(self) -> int:
        """A count: PostgreSQL reads parameter and format counts as unsigned (up to 65,535)."""
        (v,) = struct.unpack_from("!H", self.body, self.pos)
        self.pos += 2
        return int(v)

    def int32(self) -> int:
        (v,) = struct.unpack_from("!i", self.body, self.pos)
        self.pos += 4
        return int(v)

    def int16s(self, n: int) -> list[int]:
        """n signed 16-bit words at once (a Bind's format codes)."""
        values = struct.unpack_from(f"!{n}h", self.body, self.pos)
        self.pos += 2 * n
        return list(values)

    def uint32s(self, n: int) -> list[int]:
        """n unsigned 32-bit words at once (a Parse may carry 65,535 parameter OIDs)."""
        values = struct.unpack_from(f"!{n}I", self.body, self.pos)
        self.pos += 4 * n
        return list(values)

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
    oids = r.uint32s(r.uint16())
    return name, query, oids


def parse_bind(body: bytes) -> Bind:
    r = Reader(body)
    portal, statement = r.cstr(), r.cstr()
    fmts = r.int16s(r.uint16())
    n = r.uint16()
    values: list[bytes | None] = []
    pos, end, unpack = r.pos, len(body), struct.unpack_from  # up to 65,535 values: no method call per value
    for _ in range(n):
        (size,) = unpack("!i", body, pos)
        pos += 4
        if size == -1:
            values.append(None)
            continue
        if size < 0 or pos + size > end:
            raise ValueError("value runs past the end of the message")
        values.append(body[pos : pos + size])
        pos += size
    r.pos = pos
    result_formats = r.int16s(r.uint16())
    return Bind(portal, statement, fmts, values, result_formats)


_PG_EPOCH = dt.datetime(2000, 1, 1)
_PG_EPOCH_TZ = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_PG_EPOCH_DATE = dt.date(2000, 1, 1)
_NUMERIC_NEG, _NUMERIC_NAN = 0x4000, 0xC000


def _micros(td: dt.timedelta) -> int:
    return (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds


def _encode_numeric(value: Any) -> bytes:
    d = decimal.Decimal(value)
    if d.is_nan():
        return struct.pack("!hhhh", 0, 0, _NUMERIC_NAN, 0)
    sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    dscale = max(-exponent, 0)
    text = "".join(map(str, digits))
    # Split into the integer and fraction digits, then into base-10000 groups around the decimal point.
    if exponent >= 0:
        int_part, frac_part = text + "0" * exponent, ""
    else:
        int_part = text[:exponent] if len(text) > -exponent else ""
        frac_part = text[exponent:].rjust(-exponent, "0")
    int_part = int_part.lstrip("0")
    int_part = int_part.rjust((len(int_part) + 3) // 4 * 4, "0")
    frac_part = frac_part.ljust((len(frac_part) + 3) // 4 * 4, "0")
    groups = [int(int_part[i:i + 4]) for i in range(0, len(int_part), 4)]
    weight = len(groups) - 1
    groups += [int(frac_part[i:i + 4]) for i in range(0, len(frac_part), 4)]
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    return struct.pack(f"!hhhh{len(groups)}h", len(groups), weight, _NUMERIC_NEG if sign else 0, dscale, *groups)


def _decode_numeric(data: bytes) -> decimal.Decimal:
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHh", data)
    if sign == _NUMERIC_NAN:
        return decimal.Decimal("NaN")
    groups = struct.unpack_from(f"!{ndigits}h", data, 8)
    value = decimal.Decimal(0)
    for i, g in enumerate(groups):
        value += decimal.Decimal(g).scaleb(4 * (weight - i))
    value = value.quantize(decimal.Decimal(1).scaleb(-dscale)) if dscale or value == value.to_integral() else value
    return -value if sign == _NUMERIC_NEG else value


def _encode_timestamptz(value: dt.datetime) -> bytes:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return struct.pack("!q", _micros(value - _PG_EPOCH_TZ))


def _encode_time(value: dt.time) -> bytes:
    return struct.pack("!q", ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond)


def _decode_time(data: bytes) -> dt.time:
    (micro,) = struct.unpack("!q", data)
    seconds, micro = divmod(micro, 1_000_000)
    h, rem = divmod(seconds, 3600)
    return dt.time(h % 24, rem // 60, rem % 60, micro)


def _encode_interval(value: dt.timedelta) -> bytes:
    return struct.pack("!qii", _micros(value) - value.days * 86_400_000_000, value.days, 0)


def _decode_interval(data: bytes) -> dt.timedelta:
    micro, days, months = struct.unpack("!qii", data)
    return dt.timedelta(days=days + months * 30, microseconds=micro)


def _text(value: Any) -> bytes:
    return types.to_text(value).encode("utf-8")


def _json_text(value: Any) -> bytes:
    return (value if isinstance(value, str) else json.dumps(value, default=str)).encode("utf-8")


def _infinite(v: types.Infinite, fmt: str) -> bytes:
    """PostgreSQL's binary +/- infinity of a date (int4) or timestamp (int8): the type's extreme values."""
    top = 2**31 - 1 if fmt == "!i" else 2**63 - 1
    return struct.pack(fmt, -top - 1 if v.negative else top)


_ENCODERS: dict[int, Callable[[Any], bytes]] = {
    types.BOOL: lambda v: b"\x01" if v else b"\x00",
    types.INT2: lambda v: struct.pack("!h", v),
    types.INT4: lambda v: struct.pack("!i", v),
    types.INT8: lambda v: struct.pack("!q", v),
    types.OID: lambda v: struct.pack("!I", v),
    types.FLOAT4: lambda v: struct.pack("!f", v),
    types.FLOAT8: lambda v: struct.pack("!d", v),
    types.NUMERIC: _encode_numeric,
    types.BYTEA: bytes,
    types.DATE: lambda v: _infinite(v, "!i") if type(v) is types.Infinite else struct.pack("!i", (v - _PG_EPOCH_DATE).days),
    types.TIME: _encode_time,
    types.TIMESTAMP: lambda v: _infinite(v, "!q") if type(v) is types.Infinite
    else struct.pack("!q", _micros(v.replace(tzinfo=None) - _PG_EPOCH)),
    types.TIMESTAMPTZ: _encode_timestamptz,
    types.INTERVAL: _encode_interval,
    types.UUID: lambda v: (v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))).bytes,
    types.JSON: _json_text,
    types.JSONB: lambda v: b"\x01" + _json_text(v),
}

_DECODERS: dict[int, Callable[[bytes], Any]] = {
    types.BOOL: lambda b: b != b"\x00",
    types.INT2: lambda b: struct.unpack("!h", b)[0],
    types.INT4: lambda b: struct.unpack("!i", b)[0],
    types.INT8: lambda b: struct.unpack("!q", b)[0],
    types.OID: lambda b: struct.unpack("!I", b)[0],
    types.FLOAT4: lambda b: struct.unpack("!f", b)[0],
    types.FLOAT8: lambda b: struct.unpack("!d", b)[0],
    types.NUMERIC: _decode_numeric,
    types.BYTEA: bytes,
    types.DATE: lambda b: _PG_EPOCH_DATE + dt.timedelta(days=struct.unpack("!i", b)[0]),
    types.TIME: _decode_time,
    types.TIMESTAMP: lambda b: _PG_EPOCH + dt.timedelta(microseconds=struct.unpack("!q", b)[0]),
    types.TIMESTAMPTZ: lambda b: _PG_EPOCH_TZ + dt.timedelta(microseconds=struct.unpack("!q", b)[0]),
    types.INTERVAL: _decode_interval,
    types.UUID: lambda b: uuid.UUID(bytes=bytes(b)),
    types.JSONB: lambda b: b[1:].decode("utf-8"),
}


def _encode_array(value: Sequence[Any], oid: int) -> bytes:
    element = types.ELEMENT_OIDS[oid]
    out = bytearray(struct.pack("!iiiii", 1, any(v is None for v in value), element, len(value), 1))
    for v in value:
        if v is None:
            out += b"\xff\xff\xff\xff"
        else:
            data = encode_binary(v, element)
            out += struct.pack("!i", len(data)) + data
    return bytes(out)


def _decode_array(data: bytes, oid: int) -> list[Any]:
    r = Reader(data)
    ndim, _flags, element = r.int32(), r.int32(), r.int32()
    if ndim == 0:
        return []
    if ndim != 1:
        raise errors.FeatureNotSupported("only one-dimensional array parameters are supported")
    size, _lower = r.int32(), r.int32()
    out: list[Any] = []
    for _ in range(size):
        n = r.int32()
        out.append(None if n == -1 else decode_binary(r.take(n), element or types.ELEMENT_OIDS[oid]))
    return out


def decode_binary(value: bytes, oid: int) -> Any:
    """A parameter sent in binary format."""
    if oid in types.ELEMENT_OIDS:
        return _decode_array(value, oid)
    decoder = _DECODERS.get(oid)
    try:
        return decoder(value) if decoder else value.decode("utf-8")
    except struct.error as exc:
        raise errors.InvalidBinaryRepresentation(
            f"incorrect binary data format in bind parameter ({len(value)} bytes for type {oid})") from exc


def encode_binary(value: Any, oid: int) -> bytes:
    """A result value in binary format."""
    if oid in types.ELEMENT_OIDS:
        return _encode_array(value, oid)
    encoder = _ENCODERS.get(oid)
    return encoder(value) if encoder else _text(value)


# -- COPY -------------------------------------------------------------------------


def copy_in_response(n_columns: int) -> bytes:
    """CopyInResponse for a text-format COPY FROM STDIN (text and CSV are both format 0)."""
    return _msg(b"G", struct.pack(f"!bh{n_columns}h", 0, n_columns, *([0] * n_columns)))


def copy_out_response(n_columns: int) -> bytes:
    return _msg(b"H", struct.pack(f"!bh{n_columns}h", 0, n_columns, *([0] * n_columns)))


def copy_data(data: bytes) -> bytes:
    return b"d" + struct.pack("!i", len(data) + 4) + data


def copy_done() -> bytes:
    return b"c\x00\x00\x00\x04"


# -- DataRows in bulk ------------------------------------------------------------

# DuckDB types whose Arrow form converts to PostgreSQL's text output in C (pyarrow.compute),
# so a result of only these columns is framed without a Python step per row.
BULK_TEXT_TYPES = frozenset({"BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UBIGINT", "UINTEGER", "USMALLINT",
                             "UTINYINT", "HUGEINT", "VARCHAR", "BOOLEAN", "DATE"})


SMALL_BATCH = 64
DATE_INFINITY = 2**31 - 1  # DuckDB's +/- infinity date, in days (Arrow date32)
TIMESTAMP_INFINITY = 2**63 - 1  # and timestamp, in its unit (Arrow timestamp)


def _has_infinity(values: pa.Array, top: int) -> bool:
    return bool(pc.any(pc.equal(pc.abs(values), top)).as_py())


def pylist(arr: pa.Array) -> list[Any]:
    """An Arrow column as Python values; a date or timestamp at +/- infinity becomes types.INFINITY/MINUS_INFINITY.

    (Python's date and datetime stop at year 9999, and DuckDB's own conversion prints infinity as 9999-12-31.)
    """
    if pa.types.is_date32(arr.type):
        raw, top = arr.view(pa.int32()), DATE_INFINITY
    elif pa.types.is_timestamp(arr.type):
        raw, top = arr.view(pa.int64()), TIMESTAMP_INFINITY
    else:
        return arr.to_pylist()
    if not _has_infinity(raw, top):
        return arr.to_pylist()
    infinite = pc.fill_null(pc.equal(pc.abs(raw), top), False)
    values = pc.if_else(infinite, None, arr).to_pylist()
    for i in np.flatnonzero(infinite.to_numpy(zero_copy_only=False)):
        values[i] = types.MINUS_INFINITY if raw[i].as_py() < 0 else types.INFINITY
    return values


def _text_column(arr: pa.Array) -> pa.Array:
    """One Arrow column as PostgreSQL's text output (as large_binary; nulls stay null)."""
    if pa.types.is_boolean(arr.type):
        arr = pc.if_else(arr, "t", "f")
    elif pa.types.is_date32(arr.type):
        days = arr.view(pa.int32())
        if _has_infinity(days, DATE_INFINITY):
            infinite = pc.equal(pc.abs(days), DATE_INFINITY)
            finite = pc.cast(pc.if_else(infinite, None, arr), pa.string())
            arr = pc.if_else(infinite, pc.if_else(pc.less(days, 0), "-infinity", "infinity"), finite)
        else:
            arr = pc.cast(arr, pa.string())
    elif not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    return arr.cast(pa.large_binary())


def _put_int(out: np.ndarray, at: np.ndarray, values: np.ndarray, size: int) -> None:
    """Write big-endian integers of `size` bytes at the offsets `at`."""
    for k in range(size):
        out[at + k] = (values >> (8 * (size - 1 - k))) & 0xFF


def data_rows(columns: Sequence[pa.Array]) -> bytes:
    """DataRow messages of a batch of rows given as Arrow columns of equal length, in text format."""
    n = len(columns[0]) if columns else 0
    if n < SMALL_BATCH:  # numpy's fixed cost per batch is more than a few rows cost one by one
        to_text = types.to_text
        return b"".join(data_row([None if v is None else to_text(v).encode("utf-8") for v in row])
                        for row in zip(*(pylist(c) for c in columns)))
    texts = [_text_column(c) for c in columns]
    lengths, valid, datas, offsets = [], [], [], []
    for t in texts:
        bufs = t.buffers()
        off = np.frombuffer(bufs[1], dtype=np.int64, count=t.offset + n + 1)[t.offset:]
        lengths.append(off[1:] - off[:-1])
        valid.append(np.ones(n, bool) if t.null_count == 0 else
                     np.asarray(t.is_valid().to_numpy(zero_copy_only=False), bool))
        datas.append(np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.empty(0, np.uint8))
        offsets.append(off)
    row_len = np.full(n, 1 + 4 + 2 + 4 * len(texts), dtype=np.int64)
    for ln in lengths:
        row_len += ln
    starts = np.cumsum(row_len) - row_len
    out = np.empty(int(row_len.sum()), dtype=np.uint8)
    out[starts] = ord("D")
    _put_int(out, starts + 1, row_len - 1, 4)
    _put_int(out, starts + 5, np.full(n, len(texts), np.int64), 2)
    pos = starts + 7
    for ln, ok, data, off in zip(lengths, valid, datas, offsets):
        _put_int(out, pos, np.where(ok, ln, 0xFFFFFFFF), 4)
        pos = pos + 4
        total = int(ln.sum())
        if total:
            dest = np.repeat(pos - off[:-1], ln) + np.arange(off[0], off[0] + total)
            out[dest] = data[off[0]:off[0] + total]
        pos = pos + ln
    return out.tobytes()
