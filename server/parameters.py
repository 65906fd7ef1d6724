"""Session parameters as Postgres keeps them: which exist, how SET normalises them, which are reported.

Also the two statement rewrites that make DuckDB answer as Postgres does: a
division or modulo by zero is an error (22012) rather than NULL or Infinity,
and current_setting()/set_config() read and write the session's parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.tokens import TokenType

from server.errors import CantChangeRuntimeParam, InvalidParameterValue
from server.statements import ThreadTokenizer

# Parameters Postgres sends a ParameterStatus for when they change (GUC_REPORT).
REPORTED = frozenset({"application_name", "client_encoding", "datestyle", "intervalstyle", "timezone",
                      "integer_datetimes", "is_superuser", "server_encoding", "server_version",
                      "standard_conforming_strings"})
FIXED = frozenset({"server_version", "server_encoding", "integer_datetimes", "is_superuser", "lc_messages",
                   "max_identifier_length"})
SETTABLE = frozenset({"application_name", "client_encoding", "datestyle", "extra_float_digits", "intervalstyle",
                      "search_path", "standard_conforming_strings", "statement_timeout", "timezone",
                      "idle_in_transaction_session_timeout", "transaction_isolation", "default_transaction_isolation", "jit"})
_DISPLAY = {"datestyle": "DateStyle", "timezone": "TimeZone", "intervalstyle": "IntervalStyle"}

DIVISOR_MACRO = "meansql_nonzero"
_MACRO_SQL = (f"CREATE OR REPLACE TEMP MACRO {DIVISOR_MACRO}(x) AS "
              "CASE WHEN x = 0 THEN error('division by zero') ELSE x END")

# DuckDB has one JSON type: jsonb is a name for it.
_PREPARE_SQL = f"SET integer_division = true; {_MACRO_SQL}; CREATE TEMP TYPE IF NOT EXISTS jsonb AS JSON"

_TOKENIZER = ThreadTokenizer(DuckDB)
_CONFIG_FUNCTIONS = ("CURRENT_SETTING", "SET_CONFIG")


class NotOurs(Exception):
    """A current_setting() of a DuckDB setting: leave the call to DuckDB."""


def display_name(name: str) -> str:
    """The spelling Postgres uses in SHOW's column and ParameterStatus (DateStyle, TimeZone, ...)."""
    return _DISPLAY.get(name, name)


def prepare_cursor(cursor: duckdb.DuckDBPyConnection) -> None:
    """Per-session DuckDB settings so arithmetic works as in Postgres (7 / 2 = 3)."""
    # One call for the three: each execute() costs a parse and a commit, and every connection (a fuzzed
    # or dropped one too) pays for them before its first message.
    cursor.execute(_PREPARE_SQL)


def apply_timezone(cursor: duckdb.DuckDBPyConnection, value: str) -> None:
    try:
        cursor.execute(f"SET TimeZone = '{value.replace(chr(39), chr(39) * 2)}'")
    except duckdb.Error as exc:
        raise InvalidParameterValue(f'invalid value for parameter "TimeZone": "{value}"') from exc


def _invalid(name: str, value: str) -> InvalidParameterValue:
    return InvalidParameterValue(f'invalid value for parameter "{display_name(name)}": "{value}"')


_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?\s*$", re.I)
_UNITS_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def _duration(value: str) -> str:
    """A time setting as SHOW prints it: the largest unit that divides it exactly ('5s', '200ms')."""
    m = _DURATION.match(value)
    if not m:
        raise ValueError(value)
    ms = round(float(m.group(1)) * _UNITS_MS[(m.group(2) or "ms").lower()])
    if ms < 0:
        raise ValueError(value)
    if ms == 0:
        return "0"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _datestyle(value: str, current: str) -> str:
    style, order = (p.strip() for p in (current.split(",") + ["MDY"])[:2])
    for word in re.split(r"[\s,]+", value.strip()):
        w = word.upper()
        if not w:
            continue
        if w in ("ISO", "SQL", "POSTGRES", "GERMAN"):
            style = {"POSTGRES": "Postgres", "GERMAN": "German"}.get(w, w)
        elif w in ("DMY", "EURO", "EUROPEAN"):
            order = "DMY"
        elif w in ("MDY", "US", "NONEURO", "NONEUROPEAN"):
            order = "MDY"
        elif w == "YMD":
            order = "YMD"
        elif w != "DEFAULT":
            raise ValueError(value)
    if style != "ISO":
        raise InvalidParameterValue(f"meansql prints dates in ISO style only, not {style}",
                                    hint="SET DateStyle = 'ISO, MDY'")
    return f"{style}, {order}"


