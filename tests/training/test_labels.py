"""Label filters through the side table training_example_labels: the same rows as the lists say, after every write."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from training import examples, schema
from training import labels as label_rows
from training.errors import InvalidExample
from training.models import ExampleFilter
from training.store import Store


def ex(name: str, labels: list[str] | None, quality: float, **more: Any) -> dict[str, Any]:
    return {"input_text": name, "source_trace_hash": f"hash:{name}", "labels": labels, "quality_score": quality, **more}


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "labels.duckdb")
    s.init()
    yield s
    s.close()


def side_rows(store: Store) -> list[tuple[str, str]]:
    cur = store.cursor()
    try:
        return sorted(
            cur.execute(
                "SELECT e.input_text, l.label, l.quality_score, l.created_at FROM training_example_labels l "
                "JOIN training_examples e ON e.id = l.example_id"
            ).fetchall()
        )
    finally:
        cur.close()


def list_rows(store: Store) -> list[tuple[str, str]]:
    cur = store.cursor()
    try:
        return sorted(
            cur.execute(
                "SELECT input_text, label, quality_score, created_at FROM "
                "(SELECT DISTINCT input_text, id, unnest(labels) AS label, quality_score, created_at FROM training_examples)"
            ).fetchall()
        )
    finally:
        cur.close()


def names(store: Store, labels: list[str], mode: str = "any", **kw: Any) -> tuple[list[str], int]:
    items, total = examples.list_examples(store, ExampleFilter(labels=labels, labels_mode=mode), **kw)
    return [e.input_text for e in items], total


def check_filters(store: Store) -> None:
    """Every filter of one or two labels, any and all, gives the rows the lists give, in order, with the total."""
    every, _ = examples.list_examples(store, limit=10_000, order_by="quality_score")
    present = sorted({label for e in every for label in e.labels})
    assert side_rows(store) == list_rows(store)
    for wanted in [[a] for a in present] + [[a, b] for a in present for b in present if a < b] + [["nowhere"]]:
        for mode in ("any", "all"):
            test = any if mode == "any" else all
            expected = [e.input_text for e in every if test(w in e.labels for w in wanted)]
            assert names(store, wanted, mode, limit=10_000, order_by="quality_score") == (expected, len(expected))
            # A page of two, and the total beyond it.
            assert names(store, wanted, mode, limit=2, offset=1, order_by="quality_score") == (expected[1:3], len(expected))


def test_filters_follow_create_update_delete_and_bulk(store: Store) -> None:
    a, _ = examples.create(store, ex("a", ["red", "blue"], 10))
    examples.create(store, ex("b", ["blue"], 20))
    c, _ = examples.create(store, ex("c", ["green", "red", "red"], 30))
    examples.create(store, ex("d", None, 40))
    assert names(store, ["red"], order_by="quality_score", order="asc") == (["a", "c"], 2)
    assert names(store, ["red", "blue"], "all") == (["a"], 1)
    check_filters(store)

    examples.update(store, str(a.id), {"labels": ["green"]})
    examples.update(store, str(c.id), {"quality_score": 35})  # labels untouched
    assert names(store, ["red"]) == (["c"], 1)
    assert names(store, ["green"], order_by="quality_score") == (["c", "a"], 2)
    check_filters(store)

    examples.delete(store, str(c.id))
    assert names(store, ["red"]) == ([], 0)
    assert names(store, ["green"]) == (["a"], 1)
    check_filters(store)

    results = examples.bulk(store, [ex("e", ["red", "blue"], 50), ex("b", ["red"], 25), ex("f", [], 60)], on_conflict="update")
    assert [r["status"] for r in results] == ["created", "updated", "created"]
    assert names(store, ["red"], order_by="quality_score") == (["e", "b"], 2)
    assert names(store, ["blue"]) == (["e"], 1)
    assert examples.labels(store) == [{"label": "red", "count": 2}, {"label": "blue", "count": 1}, {"label": "green", "count": 1}]
    check_filters(store)


def test_repeated_labels_in_a_filter_or_a_list_change_nothing(store: Store) -> None:
    examples.create(store, ex("a", ["x", "x", "y"], 10))
    examples.create(store, ex("b", ["x"], 20))
    assert names(store, ["x", "x"], "all", order_by="quality_score") == (["b", "a"], 2)
    assert names(store, ["x", "y", "y"], "all") == (["a"], 1)
    assert names(store, ["x", "y"], "any", order_by="quality_score") == (["b", "a"], 2)
    # Counts are of examples: a label twice in one list counts once.
    assert examples.labels(store) == [{"label": "x", "count": 2}, {"label": "y", "count": 1}]


def test_label_filters_combine_with_search_and_other_filters(store: Store) -> None:
    examples.create(store, ex("sort an array quickly", ["code"], 90, domain="coding"))
    examples.create(store, ex("sort the laundry", ["home"], 80, domain="coding"))
    examples.create(store, ex("array of hope", ["code"], 20, domain="poetry"))
    items, total = examples.list_examples(store, ExampleFilter(labels=["code"], q="array"), order_by="quality_score")
    assert ([e.input_text for e in items], total) == (["sort an array quickly", "array of hope"], 2)
    items, total = examples.list_examples(store, ExampleFilter(labels=["code", "home"], domain="coding", min_quality=85))
    assert ([e.input_text for e in items], total) == (["sort an array quickly"], 1)
    # Filters the side table holds (quality, confidence, created_at) stay on its fast path; the result is the same.
    items, total = examples.list_examples(store, ExampleFilter(labels=["code", "home"], min_quality=50, max_quality=85))
    assert ([e.input_text for e in items], total) == (["sort the laundry"], 1)
    items, total = examples.list_examples(store, ExampleFilter(labels=["code"], min_confidence=1.0), order_by="relevance")
    assert sorted(e.input_text for e in items) == ["array of hope", "sort an array quickly"] and total == 2
    st = examples.stats(store, ExampleFilter(labels=["code"]))
    assert (st["total_examples"], st["domain_distribution"]) == (2, {"coding": 1, "poetry": 1})
    exported = list(examples.iter_examples(store, ExampleFilter(labels=["home", "code"], labels_mode="all")))
    assert exported == []


def test_a_failed_write_leaves_lists_and_label_rows_as_they_were(store: Store) -> None:
    a, _ = examples.create(store, ex("a", ["red"], 10))
    examples.create(store, ex("b", ["blue"], 20))
    # One transaction: relabel a (on_conflict=update), then a new row whose id is taken fails the insert.
    with pytest.raises(duckdb.ConstraintException):
        examples.bulk(store, [ex("a", ["blue"], 10), {**ex("z", ["blue"], 5), "id": str(a.id)}], on_conflict="update")
    assert names(store, ["red"]) == (["a"], 1)
    assert names(store, ["blue"]) == (["b"], 1)
    assert side_rows(store) == list_rows(store)
    assert [r[:3] for r in side_rows(store)] == [("a", "red", 10.0), ("b", "blue", 20.0)]

    def half_done(cur: duckdb.DuckDBPyConnection) -> None:
        examples._update(store, cur, str(a.id), {"labels": ["green"]}, a.updated_at)
        cur.execute("DELETE FROM training_example_labels")
        raise InvalidExample("field 'labels': refused", field="labels")

    with pytest.raises(InvalidExample):
        store.write(half_done).result()
    assert side_rows(store) == list_rows(store)
    assert [r[:3] for r in side_rows(store)] == [("a", "red", 10.0), ("b", "blue", 20.0)]


def _version_6_file(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute(schema.CREATE_VERSION_TABLE)
    for version in range(1, 7):
        for statement in schema.MIGRATIONS[version]:
            con.execute(statement)
        con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
    con.execute(
        "INSERT INTO training_examples (input_text, labels, quality_score) VALUES "
        "('a', ['red', 'blue'], 10), ('b', ['blue', 'blue'], 20), ('c', [], 30), ('d', NULL, 40), "
        "('e', ['green'], 50)"
    )
    con.execute(
        "INSERT INTO training_examples (input_text, labels, quality_score) "
        "SELECT 'bulk ' || i, [CASE WHEN i % 3 = 0 THEN 'red' ELSE 'green' END], i % 100 FROM range(600) t(i)"
    )
    con.close()


def test_migration_back_fills_labels_of_a_version_6_file(tmp_path: Path) -> None:
    path = tmp_path / "v6.duckdb"
    _version_6_file(path)
    store = Store(path)
    try:
        assert store.init() == max(schema.MIGRATIONS) >= 7
        assert side_rows(store) == list_rows(store)
        assert len(side_rows(store)) == 600 + 4  # a: 2, b: 1 (a label twice is one row), c and d: none, e: 1
        counts = {c["label"]: c["count"] for c in examples.labels(store)}
        assert counts == {"red": 201, "green": 401, "blue": 2}
        assert names(store, ["blue"], order_by="quality_score", order="asc") == (["a", "b"], 2)
        assert names(store, ["red", "blue"], "all")[1] == 1
        assert names(store, ["red"], limit=1)[1] == 201
        check_filters(store)
        # Idempotent: a second start-up adds nothing.
        assert store.init() == max(schema.MIGRATIONS)
        assert Counter(r[:2] for r in side_rows(store))[("a", "red")] == 1
    finally:
        store.close()


CARRIED = ", ".join(schema.LABEL_COLUMNS)


def carried_rows(store: Store) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The side table's rows with every carried column and label_key, and the same computed from the lists."""
    cur = store.cursor()
    try:
        side = cur.execute(f"SELECT example_id, label, label_key, {CARRIED} FROM training_example_labels ORDER BY ALL").fetchall()
        lists = cur.execute(
            f"SELECT id, label, md5_number_lower(label), {CARRIED} FROM "
            f"(SELECT DISTINCT id, unnest(labels) AS label, {CARRIED} FROM training_examples) ORDER BY ALL"
        ).fetchall()
        return side, lists
    finally:
        cur.close()


