"""The curated training-example store: create, read, change, delete, list, stats, bulk, promote.

Writes go through the store's writer thread, each with its outbox events in the
same transaction (events.py); a unique source_trace_hash is checked there, so
two writers cannot both create the same example. Reads use their own cursor.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import pyarrow as pa

from training import events, schema, search
from training import labels as label_rows
from training.errors import DuplicateExample, ExampleNotFound, InvalidExample
from training.models import (
    ExampleFilter,
    OnConflict,
    TrainingExample,
    TrainingExampleCreate,
    TrainingExampleImport,
    TrainingExampleUpdate,
    validate,
)
from training.store import Cursor, Store

ORDER_COLUMNS = ("created_at", "updated_at", "quality_score", "confidence", "difficulty", "relevance")


# -- rows <-> models ------------------------------------------------------------
def _from_row(row: Sequence[Any]) -> TrainingExample:
    data = dict(zip(schema.EXAMPLE_FIELDS, row))
    for name in schema.JSON_FIELDS:
        if isinstance(data[name], str):
            data[name] = json.loads(data[name])
    for name, empty in (("input_structured", {}), ("expected_actions", []), ("metadata", {}), ("labels", [])):
        if data[name] is None:
            data[name] = empty
    return TrainingExample.model_validate(data)


def _values(example: TrainingExampleCreate, now: dt.datetime) -> dict[str, Any]:
    data = dict(example)  # the fields as validated (a model_dump copies every nested value: twice the cost)
    values: dict[str, Any] = {name: data.get(name) for name in schema.EXAMPLE_FIELDS}
    values["id"] = str(data.get("id") or uuid.uuid4())
    values["agent_id"] = str(data["agent_id"]) if data.get("agent_id") else None
    values["created_at"] = data.get("created_at") or now
    values["updated_at"] = data.get("updated_at") or now
    values["input_structured"] = json.dumps(data.get("input_structured") or {})
    values["expected_actions"] = json.dumps(data.get("expected_actions") or [])
    values["metadata"] = json.dumps(data.get("metadata") or {})
    values["labels"] = list(data.get("labels") or [])
    if values["confidence"] is None:
        values["confidence"] = 1.0
    return values


def _get(cur: Cursor, example_id: str) -> TrainingExample | None:
    row = cur.execute(schema.SELECT_EXAMPLES + " WHERE id = TRY_CAST(? AS UUID)", [example_id]).fetchone()
    return _from_row(row) if row else None


def _by_hash(cur: Cursor, source_hash: str) -> str | None:
    row = cur.execute("SELECT CAST(id AS VARCHAR) FROM training_examples WHERE source_trace_hash = ?", [source_hash]).fetchone()
    return str(row[0]) if row else None


_ARROW_TYPES: dict[str, pa.DataType] = {
    "quality_score": pa.float64(), "confidence": pa.float64(), "difficulty": pa.float64(),
    "labels": pa.list_(pa.string()), "created_at": pa.timestamp("us"), "updated_at": pa.timestamp("us"),
}


def _insert(store: Store, cur: Cursor, rows: list[dict[str, Any]]) -> None:
    """Insert through an Arrow table with explicit types (a column of NULLs or [] has none of its own)."""
    if not rows:
        return
    data = pa.table({f: pa.array([r[f] for r in rows], _ARROW_TYPES.get(f, pa.string())) for f in schema.EXAMPLE_FIELDS})
    view = "_meansql_examples"
    cur.register(view, data)
    try:
        cur.execute(f"INSERT INTO training_examples ({', '.join(schema.EXAMPLE_FIELDS)}) "
                    f"SELECT {', '.join(schema.EXAMPLE_FIELDS)} FROM {view}")
        if not store.triggers:
            label_rows.add(cur, view)
    finally:
        cur.unregister(view)


def _relabel(store: Store, cur: Cursor, ids: Sequence[str]) -> None:
    """Label rows of changed or deleted examples (the database's triggers write them when it has some)."""
    if not store.triggers:
        label_rows.replace(cur, ids)


def _update(store: Store, cur: Cursor, example_id: str, changes: Mapping[str, Any], now: dt.datetime) -> list[str]:
    fields = [f for f in changes if f in schema.EXAMPLE_FIELDS and f not in ("id", "created_at", "updated_at")]
    if not fields:
        return []
    store.note_updated(cur, fields)
    params: list[Any] = []
    sets = []
    for f in fields:
        value = changes[f]
        if f in schema.JSON_FIELDS:
            value = json.dumps(value if value is not None else ({} if f != "expected_actions" else []))
        elif f == "agent_id" and value is not None:
            value = str(value)
        elif f == "labels":
            value = list(value or [])
        sets.append(f"{f} = CAST(? AS JSON)" if f in schema.JSON_FIELDS else f"{f} = ?")
        params.append(value)
    store.update(cur, f"UPDATE training_examples SET {', '.join(sets)}, updated_at = ? WHERE id = CAST(? AS UUID)",
                 [*params, now, example_id])
    return fields


def _commit(store: Store, fn: Any) -> Any:
    """Run fn(cur, outbox) on the writer; its events go to the outbox in the same transaction."""
    outbox: list[dict[str, Any]] = []

    def write(cur: Cursor) -> Any:
        outbox.clear()
        result = fn(cur, outbox)
        if not store.triggers:
            events.record(cur, outbox)
        return result

    result = store.write(write).result()
    store.committed(list(outbox))
    return result


# -- one example ------------------------------------------------------------------
def create(store: Store, data: Any, *, on_conflict: OnConflict = "error") -> tuple[TrainingExample, str]:
    """Store a new example; returns it and what happened: created, skipped or updated.

    A source_trace_hash that exists raises DuplicateExample (with the existing id)
    unless on_conflict is skip (the existing example is returned) or update.
    """
    example = validate(TrainingExampleImport if isinstance(data, Mapping) and "id" in data else TrainingExampleCreate, data)
    (result,) = bulk(store, [example], on_conflict=on_conflict, strict=True)
    if result["status"] == "conflict":
        raise DuplicateExample(
            f"an example with source_trace_hash {example.source_trace_hash!r} exists: {result['id']}",
            existing_id=result["id"], hint="pass on_conflict=skip or on_conflict=update")
    found = get(store, result["id"])
    assert found is not None
    return found, str(result["status"])


def get(store: Store, example_id: str) -> TrainingExample | None:
    cur = store.cursor()
    try:
        return _get(cur, example_id)
    finally:
        cur.close()


def update(store: Store, example_id: str, data: Any) -> TrainingExample:
    """Change the fields given; raises ExampleNotFound or DuplicateExample."""
    patch = validate(TrainingExampleUpdate, data)
    changes = patch.model_dump(exclude_unset=True)
    for name in ("source_type", "input_text", "task_type"):
        if name in changes and changes[name] is None:
            raise InvalidExample(f"field '{name}': may not be null", field=name)

    def write(cur: Cursor, outbox: list[dict[str, Any]]) -> bool:
        row = cur.execute("SELECT count(*) FROM training_examples WHERE id = TRY_CAST(? AS UUID)", [example_id]).fetchone()
        if not row or not row[0]:
            return False
        h = changes.get("source_trace_hash")
        if h is not None:
            other = _by_hash(cur, h)
            if other is not None and other != example_id:
                raise DuplicateExample(f"an example with source_trace_hash {h!r} exists: {other}", existing_id=other)
        fields = _update(store, cur, example_id, changes, dt.datetime.now())
        if not fields:
            return True  # nothing to change: no UPDATE, so no event (PostgreSQL's trigger fires on none either)
        if label_rows.touches(fields):
            _relabel(store, cur, [example_id])
        outbox.append(events.example_updated(example_id, fields))
        return True

    if not _commit(store, write):
        raise ExampleNotFound(f"no training example has id {example_id}")
    found = get(store, example_id)
    assert found is not None
    return found


def delete(store: Store, example_id: str) -> None:
    """Delete one example; raises ExampleNotFound."""

    def write(cur: Cursor, outbox: list[dict[str, Any]]) -> bool:
        # Looked up first: DuckDB returns no rows from a DELETE on an attached PostgreSQL table.
        row = cur.execute("SELECT CAST(id AS VARCHAR) FROM training_examples WHERE id = TRY_CAST(? AS UUID)",
                          [example_id]).fetchone()
        if row:
            cur.execute("DELETE FROM training_examples WHERE id = CAST(? AS UUID)", [row[0]])
            _relabel(store, cur, [str(row[0])])
            outbox.append(events.example_deleted(str(row[0])))
        return row is not None

    if not _commit(store, write):
        raise ExampleNotFound(f"no training example has id {example_id}")


# -- many examples -----------------------------------------------------------------
def bulk(store: Store, items: Sequence[Any], *, on_conflict: OnConflict = "error", strict: bool = False) -> list[dict[str, Any]]:
    """Store many examples in one transaction; one result per item, in order.

    Each result has ``index``, ``status`` (created, updated, skipped, conflict
    or invalid), ``id`` and, for invalid rows, ``error`` and ``field``. A bad row
    never costs the others their place. With strict, invalid rows raise.
    """
    results: list[dict[str, Any]] = []
    valid: list[tuple[int, TrainingExampleCreate]] = []
    for i, item in enumerate(items):
        try:
            valid.append((i, validate(TrainingExampleImport, item)))
            results.append({"index": i, "status": "pending", "id": None})
        except InvalidExample as exc:
            if strict:
                raise
            results.append({"index": i, "status": "invalid", "id": None, "error": exc.message, "field": exc.field})
    now = dt.datetime.now()

    def write(cur: Cursor, outbox: list[dict[str, Any]]) -> None:
        hashes = [e.source_trace_hash for _, e in valid if e.source_trace_hash]
        existing: dict[str, str] = {}
        if hashes:
            cur.register("_meansql_hashes", pa.table({"h": pa.array(hashes, pa.string())}))
            try:
                existing = {h: str(i) for h, i in cur.execute(
                    "SELECT source_trace_hash, CAST(id AS VARCHAR) FROM training_examples "
                    "WHERE source_trace_hash IN (SELECT h FROM _meansql_hashes)").fetchall()}
            finally:
                cur.unregister("_meansql_hashes")
        new_rows: list[dict[str, Any]] = []
        relabelled: list[str] = []
        for i, example in valid:
            res = results[i]
            h = example.source_trace_hash
            if h and h in existing:
                res["id"] = existing[h]
                if on_conflict == "error":
                    res["status"] = "conflict"
                elif on_conflict == "skip":
                    res["status"] = "skipped"
                else:
                    changes = example.model_dump(exclude_unset=True, exclude={"id", "created_at", "updated_at"})
                    fields = _update(store, cur, existing[h], changes, now)
                    if label_rows.touches(fields):
                        relabelled.append(existing[h])
                    outbox.append(events.example_updated(existing[h], fields))
                    res["status"] = "updated"
                continue
            values = _values(example, now)
            if h:
                existing[h] = values["id"]
            new_rows.append(values)
            res["id"], res["status"] = values["id"], "created"
            outbox.append(events.example_created(values))
        _relabel(store, cur, relabelled)
        _insert(store, cur, new_rows)

    _commit(store, write)
    return results


def _where(f: ExampleFilter, params: list[Any], *, labels: bool = True, keyed: bool = True) -> str:
    """The filters other than q as conditions on training_examples' columns (all but labels are also the label side
    table's: labels=False leaves the label filter out)."""
    parts: list[str] = []

    def add(sql: str, *values: Any) -> None:
        parts.append(sql)
        params.extend(values)

    if f.agent_id is not None:
        add("agent_id = CAST(? AS UUID)", str(f.agent_id))
    for name in ("domain", "cascade_id", "cell_name"):
        if getattr(f, name) is not None:
            add(f"{name} = ?", getattr(f, name))
    if f.task_type is not None:
        add("task_type = ?", f.task_type.value)
    if f.source_type is not None:
        add("source_type = ?", f.source_type.value)
    if f.min_quality is not None:
        add("quality_score >= ?", f.min_quality)
    if f.max_quality is not None:
        add("quality_score <= ?", f.max_quality)
    if f.min_confidence is not None:
        add("confidence >= ?", f.min_confidence)
    if f.labels and labels:
        # Through the side table (labels.py): the rows of the wanted labels, not a search of every list.
        parts.append(label_rows.condition(f.labels, f.labels_mode, params, keyed=keyed))
    if f.created_after is not None:
        add("created_at >= ?", f.created_after)
    if f.created_before is not None:
        add("created_at < ?", f.created_before)
    return " AND ".join(parts) or "true"


def _relation(store: Store, cur: Cursor, f: ExampleFilter) -> tuple[str, list[Any]]:
    """FROM ... WHERE ... of the filtered examples (with a _score column when searching), and its params."""
    if f.q:
        rel, params, condition, cond_params = search.relation(store, cur, f.q)
        params = [*params, *cond_params]
    else:
        # No search: the table itself (no _score column), so its scan takes the filters and the top-N.
        rel, params, condition = "training_examples", [], "true"
    where = _where(f, params, keyed=not store.triggers)
    return f"{rel} AS t WHERE {condition} AND {where}", params


class _Totals:
    """Counts run on their own cursor, in a thread, beside the page's queries (DuckDB lets go of the GIL while a query
    runs, and a count and a top-N each leave a core idle part of the time); close() waits for every one started."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.threads: list[threading.Thread] = []

    def start(self, sql: str, params: Sequence[Any]) -> Callable[[], int]:
        done: Future[int] = Future()

        def run() -> None:
            try:
                cur = self.store.cursor()
                try:
                    row = cur.execute(sql, list(params)).fetchone()
                finally:
                    cur.close()
                done.set_result(int(row[0]) if row else 0)
            except BaseException as exc:  # handed to whoever asks for the number
                done.set_exception(exc)

        thread = threading.Thread(target=run, name="meansql-count", daemon=True)
        thread.start()
        self.threads.append(thread)
        return done.result

    def close(self) -> None:
        for thread in self.threads:
            thread.join()


def _by_labels(store: Store, cur: Cursor, f: ExampleFilter, column: str, order: str, limit: int,
               offset: int, totals: _Totals | None = None) -> tuple[list[Sequence[Any]], int] | None:
    """A page filtered by labels, filtered, ordered and counted in the side table (which carries every filter column
    but the full-text q, and every sort column but updated_at); None for a search or an order it cannot follow."""
    if not f.labels or f.q:
        return None
    if store.triggers:
        return None  # the database's own side table (PostgreSQL) carries only (example_id, label, quality_score)
    if column != "_score" and column not in schema.LABEL_SORT_COLUMNS:
        return None
    params: list[Any] = []
    extra = " AND " + _where(f, params, labels=False)
    ids, total = label_rows.page(cur, f.labels, f.labels_mode, column=None if column == "_score" else column, order=order,
                                 limit=limit, offset=offset, extra=extra, extra_params=params,
                                 count=totals.start if totals is not None else None)
    return _fetch(cur, ids), total


def _fetch(cur: Cursor, ids: list[str]) -> list[Sequence[Any]]:
    """The rows of a page's ids, in their order (a few ids: the primary key's index finds them)."""
    if not ids:
        return []
    found = cur.execute(f"{schema.SELECT_EXAMPLES} WHERE id IN ({', '.join('CAST(? AS UUID)' for _ in ids)})",
                        ids).fetchall()
    by_id = {str(r[0]): r for r in found}
    return [by_id[i] for i in ids if i in by_id]


def list_examples(store: Store, f: ExampleFilter | None = None, *, limit: int = 50, offset: int = 0,
                  order_by: str = "created_at", order: str = "desc") -> tuple[list[TrainingExample], int]:
    """A page of examples and the total that match the filters."""
    f = f or ExampleFilter()
    if order_by not in ORDER_COLUMNS:
        raise InvalidExample(f"field 'order_by': must be one of {', '.join(ORDER_COLUMNS)}", field="order_by")
    if order not in ("asc", "desc"):
        raise InvalidExample("field 'order': must be asc or desc", field="order")
    column = "_score" if order_by == "relevance" else order_by
    # Without a search there is no score: relevance orders by id alone.
    sort = "id" if column == "_score" and not f.q else f"{column} {order.upper()} NULLS LAST, id"
    cur = store.cursor()
    # On the DuckDB file the total is counted beside the page (the PostgreSQL store's attached tables: after it).
    totals = None if store.triggers else _Totals(store)
    count = totals.start if totals is not None else label_rows.counted_on(cur)
    try:
        labelled = _by_labels(store, cur, f, column, order, limit, offset, totals)
        if labelled is not None:
            return [_from_row(r) for r in labelled[0]], labelled[1]
        rel, params = _relation(store, cur, f)
        total = count(f"SELECT count(*) FROM {rel}", params)
        # The page as a top-N (a window count would make DuckDB sort every matching row); the total follows from the
        # page when it is not full, and costs a count(*) scan of the filter columns otherwise.
        if column == "created_at" and not store.triggers:
            # In insertion order (near enough that of created_at), the page's rows lie together: DuckDB takes the top-N
            # from the filter and sort columns, then reads the other columns of those rows' few vectors alone.
            rows: list[Sequence[Any]] = list(cur.execute(
                f"SELECT {', '.join(schema.EXAMPLE_FIELDS)} FROM {rel} ORDER BY {sort} LIMIT ? OFFSET ?",
                [*params, limit, offset]).fetchall())
            found = len(rows)
        else:
            # In any other order the page's rows lie far apart, and DuckDB's own fetch of a top-N's other columns
            # (a join on rowid) reads whole vectors of every wide column around each: the ids first, from the filter
            # and sort columns, then their rows, by id.
            # The UUIDs themselves (a CAST would run on every matching row before the top-N), and more than DuckDB's
            # late-materialization bound (labels.top).
            found_ids = cur.execute(f"SELECT id FROM {rel} ORDER BY {sort} LIMIT ? OFFSET ?",
                                    [*params, label_rows.top(limit), offset]).fetchall()
            ids = [str(r[0]) for r in found_ids[:limit]]
            rows = _fetch(cur, ids)
            found = len(ids)
        n = offset + found if found < limit and (found or offset == 0) else total()
    finally:
        if totals is not None:
            totals.close()
        cur.close()
    return [_from_row(r) for r in rows], n


def iter_examples(store: Store, f: ExampleFilter | None = None, *, chunk: int = 5000) -> Iterator[TrainingExample]:
    """Every matching example, oldest first, fetched in chunks (for export)."""
    f = f or ExampleFilter()
    cur = store.cursor()
    try:
        rel, params = _relation(store, cur, f)
        cur.execute(f"SELECT {', '.join(schema.EXAMPLE_FIELDS)} FROM {rel} ORDER BY created_at, id", params)
        while rows := cur.fetchmany(chunk):
            yield from (_from_row(r) for r in rows)
    finally:
        cur.close()


def stats(store: Store, f: ExampleFilter | None = None) -> dict[str, Any]:
    """Totals, averages and distributions of the matching examples."""
    f = f or ExampleFilter()
    cur = store.cursor()
    try:
        rel, params = _relation(store, cur, f)
        row = cur.execute(
            "SELECT count(*), avg(quality_score), avg(confidence), avg(difficulty), count(DISTINCT domain), "
            f"count(DISTINCT agent_id) FROM {rel}", params).fetchone()
        # The three distributions in one scan, as grouping sets (distinct counts stay out: per set they cost a lot).
        result = cur.execute(
            "SELECT grouping(domain, source_type, task_type) AS g, domain, source_type, task_type, count(*) "
            f"FROM {rel} GROUP BY GROUPING SETS ((domain), (source_type), (task_type))", params).fetchall()
    finally:
        cur.close()
    assert row is not None
    dist: dict[str, dict[str, int]] = {"domain": {}, "source_type": {}, "task_type": {}}
    for g, domain, source_type, task_type, n in result:
        if g == 3 and domain is not None:
            dist["domain"][str(domain)] = int(n)
        elif g == 5 and source_type is not None:
            dist["source_type"][str(source_type)] = int(n)
        elif g == 6 and task_type is not None:
            dist["task_type"][str(task_type)] = int(n)
    for name in dist:
        dist[name] = dict(sorted(dist[name].items(), key=lambda kv: (-kv[1], kv[0])))
    return {
        "total_examples": int(row[0]),
        "avg_quality_score": row[1], "avg_confidence": row[2], "avg_difficulty": row[3],
        "unique_domains": int(row[4]), "unique_agents": int(row[5]),
        "domain_distribution": dist["domain"],
        "source_type_distribution": dist["source_type"],
        "task_type_distribution": dist["task_type"],
    }


def labels(store: Store) -> list[dict[str, Any]]:
    """Every label with how many examples carry it, most used first."""
    cur = store.cursor()
    try:
        return label_rows.counts(cur)
    finally:
        cur.close()


# -- promotion ---------------------------------------------------------------------
def promote(store: Store, trace_id: str, overrides: Mapping[str, Any] | None = None, *,
            on_conflict: OnConflict = "error") -> tuple[TrainingExample, str]:
    """A logged, annotated model call as a curated example; the trace id stays linked.

    The example keeps the call's cascade_id and cell_name (so it feeds the same
    operator), its input, criterion and answer; source_trace_hash is
    ``trace:<trace_id>`` so promoting twice is a conflict.
    """
    cur = store.cursor()
    try:
        row = cur.execute(schema.SELECT_TRACE_FOR_PROMOTION, [trace_id]).fetchone()
    finally:
        cur.close()
    if row is None:
        raise ExampleNotFound(f"no logged model answer has trace_id {trace_id}",
                              hint="trace ids are in unified_logs (role = 'assistant')")
    (tid, session_id, query_id, cascade_id, cell_name, user_input, criterion, input_json,
     output, model, trainable, verified, confidence, notes, tags) = row
    data: dict[str, Any] = {
        "execution_id": query_id, "task_id": session_id,
        "source_type": "human_annotated" if verified else "execution_trace",
        "source_trace_hash": f"trace:{tid}", "source_trace_id": tid,
        "input_text": user_input or (input_json or "")[:10000] or "(empty)",
        "input_structured": {**(json.loads(input_json) if input_json else {}), **({"criterion": criterion} if criterion else {})},
        "output_text": output, "final_answer": output,
        "confidence": confidence if confidence is not None else None,
        "labels": list(tags or []),
        "metadata": {"model": model, "trainable": bool(trainable), "verified": bool(verified), "notes": notes},
        "extracted_by": "meansql promote", "cascade_id": cascade_id, "cell_name": cell_name,
    }
    data.update(overrides or {})
    return create(store, data, on_conflict=on_conflict)