def _on_off(value: str) -> str:
    w = value.strip().lower()
    if w in ("on", "true", "yes", "1", "t"):
        return "on"
    if w in ("off", "false", "no", "0", "f"):
        return "off"
    raise ValueError(value)


def _client_encoding(value: str) -> str:
    if value.strip().strip("'").upper().replace("-", "").replace("_", "") in ("UTF8", "UNICODE"):
        return "UTF8"
    raise InvalidParameterValue(f'meansql speaks UTF8 only, not "{value}"', hint="SET client_encoding = 'UTF8'")


def _float_digits(value: str) -> str:
    n = int(value)
    if not -15 <= n <= 3:
        raise ValueError(value)
    return str(n)


_NORMALISE: dict[str, Callable[[str], str]] = {
    "statement_timeout": _duration,
    "idle_in_transaction_session_timeout": _duration,
    "standard_conforming_strings": _on_off,
    "client_encoding": _client_encoding,
    "extra_float_digits": _float_digits,
    "intervalstyle": lambda v: "postgres" if v.strip().lower() == "postgres" else _fail(v),
}


def _fail(value: str) -> str:
    raise ValueError(value)


def normalise(name: str, value: str, settings: dict[str, str]) -> str:
    """The value SET stores and SHOW prints; raises 22023 for a value Postgres refuses."""
    if name in FIXED:
        raise CantChangeRuntimeParam(f'parameter "{name}" cannot be changed')
    try:
        if name == "datestyle":
            return _datestyle(value, settings.get("datestyle", "ISO, MDY"))
        if name in _NORMALISE:
            return _NORMALISE[name](value)
    except ValueError as exc:
        raise _invalid(name, value) from exc
    return value


def needs_rewrite(text: str) -> bool:
    """Whether `rewrite` may change the text: it holds a division, a modulo or a session-setting call."""
    # Most statements have no operator or function to look at: skip tokenizing them.
    lower = text.lower()
    if "/" not in text and "%" not in text and "div" not in lower and "current_setting" not in lower \
            and "set_config" not in lower:
        return False
    try:
        tokens = _TOKENIZER.tokenize(text)
    except sqlglot.errors.TokenError:
        return False
    for tok in tokens:
        if tok.token_type in (TokenType.SLASH, TokenType.MOD, TokenType.DIV):
            return True
        if tok.token_type == TokenType.VAR and tok.text.upper() in _CONFIG_FUNCTIONS:
            return True
    return False


def _literal_text(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Boolean):
        return "true" if node.this else "false"
    if isinstance(node, exp.Literal):
        return str(node.this)
    raise NotOurs


ConfigCall = Callable[[str, list[str | None]], str | None]


def rewrite(text: str, config_call: ConfigCall) -> str:
    """DuckDB text in which x / 0 and x % 0 raise 22012 and current_setting/set_config see the session."""
    if not needs_rewrite(text):
        return text
    try:
        tree = sqlglot.parse_one(text, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return text  # DuckDB reports the syntax error on the text as written

    def replace(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Div | exp.Mod | exp.IntDiv):
            divisor = node.expression
            if not (isinstance(divisor, exp.Literal) and not divisor.is_string and float(divisor.this) != 0):
                node.set("expression", exp.Anonymous(this=DIVISOR_MACRO, expressions=[divisor.copy()]))
            return node
        if isinstance(node, exp.Anonymous) and str(node.this).upper() in _CONFIG_FUNCTIONS:
            try:
                args = [_literal_text(a) for a in node.expressions]
                value = config_call(str(node.this).lower(), args)
            except NotOurs:
                return node
            return exp.Null() if value is None else exp.Literal.string(value)
        return node

    return tree.transform(replace).sql(dialect="duckdb")
