"""The persistent answer cache: a key per (operator, model, full rendered prompt).

Reading it writes nothing; only answers that parsed are ever written.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from training import schema
from training.store import Store


def lookup(store: Store, keys: Sequence[str]) -> dict[str, Any]:
    """Cached answers for those keys that have one."""
    if not keys:
        return {}
    cur = store.cursor()
    try:
        # An Arrow table of keys joins fast; a list parameter is converted value by value.
        cur.register("_meansql_keys", pa.table({"key": pa.array(list(keys), pa.string())}))
        rows = cur.execute(schema.CACHE_LOOKUP).fetchall()
    finally:
        cur.close()
    return {k: json.loads(v) for k, v in rows}


def rows(entries: Iterable[tuple[str, str, str, Any, str]]) -> list[tuple[Any, ...]]:
    """(key, cascade_id, model, answer, trace_id) tuples as insert rows."""
    now = dt.datetime.now()
    return [(k, c, m, json.dumps(a), t, now) for k, c, m, a, t in entries]
