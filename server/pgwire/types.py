"""Type table: DuckDB types → PostgreSQL OIDs, text output as Postgres prints it, text input of parameters."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BOOL = 16
BYTEA = 17
INT8 = 20
INT2 = 21
INT4 = 23
TEXT = 25
OID = 26
JSON = 114
FLOAT4 = 700
FLOAT8 = 701
UNKNOWN = 705
BPCHAR = 1042
VARCHAR = 1043
DATE = 1082
TIME = 1083
TIMESTAMP = 1114
TIMESTAMPTZ = 1184
INTERVAL = 1186
NUMERIC = 1700
UUID = 2950
JSONB = 3802

_SCALAR_OIDS: dict[str, int] = {
    "BOOLEAN": BOOL,
    "TINYINT": INT2,
    "SMALLINT": INT2,
    "UTINYINT": INT2,
    "INTEGER": INT4,
    "USMALLINT": INT4,
    "BIGINT": INT8,
    "UINTEGER": INT8,
    "UBIGINT": NUMERIC,
    "HUGEINT": NUMERIC,
    "UHUGEINT": NUMERIC,
    "FLOAT": FLOAT4,
    "DOUBLE": FLOAT8,
    "VARCHAR": TEXT,
    "BLOB": BYTEA,
    "DATE": DATE,
    "TIME": TIME,
    "TIMESTAMP": TIMESTAMP,
    "TIMESTAMP_S": TIMESTAMP,
    "TIMESTAMP_MS": TIMESTAMP,
    "TIMESTAMP_NS": TIMESTAMP,
    "TIMESTAMP WITH TIME ZONE": TIMESTAMPTZ,
    "INTERVAL": INTERVAL,
    "UUID": UUID,
    "JSON": JSON,
    "NULL": TEXT,
}

# Array OIDs of the element OIDs above.
ARRAY_OIDS = {BOOL: 1000, BYTEA: 1001, INT2: 1005, INT4: 1007, INT8: 1016, TEXT: 1009, VARCHAR: 1015,
              FLOAT4: 1021, FLOAT8: 1022, DATE: 1182, TIME: 1183, TIMESTAMP: 1115, TIMESTAMPTZ: 1185,
              INTERVAL: 1187, NUMERIC: 1231, UUID: 2951, JSON: 199, JSONB: 3807, BPCHAR: 1014, OID: 1028}
ELEMENT_OIDS = {v: k for k, v in ARRAY_OIDS.items()}

TYPE_SIZES = {BOOL: 1, INT2: 2, INT4: 4, INT8: 8, FLOAT4: 4, FLOAT8: 8, DATE: 4, TIME: 8,
              TIMESTAMP: 8, TIMESTAMPTZ: 8, INTERVAL: 16, UUID: 16, OID: 4}

# The DuckDB type a parameter of a Postgres type is cast to (the reverse of the table above).
DUCK_NAMES = {BOOL: "BOOLEAN", BYTEA: "BLOB", INT2: "SMALLINT", INT4: "INTEGER", INT8: "BIGINT", TEXT: "VARCHAR",
              VARCHAR: "VARCHAR", BPCHAR: "VARCHAR", FLOAT4: "FLOAT", FLOAT8: "DOUBLE", DATE: "DATE",
              TIME: "TIME", TIMESTAMP: "TIMESTAMP", TIMESTAMPTZ: "TIMESTAMPTZ", INTERVAL: "INTERVAL",
              NUMERIC: "DECIMAL(38,10)", UUID: "UUID", JSON: "JSON", JSONB: "JSON", OID: "BIGINT"}

# Postgres type names sqlglot may print for a cast → OID.
_PG_NAMES = {"INT": INT4, "INT4": INT4, "INT2": INT2, "INT8": INT8, "FLOAT8": FLOAT8, "FLOAT4": FLOAT4,
             "REAL": FLOAT4, "DOUBLE PRECISION": FLOAT8, "BOOL": BOOL, "TEXT": TEXT, "BYTEA": BYTEA,
             "NUMERIC": NUMERIC, "DECIMAL": NUMERIC, "TIMESTAMPTZ": TIMESTAMPTZ, "JSONB": JSONB,
             "CHAR": BPCHAR, "VARCHAR": VARCHAR, "STRING": TEXT, "OID": OID, "REGTYPE": OID, "REGCLASS": OID}


def oid_of(duck_type: str) -> int:
    """The PostgreSQL OID a DuckDB type name is sent as."""
    name = duck_type.upper().strip()
    if name.endswith("]") and name[name.rfind("[") + 1:-1].isdigit():
        name = name[:name.rfind("[")] + "[]"  # a fixed-size ARRAY such as FLOAT[384] goes out as a PostgreSQL array
    if name.endswith("[]"):
        return ARRAY_OIDS.get(oid_of(name[:-2]), TEXT)
    if name.startswith(("DECIMAL", "NUMERIC")):
        return NUMERIC
    if name.startswith(("STRUCT", "MAP", "UNION")):
        return JSON
    if name.startswith("ENUM"):
        return TEXT
    if name.startswith(("VARCHAR(", "CHAR(")):
        return TEXT
    if name in _SCALAR_OIDS:
        return _SCALAR_OIDS[name]
    return _PG_NAMES.get(name, TEXT)


class Infinite:
    """A date or timestamp at +/- infinity, which Python's date and datetime cannot hold."""

    __slots__ = ("negative",)

    def __init__(self, negative: bool) -> None:
        self.negative = negative

    def __str__(self) -> str:  # PostgreSQL's text output
        return "-infinity" if self.negative else "infinity"

    def __repr__(self) -> str:
        return f"Infinite({self.negative})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Infinite) and other.negative == self.negative

    def __hash__(self) -> int:
        return hash(("infinite", self.negative))