def test_label_key_is_duckdbs_md5_number_lower() -> None:
    con = duckdb.connect()
    for label in ("red", "", "é🙂 x", "a,b", "x" * 300):
        assert label_rows.key(label) == con.execute("SELECT md5_number_lower(?)", [label]).fetchone()[0]


AGENTS = ("00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002")


def varied(i: int) -> dict[str, Any]:
    rng = random.Random(i)
    return ex(
        f"n{i:03d}",
        rng.sample(["red", "blue", "green", "grey"], rng.randint(0, 3)),
        float(rng.randint(0, 10) * 10),
        domain=rng.choice(["web", "db", None]),
        agent_id=rng.choice(AGENTS),
        task_type=rng.choice(["single_step", "reasoning"]),
        source_type=rng.choice(["synthetic", "human_annotated"]),
        cascade_id=rng.choice(["c1", "c2"]),
        cell_name=rng.choice(["evaluate", "classify"]),
        confidence=rng.choice([0.5, 0.9, 1.0]),
        difficulty=rng.choice([0.1, 0.7, None]),
        created_at=f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}",
    )


FILTERS: list[dict[str, Any]] = [
    {},
    {"domain": "web"},
    {"domain": "db", "min_quality": 40},
    {"agent_id": AGENTS[0]},
    {"task_type": "reasoning"},
    {"source_type": "synthetic", "max_quality": 60},
    {"cascade_id": "c1", "cell_name": "classify"},
    {"min_confidence": 0.9, "created_after": "2026-01-01T00:00:30"},
    {"created_before": "2026-01-01T00:01:00"},
]


