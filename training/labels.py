"""Labels of curated examples: the side table training_example_labels, kept with every write of training_examples.

A label filter over DuckDB's list column reads and searches every example's
list (100-200 ms over 1,000,000 examples, whatever the filter's selectivity);
the side table holds one (example_id, label) row per element of each list, so
a filter reads the few row groups of its labels and joins their ids. Every
writer of training_examples (examples.py and the SQL door) changes the side
table in the same transaction, through the functions here: a rollback undoes
both, and no reader ever sees one without the other.

The rows are the distinct (example, label) pairs of the lists: a label repeated
in one list is one row, so a count of rows is a count of examples. Each row
carries the example's filter and sort columns (schema.LABEL_COLUMNS), so a
list filtered by labels and those is answered here, and only a page's rows are
read from training_examples.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from training import schema
from training.store import Cursor

_IDS = "_meansql_label_ids"
# Changing one of these changes the example's label rows.
FIELDS = ("id", "labels", *schema.LABEL_COLUMNS)


def touches(fields: Sequence[str]) -> bool:
    """Whether a change of these fields has to rewrite the example's label rows."""
    return any(f in FIELDS for f in fields)


def add(cur: Cursor, view: str) -> None:
    """Label rows of new examples, read from a registered relation `view` with id and labels columns."""
    cur.execute(schema.LABELS_FROM.format(source=view))


def replace(cur: Cursor, ids: Sequence[str]) -> None:
    """Make the label rows of these examples those of their current lists (none for ids no longer stored)."""
    sync(cur, "replace", ids)


def sync(cur: Cursor, how: str, ids: Sequence[str]) -> None:
    """Label rows for examples just written: ``fill`` (new ids), ``drop`` (deleted ids), ``replace`` (either),
    ``rebuild`` (all rows again, whatever ids), or ``""`` (the write changed no list)."""
    if how == "rebuild":
        rebuild(cur)
        return
    if not how or not ids:
        return
    cur.register(_IDS, pa.table({"id": pa.array(list(ids), pa.string())}))
    try:
        if how in ("drop", "replace"):
            cur.execute(schema.LABELS_DELETE.format(ids=_IDS))
        if how in ("fill", "replace"):
            cur.execute(schema.LABELS_RESYNC.format(ids=_IDS))
    finally:
        cur.unregister(_IDS)


def rebuild(cur: Cursor) -> None:
    """Every label row again from the lists (after a write that did not say which examples it changed)."""
    for statement in schema.LABELS_REBUILD:
        cur.execute(statement)


def key(label: str) -> int:
    """The label's label_key: md5_number_lower(label), as DuckDB computes it when it writes the row."""
    return int.from_bytes(hashlib.md5(label.encode()).digest()[8:], "little")


def bits(labels: Sequence[str]) -> int:
    """The labels' bits in label_bits (schema.LABEL_BIT)."""
    mask = 0
    for label in labels:
        mask |= 1 << (key(label) % 64)
    return mask


def _rows_of(wanted: Sequence[str], params: list[Any], keyed: bool = True) -> str:
    """Rows of any of the labels: the integer keys first (a cheap compare over every row), the text confirms.

    keyed=False: a side table without label_key (the PostgreSQL store's, indexed on label)."""
    marks = ", ".join("?" for _ in wanted)
    if not keyed:
        params.extend(wanted)
        return f"label IN ({marks})"
    params.extend(key(w) for w in wanted)
    params.extend(wanted)
    if len(wanted) == 1:
        return "label_key = ? AND label = ?"
    return f"label_key IN ({marks}) AND label IN ({marks})"


def condition(labels: Sequence[str], mode: str, params: list[Any], *, keyed: bool = True) -> str:
    """`id IN (...)` for examples with any (or all) of the labels, appending its parameters to params."""
    wanted = list(dict.fromkeys(labels))
    rows = _rows_of(wanted, params, keyed)
    if mode == "any" or len(wanted) == 1:
        return f"id IN (SELECT example_id FROM training_example_labels WHERE {rows})"
    params.append(len(wanted))
    # Rows are distinct (example, label) pairs, so count(*) counts the wanted labels an example has.
    return f"id IN (SELECT example_id FROM training_example_labels WHERE {rows} GROUP BY example_id HAVING count(*) = ?)"


# DuckDB rewrites a top-N of at most late_materialization_max_rows (50) rows, whose scan reads columns its sort does not
# (the filter's), into a second scan of the table joined on rowid. For a page of ids alone that second scan costs more
# than the top-N itself (a label page: 13 against 6.5 ms of CPU; a page by quality: 31 against 21), and the server
# locks DuckDB's configuration, so no session may lower the setting: a query of a page's ids asks for more rows than
# that, and the caller keeps the ones it wants.
LATE_MATERIALIZATION_ROWS = 50


