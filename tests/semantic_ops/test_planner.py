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


def kept(sql: str) -> planner.Kept | None:
    (tree,) = dialect.parse(sql, REG.infix)
    new, _ = rewrite.rewrite(tree, REG.signatures(), "q1")
    return planner.keep(new, [UDF], "kept")


def test_keep_copies_the_kept_rows_with_the_columns_read_outside_the_plain_conjuncts() -> None:
    k = kept("SELECT w.id, label MEANS 'eco' AS eco FROM public.wares AS w WHERE shelf = 7 AND id > 2 ORDER BY eco, w.id")
    assert k is not None
    assert k.create == ("CREATE OR REPLACE TEMPORARY TABLE temp.main.kept AS SELECT COLUMNS(LAMBDA c : LOWER(c) IN "
                        "('id', 'label')) FROM public.wares AS w WHERE shelf = 7 AND id > 2")
    assert dialect.to_duckdb(k.tree) == ("SELECT w.id, MEANSQL_SEMANTIC_MATCHES('q1', label, 'eco') AS eco "
                                         "FROM temp.main.kept AS w ORDER BY eco, w.id")
    assert k.drop == "DROP TABLE IF EXISTS temp.main.kept"
    (s,) = planner.plan(k.tree, [UDF])
    assert s.sql == "SELECT label AS a0, 'eco' AS a1, COUNT(*) AS n FROM temp.main.kept AS w GROUP BY a0, a1"


def test_keep_leaves_the_semantic_conjuncts_and_copies_every_column_under_star() -> None:
    k = kept("SELECT * FROM t WHERE d MEANS 'a' AND id > 1 AND NOT e MEANS 'b' LIMIT 3")
    assert k is not None
    assert k.create == "CREATE OR REPLACE TEMPORARY TABLE temp.main.kept AS SELECT * FROM t WHERE id > 1"
    assert dialect.to_duckdb(k.tree) == ("SELECT * FROM temp.main.kept AS t WHERE MEANSQL_SEMANTIC_MATCHES('q1', d, 'a') "
                                         "AND NOT MEANSQL_SEMANTIC_MATCHES('q1', e, 'b') LIMIT 3")


@pytest.mark.parametrize("sql", [
    "SELECT a.id FROM t AS a JOIN u ON a.id = u.id WHERE a.d MEANS 'x'",
    "WITH c AS (SELECT * FROM t) SELECT id FROM c WHERE d MEANS 'x'",
    "SELECT id FROM t WHERE d MEANS 'x' AND id IN (SELECT id FROM u)",
    "SELECT id FROM (SELECT * FROM t) AS s WHERE d MEANS 'x'",
    "SELECT other.id FROM t WHERE d MEANS 'x'",
    "SELECT x FROM t AS s(x, y) WHERE y MEANS 'x'",
    "SELECT count(*) FROM t WHERE id > 1 AND 'a' MEANS 'b'",
])
def test_keep_leaves_other_shapes_alone(sql: str) -> None:
    assert kept(sql) is None


def test_the_copy_reads_as_the_table_did() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (id INT, \"Label\" TEXT, note TEXT)")
    con.execute("INSERT INTO t VALUES (1, 'a', 'x'), (2, 'b', 'y'), (3, 'c', 'z')")
    k = kept("SELECT id, label FROM t WHERE id >= 2 AND label MEANS 'eco'")
    assert k is not None
    con.execute(k.create)
    assert con.execute("SELECT * FROM temp.main.kept ORDER BY id").fetchall() == [(2, "b"), (3, "c")]
