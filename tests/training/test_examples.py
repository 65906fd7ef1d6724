"""The curated example store on a real DuckDB file and on PostgreSQL: validation, dedup, filters, stats, search, export, promotion."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.training.test_stores import new_database, pg  # noqa: F401 (a fixture)
from training import examples, retrieval, schema, search
from training.annotations import annotate
from training.errors import DuplicateExample, ExampleNotFound, InvalidExample
from training.export import export
from training.logs import LogRecord
from training.models import ExampleFilter
from training.pgattach import AttachedStore
from training.pgstore import PostgresStore
from training.store import Store

AGENT = "550e8400-e29b-41d4-a716-446655440000"
MODAL = {
    "execution_id": "exec-12345", "task_id": "task-67890", "agent_id": AGENT, "source_type": "execution_trace",
    "source_trace_hash": "sha256:abc123", "input_text": "Implement a React component for a modal dialog",
    "input_structured": {"language": "typescript", "framework": "react"},
    "output_text": "I will create a modal component with...",
    "expected_actions": [{"tool": "Read", "params": {"file": "Modal.tsx"}}],
    "final_answer": "Modal component implemented successfully", "quality_score": 85.5, "confidence": 0.92,
    "labels": ["react", "component", "modal"], "domain": "frontend", "task_type": "code_generation", "difficulty": 0.6,
}
LEAK = {
    "source_type": "human_annotated", "input_text": "How do I fix a memory leak in my React app?",
    "output_text": "Memory leaks in React commonly occur from...", "final_answer": "Check for missing cleanup in useEffect hooks",
    "quality_score": 95.0, "confidence": 1.0, "labels": ["debugging", "react", "memory"], "domain": "troubleshooting",
    "task_type": "reasoning", "difficulty": 0.7, "extracted_by": "human-curator",
}
SORT = {"input_text": "Write a function to sort an array", "output_text": "function sortArray(arr) { return arr.sort(); }",
        "domain": "coding", "task_type": "code_generation", "quality_score": 60.0}


@pytest.fixture()
def file_store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "examples.duckdb")
    s.init()
    yield s
    s.close()


@pytest.fixture(params=["duckdb", "postgresql"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """The same tests on the DuckDB file and on a fresh PostgreSQL store (attached, as the HTTP API uses it)."""
    if request.param == "duckdb":
        yield request.getfixturevalue("file_store")
        return
    pg_store = PostgresStore(new_database(request.getfixturevalue("pg")))
    pg_store.init()
    s = AttachedStore(pg_store)
    yield s
    s.close()
    pg_store.close()


def test_create_get_update_delete(store: Store) -> None:
    created, status = examples.create(store, MODAL)
    assert status == "created"
    got = examples.get(store, str(created.id))
    assert got is not None and got.model_dump() == created.model_dump()
    assert got.agent_id == uuid.UUID(AGENT) and got.labels == ["react", "component", "modal"]
    assert got.input_structured == {"language": "typescript", "framework": "react"} and got.quality_score == 85.5
    changed = examples.update(store, str(created.id), {"quality_score": 92.0, "labels": ["verified"]})
    assert (changed.quality_score, changed.labels, changed.domain) == (92.0, ["verified"], "frontend")
    assert changed.updated_at > created.updated_at
    examples.delete(store, str(created.id))
    assert examples.get(store, str(created.id)) is None
    with pytest.raises(ExampleNotFound):
        examples.delete(store, str(created.id))
    with pytest.raises(ExampleNotFound):
        examples.update(store, "not-a-uuid", {"domain": "x"})


@pytest.mark.parametrize("bad, field", [
    ({**SORT, "quality_score": 101}, "quality_score"),
    ({**SORT, "confidence": -0.1}, "confidence"),
    ({**SORT, "difficulty": 2}, "difficulty"),
    ({**SORT, "task_type": "juggling"}, "task_type"),
    ({**SORT, "source_type": "rumour"}, "source_type"),
    ({**SORT, "agent_id": "agent-7"}, "agent_id"),
    ({"output_text": "no input"}, "input_text"),
    ({**SORT, "colour": "red"}, "colour"),
])
def test_validation_names_the_field(store: Store, bad: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidExample) as info:
        examples.create(store, bad)
    assert info.value.field == field and f"'{field}'" in info.value.message
    with pytest.raises(InvalidExample, match="quality_score"):
        examples.update(store, str(examples.create(store, SORT)[0].id), {"quality_score": 500})


def test_dedup_on_source_trace_hash(store: Store) -> None:
    first, _ = examples.create(store, MODAL)
    with pytest.raises(DuplicateExample) as info:
        examples.create(store, {**MODAL, "quality_score": 10})
    assert info.value.existing_id == str(first.id)
    skipped, status = examples.create(store, {**MODAL, "quality_score": 10}, on_conflict="skip")
    assert (status, skipped.id, skipped.quality_score) == ("skipped", first.id, 85.5)
    updated, status = examples.create(store, {**MODAL, "quality_score": 10}, on_conflict="update")
    assert (status, updated.id, updated.quality_score) == ("updated", first.id, 10)
    assert examples.list_examples(store)[1] == 1


def test_bulk_reports_each_row(store: Store) -> None:
    rows = [MODAL, {**SORT, "quality_score": 500}, LEAK, {**MODAL, "domain": "again"}, "not an object"]
    results = examples.bulk(store, rows)
    assert [r["status"] for r in results] == ["created", "invalid", "created", "conflict", "invalid"]
    assert results[1]["field"] == "quality_score" and results[3]["id"] == results[0]["id"]
    again = examples.bulk(store, [MODAL, LEAK], on_conflict="skip")
    assert [r["status"] for r in again] == ["skipped", "created"]  # LEAK has no hash: never a duplicate
    assert examples.list_examples(store)[1] == 3


def test_filters_order_and_total(store: Store) -> None:
    examples.bulk(store, [MODAL, LEAK, SORT, {**SORT, "source_trace_hash": "h2", "cascade_id": "semantic_matches",
                                              "labels": ["react", "memory"], "quality_score": 75}])
    def ids(**kw: object) -> list[str]:
        order = kw.pop("order_by", "quality_score")
        items, total = examples.list_examples(store, ExampleFilter.model_validate(kw), order_by=str(order))
        assert total == len(items)
        return [e.input_text[:8] for e in items]
    assert ids() == ["How do I", "Implemen", "Write a ", "Write a "]
    assert ids(min_quality=70, max_quality=90) == ["Implemen", "Write a "]
    assert ids(domain="coding") == ["Write a ", "Write a "]
    assert ids(source_type="human_annotated") == ["How do I"]
    assert ids(task_type="reasoning") == ["How do I"]
    assert ids(agent_id=AGENT) == ["Implemen"]
    assert ids(cascade_id="semantic_matches") == ["Write a "]
    assert ids(min_confidence=0.95) == ["How do I", "Write a ", "Write a "]  # confidence defaults to 1.0
    assert ids(labels=["memory", "modal"]) == ["How do I", "Implemen", "Write a "]
    assert ids(labels=["react", "memory"], labels_mode="all") == ["How do I", "Write a "]
    page, total = examples.list_examples(store, limit=2, offset=1, order_by="quality_score", order="asc")
    assert total == 4 and [e.quality_score for e in page] == [75, 85.5]
    future = ExampleFilter(created_after="2100-01-01T00:00:00")
    assert examples.list_examples(store, future) == ([], 0)
    assert examples.list_examples(store, ExampleFilter(created_before="2100-01-01T00:00:00"))[1] == 4


def test_stats_and_labels(store: Store) -> None:
    examples.bulk(store, [MODAL, LEAK, SORT])
    s = examples.stats(store)
    assert s["total_examples"] == 3 and s["unique_domains"] == 3 and s["unique_agents"] == 1
    assert s["avg_quality_score"] == pytest.approx((85.5 + 95 + 60) / 3)
    assert s["domain_distribution"] == {"coding": 1, "frontend": 1, "troubleshooting": 1}
    assert s["task_type_distribution"] == {"code_generation": 2, "reasoning": 1}
    assert s["source_type_distribution"] == {"execution_trace": 2, "human_annotated": 1}
    assert examples.stats(store, ExampleFilter(domain="coding"))["total_examples"] == 1
    assert examples.labels(store)[0] == {"label": "react", "count": 2}
    assert {d["label"] for d in examples.labels(store)} == {"react", "component", "modal", "debugging", "memory"}


def test_full_text_search(store: Store) -> None:
    examples.bulk(store, [MODAL, LEAK, SORT])
    def found(q: str) -> list[str]:
        items, total = examples.list_examples(store, ExampleFilter(q=q), order_by="relevance")
        assert total == len(items)
        return sorted(e.input_text[:8] for e in items)
    assert found("memory leak") == ["How do I"]
    assert found("REACT") == ["How do I", "Implemen"]
    assert found("sortArray") == ["Write a "]
    assert found("react sort") == []  # every word must match
    # A row written after the index was built is found too (and an edited one by its new text).
    examples.create(store, {**SORT, "input_text": "Explain the memory model of Rust"})
    leak = examples.list_examples(store, ExampleFilter(q="leak"))[0][0]
    examples.update(store, str(leak.id), {"input_text": "Garbage collection pauses", "output_text": "tune the GC",
                                          "final_answer": "ok"})
    assert found("memory") == ["Explain "]
    assert found("garbage") == ["Garbage "]
    assert examples.stats(store, ExampleFilter(q="memory"))["total_examples"] == 1


def test_fts_extension_state_is_reported(file_store: Store) -> None:
    # BM25 when the duckdb-extension-fts package is installed, ILIKE otherwise; both match the same rows.
    assert search.available(file_store) is (search.extension_file() is not None)


def test_export_formats_and_reimport(store: Store, tmp_path: Path) -> None:
    examples.bulk(store, [MODAL, LEAK, SORT])
    everything = list(examples.iter_examples(store))
    jsonl = b"".join(export(everything, "jsonl")).decode()
    other = Store(tmp_path / "other.duckdb")
    other.init()
    try:
        results = examples.bulk(other, [json.loads(line) for line in jsonl.splitlines()])
        assert {r["status"] for r in results} == {"created"}
        assert [e.model_dump() for e in examples.iter_examples(other)] == [e.model_dump() for e in everything]
    finally:
        other.close()
    chat = [json.loads(line) for line in b"".join(export(everything, "openai")).decode().splitlines()]
    assert [m["role"] for m in chat[0]["messages"]] == ["system", "user", "assistant"]
    assert chat[0]["messages"][1]["content"] == everything[0].input_text
    rows = list(csv.DictReader(io.StringIO(b"".join(export(everything, "csv")).decode())))
    assert len(rows) == 3 and json.loads(rows[0]["labels"]) == everything[0].labels
    table = pq.read_table(io.BytesIO(b"".join(export(everything, "parquet"))))
    assert table.num_rows == 3 and table.column("labels").to_pylist()[0] == everything[0].labels


def test_promote_an_annotated_trace(store: Store) -> None:
    rec = LogRecord(session_id="sql-calm-fox-1a2b", query_id="q-1", cascade_id="semantic_matches", cell_name="evaluate",
                    model="m", request={}, user_input="bamboo toothbrush", criterion="eco-friendly",
                    inputs={"text": "bamboo toothbrush", "criterion": "eco-friendly"}, assistant_output="true", answer=True)
    store.append_logs([rec.row()]).result()
    annotate(store, [rec.trace_id], verified=True, confidence=0.9, tags=["eco"])
    example, status = examples.promote(store, rec.trace_id)
    assert status == "created"
    assert (example.source_trace_id, example.cascade_id, example.cell_name) == (rec.trace_id, "semantic_matches", "evaluate")
    assert (example.input_text, example.output_text, example.confidence) == ("bamboo toothbrush", "true", 0.9)
    assert example.input_structured["criterion"] == "eco-friendly" and example.source_type == "human_annotated"
    assert example.labels == ["eco"]
    with pytest.raises(DuplicateExample):
        examples.promote(store, rec.trace_id)
    with pytest.raises(ExampleNotFound):
        examples.promote(store, "no-such-trace")


def test_every_change_writes_an_outbox_event(store: Store) -> None:
    seen: list[dict[str, object]] = []
    store.event_hooks.append(seen.extend)
    created, _ = examples.create(store, MODAL)
    examples.update(store, str(created.id), {"quality_score": 92.0, "labels": ["verified"]})
    examples.delete(store, str(created.id))
    annotate(store, ["trace-1"])
    assert [e["event_type"] for e in seen] == ["training_example.created", "training_example.updated",
                                               "training_example.deleted", "training_annotation.upserted"]
    assert seen[0]["payload"] == {"execution_id": "exec-12345", "agent_id": AGENT, "source_type": "execution_trace",
                                  "quality_score": 85.5, "domain": "frontend", "cascade_id": None, "cell_name": None}
    assert seen[1]["payload"] == {"updated_fields": ["labels", "quality_score"]}
    cur = store.cursor()
    rows = cur.execute("SELECT event_type, aggregate_type, aggregate_id, payload FROM training_events ORDER BY seq").fetchall()
    cur.close()
    # The outbox holds the same event JSON on both stores (on PostgreSQL its triggers write it).
    assert [{"event_type": t, "aggregate_type": a, "aggregate_id": i, "payload": json.loads(p)} for t, a, i, p in rows] == seen


def test_an_empty_patch_changes_nothing_and_publishes_no_event(store: Store) -> None:
    created, _ = examples.create(store, MODAL)
    seen: list[dict[str, object]] = []
    store.event_hooks.append(seen.extend)
    same = examples.update(store, str(created.id), {})
    assert same.updated_at == created.updated_at and same.quality_score == created.quality_score
    examples.update(store, str(created.id), {"domain": "backend"})
    assert [(e["event_type"], e["payload"]) for e in seen] == [("training_example.updated", {"updated_fields": ["domain"]})]
    cur = store.cursor()
    rows = cur.execute("SELECT event_type FROM training_events ORDER BY seq").fetchall()
    cur.close()
    assert rows == [("training_example.created",), ("training_example.updated",)]  # the outbox agrees on both stores


def test_curated_retrieval_puts_the_same_criterion_first(store: Store) -> None:
    from training.retrieval import select_examples

    def ex(text: str, criterion: str | None, quality: float) -> dict[str, object]:
        return {"input_text": text, "output_text": "true", "quality_score": quality, "cascade_id": "c", "cell_name": "e",
                "input_structured": {"criterion": criterion} if criterion else {}}
    examples.bulk(store, [ex("a", "café crème", 90), ex("b", "luxury", 90), ex("c", None, 90), ex("d", "café crème", 10)])
    cur = store.cursor()
    try:
        pick = select_examples(cur, cascade_id="c", cell_name="e", strategy="recent", limit=2, source="curated",
                               min_quality=50, criterion="café crème")
        assert [e.input for e in pick.examples][0] == "a" and (pick.same_criterion, pick.other_criteria) == (1, 1)
        assert pick.examples[0].criterion == "café crème" and pick.examples[0].source == "curated"
        none = select_examples(cur, cascade_id="c", cell_name="e", strategy="recent", limit=1, source="curated")
        assert [e.input for e in none.examples] == ["c"]
        assert select_examples(cur, cascade_id="c", cell_name="e", strategy="recent", limit=5, source="logs").examples == ()
    finally:
        cur.close()


def test_bm25_scores_are_the_extension_s(file_store: Store) -> None:
    # The search computes BM25 from the index tables; its scores are those of the extension's match_bm25.
    store = file_store
    if not search.available(store):
        pytest.skip("the duckdb-extension-fts package is not installed")
    examples.bulk(store, [MODAL, LEAK, SORT, {**LEAK, "source_trace_hash": "sha256:leak2",
                                               "input_text": "A memory leak, a leak again and a React leak"}])
    cur = store.cursor()
    try:
        assert search.prepare(store, cur)
        for q in ("leak", "memory leak", "react", "React component modal", "nothing"):
            rel, params, condition, cond_params = search.relation(store, cur, q)
            ours = dict(cur.execute(f"SELECT id, _score FROM {rel} AS t WHERE {condition}",
                                    [*params, *cond_params]).fetchall())
            theirs = dict(cur.execute(
                f"SELECT id, s FROM (SELECT id, {search.INDEX_SCHEMA}.match_bm25(id, ?, conjunctive := 1) AS s "
                "FROM training_examples) WHERE s IS NOT NULL", [" ".join(search.words(q))]).fetchall())
            assert ours.keys() == theirs.keys(), q
            assert all(ours[k] == pytest.approx(theirs[k]) for k in ours), q
    finally:
        cur.close()


def test_total_without_a_count_when_the_page_is_not_full(store: Store) -> None:
    examples.bulk(store, [MODAL, LEAK, SORT])
    assert examples.list_examples(store, limit=2)[1] == 3
    assert examples.list_examples(store, limit=2, offset=2)[1] == 3
    assert examples.list_examples(store, limit=2, offset=5) == ([], 3)
    assert examples.list_examples(store, limit=5)[1] == 3
    assert examples.list_examples(store, ExampleFilter(labels=["react", "memory"]), limit=5)[1] == 2
    assert examples.list_examples(store, ExampleFilter(labels=["react", "modal"], labels_mode="all"))[1] == 1
    # Relevance without a search: no score, so the order is by id.
    by_id = examples.list_examples(store, order_by="relevance", order="desc")[0]
    assert [e.id for e in by_id] == sorted(e.id for e in by_id)


def test_recent_curated_examples_beyond_the_newest_window(store: Store) -> None:
    # The newest 300 examples hold other criteria: the recent strategy still finds the older same-criterion ones.
    base = dt.datetime(2026, 1, 1)
    rows = [{"input_text": f"q{i}", "output_text": "true", "cascade_id": "c", "cell_name": "means",
             "input_structured": {"criterion": "old" if i < 5 else "new"},
             "created_at": (base + dt.timedelta(seconds=i)).isoformat()}
            for i in range(305)]
    assert {r["status"] for r in examples.bulk(store, rows)} == {"created"}
    cur = store.cursor()
    try:
        def inputs(criterion: str) -> list[str]:
            chosen = retrieval.fetch_curated(cur, cascade_id="c", cell_name="means", strategy="recent", limit=3,
                                             min_quality=0, min_confidence=0, criterion=criterion)
            return [e.input for e in chosen]
        assert inputs("old") == ["q4", "q3", "q2"]
        assert inputs("new") == ["q304", "q303", "q302"]
        assert inputs("none of them") == ["q304", "q303", "q302"]
    finally:
        cur.close()


def test_curated_retrieval_gives_what_the_whole_table_gives(store: Store) -> None:
    # Windows of the first candidates, the criterion's own query and the quoted-criterion shortcut choose what the plain
    # query over every candidate chooses, whatever escapes a JSON writer used, with or without a criterion.
    base = dt.datetime(2026, 1, 1)
    criteria = ["old", "new", "a/b", "café", "x 1"]
    rows = [{"input_text": f"q{i}", "cascade_id": "c", "cell_name": "means", "confidence": (i * 37 % 101) / 100,
             "input_structured": {"criterion": criteria[i % 5] if i > 250 or i % 5 == 0 else "new"} if i % 7 else {},
             "output_text": None if i % 11 == 3 else "true", "final_answer": None,
             "created_at": (base + dt.timedelta(seconds=i)).isoformat()} for i in range(320)]
    assert {r["status"] for r in examples.bulk(store, rows)} == {"created"}

    def escape(cur: Any) -> None:  # another writer's JSON: '/' and non-ASCII escaped (through the store's own UPDATE)
        sql = "UPDATE training_examples SET input_structured = ? WHERE input_text = ?"
        store.update(cur, sql, ['{"criterion":"a\\/b"}', "q7"])
        store.update(cur, sql, ['{"criterion": "caf\\u00e9"}', "q8"])

    store.write(escape).result()
    assert retrieval.criterion_token("x 1") == '"x 1"' and retrieval.criterion_token("a/b") == "a"
    plain = """SELECT input_text FROM training_examples
        WHERE cascade_id = 'c' AND cell_name = 'means' AND coalesce(quality_score, 100) >= ? AND coalesce(confidence, 1.0) >= ?
          AND output_text IS NOT NULL
        ORDER BY json_extract_string(input_structured, '$.criterion') IS NOT DISTINCT FROM ? DESC, {order} LIMIT ?"""
    cur = store.cursor()
    try:
        for strategy in ("recent", "high_confidence"):
            for criterion in [*criteria, "none of them", None]:
                for limit, min_confidence in ((3, 0.0), (8, 0.5)):
                    chosen = retrieval.fetch_curated(cur, cascade_id="c", cell_name="means", strategy=strategy, limit=limit,
                                                     min_quality=0, min_confidence=min_confidence, criterion=criterion)
                    expected = cur.execute(plain.format(order=schema.CURATED_ORDER[strategy]),
                                           [0, min_confidence, criterion, limit]).fetchall()
                    assert [e.input for e in chosen] == [r[0] for r in expected], (strategy, criterion, limit)
        found = retrieval.fetch_curated(cur, cascade_id="c", cell_name="means", strategy="recent", limit=100,
                                        min_quality=0, min_confidence=0, criterion="a/b")
        assert "q7" in [e.input for e in found if e.criterion == "a/b"]
    finally:
        cur.close()


def test_pages_and_totals_in_every_order_are_those_of_the_plain_query(store: Store) -> None:
    # The newest-first page is one top-N query, the others ids then rows, and the total is counted beside the page:
    # every page and total is the plain query's, ties in the sort column broken by id.
    base = dt.datetime(2026, 1, 1)
    rows = [{"input_text": f"t{i:03d}", "output_text": "x", "domain": ("web", "db", None)[i % 3], "quality_score": float(i * 7 % 5 * 20),
             "confidence": (i * 3 % 4) / 4, "difficulty": None if i % 6 == 0 else (i % 4) / 4, "cascade_id": f"c{i % 2}",
             "created_at": (base + dt.timedelta(seconds=i // 3)).isoformat()} for i in range(90)]
    assert {r["status"] for r in examples.bulk(store, rows)} == {"created"}
    filters: list[tuple[dict[str, Any], str, list[Any]]] = [
        ({}, "true", []),
        ({"domain": "web", "min_quality": 40}, "domain = ? AND quality_score >= ?", ["web", 40]),
        ({"cascade_id": "c1", "max_quality": 60}, "cascade_id = ? AND quality_score <= ?", ["c1", 60]),
        ({"domain": "nowhere"}, "domain = ?", ["nowhere"]),
    ]
    cur = store.cursor()
    try:
        for kw, where, params in filters:
            for order_by in ("created_at", "quality_score", "confidence", "difficulty", "updated_at"):
                for order in ("desc", "asc"):
                    for limit, offset in ((10, 0), (7, 14), (50, 0), (5, 200)):
                        items, total = examples.list_examples(store, ExampleFilter(**kw), limit=limit, offset=offset,
                                                              order_by=order_by, order=order)
                        sql = f"FROM training_examples WHERE {where}"
                        want = cur.execute(f"SELECT input_text {sql} ORDER BY {order_by} {order} NULLS LAST, id LIMIT ? OFFSET ?",
                                           [*params, limit, offset]).fetchall()
                        count = cur.execute(f"SELECT count(*) {sql}", params).fetchone()
                        assert count is not None
                        assert ([e.input_text for e in items], total) == ([r[0] for r in want], count[0]), (kw, order_by, order)
    finally:
        cur.close()


def test_curated_retrieval_past_a_window_of_rows_without_an_answer(store: Store) -> None:
    # The newest 60 rows have no answer, so the window holds no candidate: the whole table decides.
    base = dt.datetime(2026, 1, 1)
    rows = [{"input_text": f"w{i}", "output_text": None if i >= 6 else "true", "cascade_id": "c", "cell_name": "m",
             "input_structured": {"criterion": "x" if i % 2 else "y"}, "created_at": (base + dt.timedelta(seconds=i)).isoformat()}
            for i in range(66)]
    assert {r["status"] for r in examples.bulk(store, rows)} == {"created"}
    cur = store.cursor()
    try:
        for strategy in ("recent", "high_confidence"):
            chosen = retrieval.fetch_curated(cur, cascade_id="c", cell_name="m", strategy=strategy, limit=4, min_quality=0,
                                             min_confidence=0, criterion="x")
            assert [e.input for e in chosen] == ["w5", "w3", "w1", "w4"]
    finally:
        cur.close()