def top(n: int) -> int:
    """The LIMIT of a query of ids whose first n rows are wanted: n, or just over DuckDB's late-materialization bound."""
    return max(n, LATE_MATERIALIZATION_ROWS + 1)


# Starts a count(*) query (SQL text, parameters) and returns what waits for its number.
Count = Callable[[str, Sequence[Any]], Callable[[], int]]


def counted_on(cur: Cursor) -> Count:
    """Counts run on `cur` when their number is asked for."""

    def start(sql: str, params: Sequence[Any]) -> Callable[[], int]:
        def total() -> int:
            row = cur.execute(sql, list(params)).fetchone()
            return int(row[0]) if row else 0

        return total

    return start


def page(
    cur: Cursor,
    labels: Sequence[str],
    mode: str,
    *,
    column: str | None,
    order: str,
    limit: int,
    offset: int,
    extra: str = "",
    extra_params: Sequence[Any] = (),
    count: Count | None = None,
) -> tuple[list[str], int]:
    """Ids of one page of the examples with any (or all) of the labels, ordered by `column` (one of the side table's
    sort columns, or None: by id alone) and id, and their total; `extra` is more conditions on the side table's
    columns (" AND ...", with extra_params). `count` runs the total's query (default: on cur, after the page's), which
    starts before the page's query when it does not come with the page."""
    count = count or counted_on(cur)
    wanted = list(dict.fromkeys(labels))
    key_order = "example_id" if column is None else f"{column} {order.upper()} NULLS LAST, example_id"
    newest = column == "created_at" and order == "desc"
    # The rows of each label apart, as one query each (UNION ALL for several): `label_key = ?` lets DuckDB skip the row
    # groups whose zonemap leaves the key out, and a compare with one constant costs less than with an IN list.
    each = [_label_where([w], extra, extra_params) for w in wanted]
    if len(wanted) == 1:
        # One row per example: the page is a top-N of the rows, the total their count.
        where, params = each[0]
        if newest:
            n, since = _newest(cur, each, offset + top(limit))
            total = _known(n)
        else:
            since = None
            total = count(f"SELECT count(*) FROM training_example_labels WHERE {where}", params)
        # The UUIDs themselves: a CAST in the query would run on every matching row before the top-N.
        rows = _top_rows(
            cur,
            f"SELECT example_id FROM training_example_labels WHERE {where}{_SINCE} ORDER BY {key_order} LIMIT ? OFFSET ?",
            [*params, _BOUND],
            [top(limit), offset],
            since,
        )
        ids = [str(r[0]) for r in rows[:limit]]
    elif mode == "any":
        counted_params: list[Any] = []
        total = count(_count_any(wanted, extra, extra_params, counted_params), counted_params)
        # The sorted rows themselves: an example has at most one row per wanted label and its rows sort next to
        # each other, so (offset + limit) x labels rows hold the page once repeats are dropped.
        need = top((offset + limit) * len(wanted))
        since = _newest(cur, each, need)[1] if newest else None
        value = "" if column is None else f", {column}"
        union = " UNION ALL ".join(f"SELECT example_id{value} FROM training_example_labels WHERE {w}{_SINCE}" for w, _ in each)
        union_params = [v for _, p in each for v in (*p, _BOUND)]
        rows = _top_rows(cur, f"SELECT example_id FROM ({union}) ORDER BY {key_order} LIMIT ?", union_params, [need], since)
        ids = list(dict.fromkeys(str(r[0]) for r in rows))[offset : offset + limit]
    else:
        # One row per example with all of them: the first label's rows joined on the example to each other's (rows
        # are distinct (example, label) pairs), with the filter on the first's. Examples with all of several labels
        # are few (at most those of the rarest): the total comes with the page, so the join runs once.
        joined, join_params = _all_of(wanted, extra, extra_params)
        value = "" if column is None else f", a.{column} AS {column}"
        rows = cur.execute(
            f"SELECT CAST(example_id AS VARCHAR), count(*) OVER () FROM (SELECT a.example_id{value} {joined}) "
            f"ORDER BY {key_order} LIMIT ? OFFSET ?",
            [*join_params, limit, offset],
        ).fetchall()
        if rows:
            return [str(r[0]) for r in rows], int(rows[0][1])
        ids = []
        total = counted_on(cur)(f"SELECT count(*) {joined}", join_params)
    if len(ids) < limit and (ids or offset == 0):
        return ids, offset + len(ids)
    return ids, total()


def _known(n: int) -> Callable[[], int]:
    """A total already counted."""
    return lambda: n