def expected(
    store: Store, f: dict[str, Any], wanted: list[str], mode: str, order_by: str, order: str, limit: int, offset: int
) -> tuple[list[str], int]:
    """The straightforward query: the filters on training_examples, the labels searched in each list."""
    conditions = {
        "domain": "domain = ?",
        "agent_id": "agent_id = CAST(? AS UUID)",
        "task_type": "task_type = ?",
        "source_type": "source_type = ?",
        "cascade_id": "cascade_id = ?",
        "cell_name": "cell_name = ?",
        "min_quality": "quality_score >= ?",
        "max_quality": "quality_score <= ?",
        "min_confidence": "confidence >= ?",
        "created_after": "created_at >= ?",
        "created_before": "created_at < ?",
    }
    where = [conditions[k] for k in f] + [f"list_has_{mode}(labels, ?)"]
    params = [*f.values(), wanted]
    sort = "id" if order_by == "relevance" else f"{order_by} {order.upper()} NULLS LAST, id"
    cur = store.cursor()
    try:
        sql = f"FROM training_examples WHERE {' AND '.join(where)}"
        rows = cur.execute(f"SELECT input_text {sql} ORDER BY {sort} LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
        total = cur.execute(f"SELECT count(*) {sql}", params).fetchone()
    finally:
        cur.close()
    assert total is not None
    return [r[0] for r in rows], int(total[0])


def check_carried_filters(store: Store) -> None:
    """Label filters with every other filter but q, in every order, paged: the rows and totals of the lists."""
    side, lists = carried_rows(store)
    assert side == lists
    orders = itertools.cycle(
        (
            ("created_at", "desc"),
            ("quality_score", "asc"),
            ("confidence", "desc"),
            ("difficulty", "asc"),
            ("updated_at", "desc"),
            ("relevance", "desc"),
            ("quality_score", "desc"),
        )
    )
    for f in FILTERS:
        for wanted in (["red"], ["red", "blue"], ["grey", "green", "red"], ["nowhere"]):
            for mode in ("any", "all"):
                order_by, order = next(orders)
                for limit, offset in ((100, 0), (3, 4)):
                    items, total = examples.list_examples(
                        store,
                        ExampleFilter(labels=wanted, labels_mode=mode, **f),
                        limit=limit,
                        offset=offset,
                        order_by=order_by,
                        order=order,
                    )
                    got = ([e.input_text for e in items], total)
                    assert got == expected(store, f, wanted, mode, order_by, order, limit, offset), (f, wanted, mode, order_by)


def test_label_filters_with_every_other_filter_and_order_give_the_rows_of_the_lists(store: Store) -> None:
    examples.bulk(store, [varied(i) for i in range(80)])
    check_carried_filters(store)
    # A change of a carried column, through update, bulk's on_conflict=update and the side table's own rebuild.
    items, _ = examples.list_examples(store, ExampleFilter(labels=["red"]), limit=5)
    for e in items:
        examples.update(store, str(e.id), {"domain": "web", "quality_score": 55, "agent_id": AGENTS[1]})
    examples.bulk(store, [{**varied(3), "cascade_id": "c2", "task_type": "reasoning", "labels": ["red", "red"]}], on_conflict="update")
    store.write(label_rows.rebuild).result()
    check_carried_filters(store)


def test_migration_widens_the_label_rows_of_a_version_7_file(tmp_path: Path) -> None:
    path = tmp_path / "v7.duckdb"
    _version_6_file(path)
    con = duckdb.connect(str(path))
    con.execute(
        "UPDATE training_examples SET domain = CASE WHEN quality_score < 50 THEN 'web' ELSE 'db' END, "
        "cascade_id = 'c1', agent_id = CAST(? AS UUID)",
        [AGENTS[0]],
    )
    for statement in schema.MIGRATIONS[7]:
        con.execute(statement)
    con.execute("INSERT INTO schema_version (version) VALUES (7)")
    assert con.execute("SELECT count(*) FROM training_example_labels").fetchone() == (604,)
    con.close()
    store = Store(path)
    try:
        assert store.init() == max(schema.MIGRATIONS) >= 8
        side, lists = carried_rows(store)
        assert side == lists and len(side) == 604
        items, total = examples.list_examples(
            store, ExampleFilter(labels=["red", "blue"], domain="web", cascade_id="c1"), limit=3, order_by="quality_score"
        )
        assert ([e.input_text for e in items], total) == (
            expected(store, {"domain": "web", "cascade_id": "c1"}, ["red", "blue"], "any", "quality_score", "desc", 3, 0)
        )
        assert total == 102 and len(items) == 3
        check_filters(store)
    finally:
        store.close()


def test_newest_first_pages_over_many_label_rows_give_the_rows_of_the_lists(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Newest first over enough label rows that the page is read from the newest rows alone: spread evenly over time
    (the bound holds the page) and bunched long before a few new ones (it does not, and the page is read again)."""
    rows = []
    for i in range(2000):
        wanted = [name for name, every in (("even", 2), ("third", 3)) if i % every == 0]
        rows.append(
            ex(
                f"e{i:04d}",
                wanted,
                float(i % 10 * 10),
                domain=("web", "db")[i % 2 if i % 5 else 1],
                created_at=f"2026-01-02T{i // 60 // 60:02d}:{i // 60 % 60:02d}:{i % 60:02d}",
            )
        )
    for i in range(1000):
        when = f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}" if i < 995 else f"2027-01-01T00:00:{i % 60:02d}"
        rows.append(ex(f"b{i:04d}", ["bunched"], float(i % 10 * 10), domain="web", created_at=when))
    assert all(r["status"] == "created" for r in examples.bulk(store, rows))
    bounds: list[Any] = []
    real = label_rows._top_rows

    def spy(cur: Any, sql: str, params: Any, limits: Any, since: Any) -> Any:
        bounds.append(since)
        return real(cur, sql, params, limits, since)

    monkeypatch.setattr(label_rows, "_top_rows", spy)
    # As written (each label's rows spread over the table), then as the side table's rebuild leaves them (sorted by
    # label, so each label's rows are a few row groups of their own).
    for layout in ("written", "rebuilt"):
        if layout == "rebuilt":
            store.write(label_rows.rebuild).result()
        for wanted in (["even"], ["even", "third"], ["bunched"], ["bunched", "even"], ["third", "bunched", "even"]):
            for f in ({}, {"domain": "web"}):
                for limit, offset in ((50, 0), (20, 30), (50, 900)):
                    items, total = examples.list_examples(store, ExampleFilter(labels=wanted, **f), limit=limit, offset=offset)
                    got = ([e.input_text for e in items], total)
                    assert got == expected(store, f, wanted, "any", "created_at", "desc", limit, offset), (layout, wanted, f)
    assert any(b is not None for b in bounds) and None in bounds


def check_bits(store: Store) -> None:
    """Every label row's label_bits are those of its example's list."""
    cur = store.cursor()
    try:
        rows = cur.execute(
            "SELECT e.labels, l.label_bits FROM training_example_labels AS l JOIN training_examples AS e ON e.id = l.example_id"
        ).fetchall()
    finally:
        cur.close()
    assert rows and all(label_rows.bits(labels) == bits for labels, bits in rows)


def test_labels_whose_bits_collide_give_the_rows_and_totals_of_the_lists(store: Store) -> None:
    # tag4 and tag8 share a bit of label_bits: an example with one of them looks, by its bits, as if it had both.
    assert label_rows.bits(["tag4"]) == label_rows.bits(["tag8"]) != label_rows.bits(["red"])
    examples.bulk(
        store,
        [
            ex("x", ["tag4"], 10),
            ex("y", ["tag8"], 20),
            ex("xy", ["tag4", "tag8"], 30),
            ex("xr", ["tag4", "red"], 40),
            ex("yr", ["tag8", "red", "red"], 50),
            ex("xyr", ["red", "tag8", "tag4"], 60),
            ex("e", [], 70),
            ex("n", None, 80),
        ],
    )
    check_bits(store)
    assert names(store, ["tag4", "tag8"], "all", order_by="quality_score", order="asc") == (["xy", "xyr"], 2)
    assert names(store, ["tag4", "tag8"], order_by="quality_score", order="asc") == (["x", "y", "xy", "xr", "yr", "xyr"], 6)
    assert names(store, ["tag8", "red"], limit=2, order_by="quality_score") == (["xyr", "yr"], 5)
    check_filters(store)
    items, _ = examples.list_examples(store, ExampleFilter(labels=["tag4"]), limit=10)
    for e in items:
        examples.update(store, str(e.id), {"labels": [*e.labels, "tag8"] if "tag8" not in e.labels else ["tag8"]})
    check_bits(store)
    check_filters(store)
    store.write(label_rows.rebuild).result()
    check_bits(store)
    check_filters(store)