INFINITY, MINUS_INFINITY = Infinite(False), Infinite(True)


@dataclass(frozen=True)
class TextOptions:
    """Session settings that change text output."""

    extra_float_digits: int = 1


DEFAULT = TextOptions()


def _shortest_float4(v: float) -> str:
    packed = struct.pack("!f", v)
    for digits in range(1, 10):
        text = f"{v:.{digits}g}"
        if struct.pack("!f", float(text)) == packed:
            return text
    return f"{v:.9g}"


def _pg_exponent(text: str, precision: int) -> str:
    """Digits from a %g/repr form, laid out as Postgres does: exponent form below 1e-4 or at 10**precision."""
    mantissa, _, exp_part = text.lower().partition("e")
    negative = mantissa.startswith("-")
    mantissa = mantissa.lstrip("-")
    int_part, _, frac = mantissa.partition(".")
    digits = (int_part + frac).lstrip("0")
    if not digits:
        return "-0" if negative else "0"
    exponent = int(exp_part or 0) + len(int_part) - 1
    if int_part.strip("0") == "":
        exponent = int(exp_part or 0) - (len(frac) - len(frac.lstrip("0"))) - 1
    digits = digits.rstrip("0") or "0"
    if exponent < -4 or exponent >= precision:
        out = digits[0] + ("." + digits[1:] if len(digits) > 1 else "") + f"e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    elif exponent < 0:
        out = "0." + "0" * (-exponent - 1) + digits
    elif len(digits) <= exponent + 1:
        out = digits + "0" * (exponent + 1 - len(digits))
    else:
        out = digits[:exponent + 1] + "." + digits[exponent + 1:]
    return ("-" if negative else "") + out