def _label_where(wanted: Sequence[str], extra: str, extra_params: Sequence[Any]) -> tuple[str, list[Any]]:
    """The condition on label rows of any of the labels and `extra`, and its parameters."""
    params: list[Any] = []
    where = _rows_of(wanted, params) + extra
    params.extend(extra_params)
    return where, params


def _newest(cur: Cursor, each: Sequence[tuple[str, Sequence[Any]]], need: int) -> tuple[int, Any]:
    """How many rows match (conditions with their parameters, one per label), and a created_at from which on probably
    `need` of them or more lie (None: no bound).

    Newest first is the order a top-N finds dearest: rows arrive in created_at order, so each vector read holds
    rows newer than all before it and every one enters the top-N's heap (label7 or label9, 200,000 rows: 30 ms of
    CPU, against 5 with a bound that leaves a few hundred). The bound assumes the matching rows spread evenly
    between their oldest and newest, with room to spare; _top_rows reads again without it when it holds too few."""
    sql = " UNION ALL ".join(
        f"SELECT count(*), min(created_at), max(created_at) FROM training_example_labels WHERE {where}" for where, _ in each
    )
    found = cur.execute(sql, [v for _, p in each for v in p]).fetchall()
    n = sum(int(r[0]) for r in found)
    oldest = min((r[1] for r in found if r[1] is not None), default=None)
    newest = max((r[2] for r in found if r[2] is not None), default=None)
    share = 4 * need / n if n else 1.0
    if oldest is None or newest is None or share >= 0.5:
        return n, None
    return n, newest - (newest - oldest) * share


# Where the created_at bound of _newest goes in a top-N query of label rows (_SINCE in its text, _BOUND among its
# parameters, one of each per table read).
_SINCE = "/*since*/"
_BOUND = object()


def _top_rows(cur: Cursor, sql: str, params: Sequence[Any], limits: Sequence[Any], since: Any) -> list[Any]:
    """The rows of a top-N query (_SINCE in sql and _BOUND in params: where a created_at bound goes; limits: its LIMIT
    (and OFFSET) values): with the bound first, when there is one, and again without it when it left the top-N short
    (rows older than the bound, or with none, sort after every row it keeps, so a full top-N under it is the same)."""
    if since is not None:
        bounded = [since if v is _BOUND else v for v in params]
        rows = cur.execute(sql.replace(_SINCE, " AND created_at >= ?"), [*bounded, *limits]).fetchall()
        if len(rows) == limits[0]:
            return rows
    return cur.execute(sql.replace(_SINCE, ""), [*(v for v in params if v is not _BOUND), *limits]).fetchall()


def _count_any(wanted: Sequence[str], extra: str, extra_params: Sequence[Any], params: list[Any]) -> str:
    """The count of examples with any of the labels, appending its parameters to params: the rows of each label whose
    example has none of the labels before it, summed (no distinct count of every row's example)."""
    terms = []
    for i, label in enumerate(wanted):
        rows = _rows_of([label], params) + extra
        params.extend(extra_params)
        if i:
            # Of the earlier labels' rows, those whose example may have this label too (its bit set) hold every example
            # with both: far fewer ids for the NOT IN to hash.
            earlier = _rows_of(wanted[:i], params)
            params.append(bits([label]))
            rows += f" AND example_id NOT IN (SELECT example_id FROM training_example_labels WHERE {earlier} AND label_bits & ? <> 0)"
        terms.append(f"(SELECT count(*) FROM training_example_labels WHERE {rows})")
    return "SELECT " + " + ".join(terms)


def _all_of(wanted: Sequence[str], extra: str, extra_params: Sequence[Any]) -> tuple[str, list[Any]]:
    """FROM ... WHERE ... of one row per example with all of the labels (the first label's row, as `a`)."""
    # Only rows whose bits allow every wanted label: the join confirms, each side holds every example with all of them.
    mask = bits(wanted)
    params: list[Any] = []
    first = f"(SELECT * FROM training_example_labels WHERE {_rows_of(wanted[:1], params)}{extra} AND label_bits & ? = ?) AS a"
    params.extend([*extra_params, mask, mask])
    joins = []
    for i, label in enumerate(wanted[1:]):
        rows = _rows_of([label], params) + " AND label_bits & ? = ?"
        params.extend([mask, mask])
        joins.append(f" JOIN (SELECT example_id FROM training_example_labels WHERE {rows}) AS l{i} ON l{i}.example_id = a.example_id")
    return f"FROM {first}{''.join(joins)}", params


def counts(cur: Cursor) -> list[dict[str, Any]]:
    """Every label with how many examples carry it, most used first."""
    rows = cur.execute(schema.LABEL_COUNTS).fetchall()
    return [{"label": label, "count": int(n)} for label, n in rows]
