"""Type table: DuckDB types → PostgreSQL OIDs and text output as Postgres prints it."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Callable
from typing import Any

# name → (oid, typlen)
BOOL = 16
BYTEA = 17
INT8 = 20
INT2 = 21
INT4 = 23
TEXT = 25
JSON = 114
FLOAT4 = 700
FLOAT8 = 701
UNKNOWN = 705
VARCHAR = 1043
DATE = 1082
TIME = 1083
TIMESTAMP = 1114
TIMESTAMPTZ = 1184
INTERVAL = 1186
NUMERIC = 1700
UUID = 2950

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
}

# Array OIDs of the element OIDs above.
_ARRAY_OIDS = {BOOL: 1000, BYTEA: 1001, INT2: 1005, INT4: 1007, INT8: 1016, TEXT: 1009, FLOAT4: 1021,
               FLOAT8: 1022, DATE: 1182, TIME: 1183, TIMESTAMP: 1115, TIMESTAMPTZ: 1185,
               INTERVAL: 1187, NUMERIC: 1231, UUID: 2951, JSON: 199}

TYPE_SIZES = {BOOL: 1, INT2: 2, INT4: 4, INT8: 8, FLOAT4: 4, FLOAT8: 8, DATE: 4, TIME: 8,
              TIMESTAMP: 8, TIMESTAMPTZ: 8, INTERVAL: 16, UUID: 16}


def oid_of(duck_type: str) -> int:
    """The PostgreSQL OID a DuckDB type name is sent as."""
    name = duck_type.upper()
    if name.endswith("]") and name[name.rfind("[") + 1:-1].isdigit():
        name = name[:name.rfind("[")] + "[]"  # a fixed-size ARRAY such as FLOAT[384] goes out as a PostgreSQL array
    if name.endswith("[]"):
        return _ARRAY_OIDS.get(oid_of(name[:-2]), TEXT)
    if name.startswith("DECIMAL"):
        return NUMERIC
    if name.startswith(("STRUCT", "MAP", "UNION")):
        return JSON
    if name.startswith("ENUM"):
        return TEXT
    return _SCALAR_OIDS.get(name, TEXT)


def _float(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    text = repr(v)
    return text[:-2] if text.endswith(".0") else text


def _interval(v: dt.timedelta) -> str:
    days, seconds = v.days, v.seconds
    micro = v.microseconds
    parts = []
    if days:
        parts.append(f"{days} day" + ("s" if abs(days) != 1 else ""))
    if seconds or micro or not parts:
        h, rem = divmod(seconds, 3600)
        m, s = divmod(rem, 60)
        clock = f"{h:02d}:{m:02d}:{s:02d}"
        if micro:
            clock += f".{micro:06d}".rstrip("0")
        parts.append(clock)
    return " ".join(parts)


def _timestamptz(v: dt.datetime) -> str:
    text = v.isoformat(sep=" ")
    # Postgres prints +00 rather than +00:00 for whole-hour offsets.
    if text.endswith(":00") and len(text) > 6 and text[-6] in "+-":
        text = text[:-3]
    return text


def _array_item(v: Any) -> str:
    if v is None:
        return "NULL"
    text = to_text(v)
    if text == "" or any(c in text for c in ' ,{}"\\') or text.upper() == "NULL":
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def to_text(v: Any) -> str:
    """A Python value from DuckDB as Postgres' text output format prints it."""
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _float(v)
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, dt.datetime):
        return _timestamptz(v) if v.tzinfo is not None else v.isoformat(sep=" ")
    if isinstance(v, dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return _interval(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return "\\x" + bytes(v).hex()
    if isinstance(v, list | tuple):
        return "{" + ",".join(_array_item(x) for x in v) + "}"
    if isinstance(v, dict):
        return json.dumps(v, default=str)
    return str(v)


def _parse_array(text: str) -> list[str | None]:
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
            items.append(None if word == "NULL" and not was_quoted else word)
            buf, was_quoted = [], False
        else:
            buf.append(ch)
    word = "".join(buf)
    items.append(None if word == "NULL" and not was_quoted else word)
    return items


_TEXT_PARAM: dict[int, Callable[[str], Any]] = {
    BOOL: lambda s: s.strip().lower() in ("t", "true", "1", "yes", "on"),
    INT2: int,
    INT4: int,
    INT8: int,
    FLOAT4: float,
    FLOAT8: float,
    NUMERIC: decimal.Decimal,
}


def parse_text_param(text: str, oid: int) -> Any:
    """A parameter sent in text format, as the Python value DuckDB binds."""
    if oid in _TEXT_PARAM:
        return _TEXT_PARAM[oid](text)
    if oid in _ARRAY_OIDS.values() and text.startswith("{"):
        element = next((k for k, v in _ARRAY_OIDS.items() if v == oid), TEXT)
        return [None if x is None else parse_text_param(x, element) for x in _parse_array(text)]
    return text
