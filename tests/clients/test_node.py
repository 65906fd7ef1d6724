"""node-postgres (pg) against meansql and PostgreSQL alike.

tests/clients/node/check.js makes a table with one column of each common
type, writes a row through parameters and reads it back through the simple
and the extended protocol; it prints what pg made of each value (JS type and
value) as JSON, which the checks below compare.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.clients.conftest import Target

NODE_DIR = Path(__file__).parent / "node"

Result = dict[str, Any]


@pytest.fixture()
def result(target: Target, table_name: str) -> Result:
    assert shutil.which("node") and (NODE_DIR / "node_modules" / "pg").is_dir(), \
        "node and pg: scripts/install.sh --clients (npm ci in tests/clients/node)"
    out = subprocess.run(["node", "check.js", target.url, table_name], cwd=NODE_DIR, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "TZ": "UTC"})
    assert out.returncode == 0, out.stderr
    got: Result = json.loads(out.stdout)
    assert "error" not in got, got["error"]
    return got


# What pg gives for each column: int8 and numeric stay strings (no precision lost), date and
# timestamp without time zone are local-time Dates, json is parsed, int[] is an array of numbers.
ROW = {
    "i": {"type": "number", "value": 42},
    "b": {"type": "string", "value": "9007199254740993"},
    "f": {"type": "number", "value": 2.5},
    "n": {"type": "string", "value": "12.30"},
    "ok": {"type": "boolean", "value": True},
    "t": {"type": "string", "value": "héllo 'quoted'"},
    "d": {"type": "Date", "value": "2024-02-29T00:00:00.000Z"},
    "ts": {"type": "Date", "value": "2024-02-29T13:14:15.250Z"},
    "j": {"type": "Object", "value": {"k": [1, "two", None]}},
    "a": {"type": "Array", "value": [{"type": "number", "value": n} for n in (1, 2, 3)]},
}


def test_insert_with_parameters(result: Result) -> None:
    assert result["insert"] == {"command": "INSERT", "rowCount": 1}


def test_parameterised_query(result: Result) -> None:
    assert result["param"] == {
        "next": {"type": "number", "value": 42},
        "shout": {"type": "string", "value": "hi!"},
        "missing": {"type": "boolean", "value": True},
    }


def test_field_type_oids(result: Result) -> None:
    assert result["fields"] == [["i", 23], ["b", 20], ["f", 701], ["n", 1700], ["ok", 16], ["t", 25],
                                ["d", 1082], ["ts", 1114], ["j", 114], ["a", 1007]]


@pytest.mark.parametrize("column", list(ROW))
def test_values_through_the_simple_protocol(result: Result, column: str) -> None:
    assert result["simple"][column] == ROW[column]


@pytest.mark.parametrize("column", list(ROW))
def test_values_through_the_extended_protocol(result: Result, column: str) -> None:
    assert result["extendedCount"] == 1
    assert result["extended"][column] == ROW[column]


# The text the server sends, before pg parses it: Postgres' output format for each type (numeric
# padded to its scale, shortest round-trip floats with a two-digit exponent).
RAW = {"i": "42", "b": "9007199254740993", "f": "2.5", "n": "12.30", "ok": "t", "t": "héllo 'quoted'",
       "d": "2024-02-29", "ts": "2024-02-29 13:14:15.25", "j": '{"k": [1, "two", null]}', "a": "{1,2,3}",
       "f2": "2.6", "f3": "1e-07"}


@pytest.mark.parametrize("protocol", ["rawSimple", "rawExtended"])
def test_text_sent_by_the_server(result: Result, protocol: str) -> None:
    assert result[protocol] == RAW
