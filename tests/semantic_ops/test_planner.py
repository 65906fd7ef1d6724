"""The planner finds, before a query runs, which values it needs judged (pure)."""

from __future__ import annotations

import duckdb
import pytest

from semantic_ops import dialect, planner, rewrite
from semantic_ops.operators import Registry

REG = Registry.load()
UDF = "meansql_semantic_matches"


def stages(sql: str) -> list[planner.Stage]:
    (tree,) = dialect.parse(sql, REG.infix)
    new, _ = rewrite.rewrite(tree, REG.signatures(), "q1")
    return planner.plan(new, [UDF])


def test_where_conjunct_runs_after_the_plain_ones() -> None:
    (s,) = stages("SELECT id FROM items WHERE price < 10 AND d MEANS 'eco'")
    assert s.sql == "SELECT d AS a0, 'eco' AS a1, COUNT(*) AS n FROM items WHERE price < 10 GROUP BY a0, a1"
    assert (s.udf_name, s.n_args, s.stop_after, s.match) == (UDF, 2, None, True)


def test_second_semantic_conjunct_is_filtered_by_the_first() -> None:
    first, second = stages("SELECT id FROM t WHERE d MEANS 'a' AND e MEANS 'b' AND id > 1")
    assert "WHERE id > 1 GROUP BY" in first.sql
    assert "WHERE id > 1 AND MEANSQL_SEMANTIC_MATCHES('q1', d, 'a') GROUP BY" in second.sql


def test_limit_without_order_gets_waves() -> None:
    (s,) = stages("SELECT id FROM t WHERE NOT d MEANS 'eco' LIMIT 5 OFFSET 2")
    assert (s.stop_after, s.match) == (7, False)
    (o,) = stages("SELECT id FROM t WHERE d MEANS 'eco' ORDER BY id LIMIT 5")
    assert o.stop_after is None


def test_select_list_calls_see_rows_passing_the_whole_where() -> None:
    w, sel = stages("SELECT id, d MEANS 'x' AS m FROM t JOIN u USING (id) WHERE d MEANS 'y' AND id < 3")
    assert "FROM t JOIN u USING (id) WHERE id < 3 AND MEANSQL_SEMANTIC_MATCHES('q1', d, 'y')" in sel.sql
    assert "'x' AS a1" in sel.sql and w.stop_after is None


@pytest.mark.parametrize("sql", [
    "SELECT * FROM t JOIN u ON t.d MEANS u.c",
    "SELECT id FROM t WHERE id IN (SELECT id FROM u WHERE d MEANS 'x')",
    "SELECT count(*) FROM t GROUP BY id HAVING max(d) MEANS 'x'",
    "SELECT 1 UNION SELECT 'a' MEANS 'b'",
    "INSERT INTO r SELECT d MEANS 'x' FROM t",
])
def test_other_shapes_are_judged_as_they_run(sql: str) -> None:
    assert stages(sql) == []


def test_no_semantic_call_no_stage() -> None:
    assert stages("SELECT 1") == []


def test_stage_sql_runs_in_duckdb() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE items (id INT, price DOUBLE, d VARCHAR)")
    con.execute("INSERT INTO items VALUES (1, 5, 'a'), (2, 5, 'a'), (3, 50, 'b'), (4, 1, 'c')")
    (s,) = stages("SELECT id FROM items WHERE price < 10 AND d MEANS 'eco'")
    assert sorted(con.execute(s.sql).fetchall()) == [("a", "eco", 2), ("c", "eco", 1)]