def float_text(v: float, oid: int = FLOAT8, options: TextOptions = DEFAULT) -> str:
    """float4/float8 output: shortest exact digits (extra_float_digits > 0), else %g at 6/15 digits."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    precision = 6 if oid == FLOAT4 else 15
    if options.extra_float_digits > 0:
        return _pg_exponent(_shortest_float4(v) if oid == FLOAT4 else repr(v), precision)
    digits = max(precision + options.extra_float_digits, 1)
    return _pg_exponent(f"{v:.{digits}g}", precision)


def _fraction(micro: int) -> str:
    return f".{micro:06d}".rstrip("0") if micro else ""


def _clock(seconds: int, micro: int) -> str:
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}{_fraction(micro)}"


def interval_text(v: dt.timedelta) -> str:
    """An interval as Postgres' intervalstyle=postgres prints it ('1 day 02:00:00', '-02:00:00')."""
    sign = "-" if v < dt.timedelta(0) else ""
    v = -v if sign else v
    days, micro = v.days, v.seconds * 1_000_000 + v.microseconds
    parts = []
    if days:
        parts.append(f"{sign}{days} day" + ("" if days == 1 and not sign else "s"))
    if micro or not days:
        parts.append(("-" if sign else ("+" if days and sign else "")) + _clock(micro // 1_000_000, micro % 1_000_000))
    return " ".join(parts)


def _offset(v: dt.datetime) -> str:
    off = v.utcoffset() or dt.timedelta(0)
    sign = "-" if off < dt.timedelta(0) else "+"
    seconds = int(abs(off).total_seconds())
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{sign}{h:02d}" + (f":{m:02d}" if m or s else "") + (f":{s:02d}" if s else "")


def _year(d: dt.date) -> str:
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"


def timestamp_text(v: dt.datetime) -> str:
    text = f"{_year(v)} {_clock(v.hour * 3600 + v.minute * 60 + v.second, v.microsecond)}"
    return text + _offset(v) if v.tzinfo is not None else text


def array_item(text: str) -> str:
    if text == "" or any(c in text for c in ' ,{}"\\\t\n') or text.upper() == "NULL":
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def to_text(v: Any, oid: int = 0, options: TextOptions = DEFAULT) -> str:
    """A Python value from DuckDB as Postgres' text output format prints it (oid: the column's type)."""
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return float_text(v, oid if oid in (FLOAT4, FLOAT8) else FLOAT8, options)
    if isinstance(v, decimal.Decimal):
        return "NaN" if v.is_nan() else format(v, "f")
    if isinstance(v, dt.datetime):
        return timestamp_text(v)
    if isinstance(v, dt.date):
        return _year(v)
    if isinstance(v, dt.time):
        return _clock(v.hour * 3600 + v.minute * 60 + v.second, v.microsecond)
    if isinstance(v, dt.timedelta):
        return interval_text(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return "\\x" + bytes(v).hex()
    if isinstance(v, list | tuple):
        element = ELEMENT_OIDS.get(oid, 0)
        return "{" + ",".join("NULL" if x is None else array_item(to_text(x, element, options)) for x in v) + "}"
    if isinstance(v, dict):
        return json.dumps(v, default=str)
    return str(v)


def parse_array(text: str) -> list[str | None]:
    """The elements of a one-dimensional array in PostgreSQL's text form ({a,"b c",NULL}), as text."""
    inner = text.strip()[1:-1]
    if not inner:
        return []
    items: list[str | None] = []
    buf: list[str] = []
    quoted = escaped = was_quoted = False
    for ch in inner:
        if escaped:
            buf.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
            was_quoted = True
        elif ch == "," and not quoted:
            word = "".join(buf)
            items.append(None if word.strip() == "NULL" and not was_quoted else (word if was_quoted else word.strip()))
            buf, was_quoted = [], False
        else:
            buf.append(ch)
    word = "".join(buf)
    items.append(None if word.strip() == "NULL" and not was_quoted else (word if was_quoted else word.strip()))
    return items


def _bool(text: str) -> bool:
    word = text.strip().lower()
    if word in ("t", "true", "y", "yes", "on", "1"):
        return True
    if word in ("f", "false", "n", "no", "off", "0"):
        return False
    raise InvalidTextRepresentation(f'invalid input syntax for type boolean: "{text}"')


def _bytea(text: str) -> bytes:
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1:i + 2] == "\\":
            out.append(0x5C)
            i += 2
        elif text[i] == "\\":
            out.append(int(text[i + 1:i + 4], 8))
            i += 4
        else:
            out += text[i].encode("utf-8")
            i += 1
    return bytes(out)


_TZ = re.compile(r"([+-])(\d{2}):?(\d{2})?(?::?(\d{2}))?$")


def _timestamptz(text: str) -> dt.datetime:
    text = text.strip()
    m = _TZ.search(text)
    if m and ":" in text[:m.start()]:
        sign = -1 if m.group(1) == "-" else 1
        off = dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0), seconds=int(m.group(4) or 0))
        base = dt.datetime.fromisoformat(text[:m.start()].strip())
        return base.replace(tzinfo=dt.timezone(sign * off))
    if text.upper().endswith(("Z", " UTC")):
        return dt.datetime.fromisoformat(text.rstrip("Zz").removesuffix(" UTC").strip()).replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(text)


_INTERVAL_CLOCK = re.compile(r"^([+-])?(\d+):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,6}))?)?$")
_INTERVAL_UNIT = re.compile(r"([+-]?\d+(?:\.\d+)?)\s*(year|mon|week|day|hour|min|sec|usec|ms)\w*", re.I)
_UNIT_DAYS = {"year": 365, "mon": 30, "week": 7, "day": 1}
_UNIT_SECONDS = {"hour": 3600, "min": 60, "sec": 1, "ms": 0.001, "usec": 0.000001}


def _interval(text: str) -> dt.timedelta:
    """Postgres interval text ('1 day 02:00:00', '2 hours', '-01:30:00', 'P1D' not) as a timedelta."""
    total = dt.timedelta(0)
    rest = text.strip()
    for part in rest.split():
        m = _INTERVAL_CLOCK.match(part)
        if m:
            sign = -1 if m.group(1) == "-" else 1
            micro = int((m.group(5) or "0").ljust(6, "0"))
            total += sign * dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3)),
                                         seconds=int(m.group(4) or 0), microseconds=micro)
            rest = rest.replace(part, " ", 1)
    for amount, unit in _INTERVAL_UNIT.findall(rest):
        key = unit.lower()[:4] if unit.lower().startswith(("mon", "week", "year")) else unit.lower()
        key = {"mont": "mon", "week": "week", "year": "year", "hours": "hour", "days": "day"}.get(key, key)
        key = next((k for k in (*_UNIT_DAYS, *_UNIT_SECONDS) if key.startswith(k)), key)
        if key in _UNIT_DAYS:
            total += dt.timedelta(days=float(amount) * _UNIT_DAYS[key])
        elif key in _UNIT_SECONDS:
            total += dt.timedelta(seconds=float(amount) * _UNIT_SECONDS[key])
    return total


class InvalidTextRepresentation(ValueError):
    """A text parameter that does not read as its declared type (the server reports 22P02)."""


_TEXT_PARAM: dict[int, Callable[[str], Any]] = {
    BOOL: _bool,
    INT2: int,
    INT4: int,
    INT8: int,
    OID: lambda s: int(s) if s.strip().isdigit() else s,  # a regclass/regtype parameter may be a name
    FLOAT4: float,
    FLOAT8: float,
    NUMERIC: decimal.Decimal,
    DATE: dt.date.fromisoformat,
    TIME: dt.time.fromisoformat,
    TIMESTAMP: lambda s: dt.datetime.fromisoformat(s.strip()),
    TIMESTAMPTZ: _timestamptz,
    INTERVAL: _interval,
    UUID: uuid.UUID,
    BYTEA: _bytea,
}


def parse_text_param(text: str, oid: int) -> Any:
    """A parameter sent in text format, as the Python value DuckDB binds."""
    try:
        if oid in _TEXT_PARAM:
            return _TEXT_PARAM[oid](text)
        if oid in ELEMENT_OIDS and text.startswith("{"):
            element = ELEMENT_OIDS[oid]
            return [None if x is None else parse_text_param(x, element) for x in parse_array(text)]
    except (ValueError, ArithmeticError, IndexError) as exc:
        if isinstance(exc, InvalidTextRepresentation):
            raise
        raise InvalidTextRepresentation(f'invalid input syntax for type {NAMES.get(oid, "unknown")}: "{text}"') from exc
    return text


NAMES = {BOOL: "boolean", BYTEA: "bytea", INT2: "smallint", INT4: "integer", INT8: "bigint", TEXT: "text",
         FLOAT4: "real", FLOAT8: "double precision", NUMERIC: "numeric", DATE: "date",
         TIME: "time without time zone", TIMESTAMP: "timestamp without time zone",
         TIMESTAMPTZ: "timestamp with time zone", INTERVAL: "interval", UUID: "uuid", JSON: "json", JSONB: "jsonb"}
