"""Pure: which values a rewritten SELECT needs judged, found before it runs.

For a SELECT whose semantic calls sit in top-level WHERE conjuncts or in the
select list, each call gets a *stage*: a query over the same FROM that returns
the call's distinct arguments (with their row counts), filtered by every plain
conjunct and by the semantic conjuncts before it (already judged by then).
So cheap predicates run first, the budget is known before the first call, and
`LIMIT k` can stop once k matching rows are certain. Other shapes (calls in
JOIN ON, HAVING, subqueries...) return no stages and are judged as DuckDB
meets them, vector by vector.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlglot import exp

from semantic_ops.dialect import to_duckdb


@dataclass(frozen=True)
class Stage:
    """One semantic call to judge ahead of the query."""

    udf_name: str
    n_args: int
    sql: str  # SELECT arg1, ..., argN, count(*) FROM ... WHERE ... GROUP BY ALL
    stop_after: int | None = None  # LIMIT target: judge in waves until this many rows match
    match: bool = True  # the answer that makes a row match (False under NOT)


def _udf_calls(node: exp.Expr, udfs: Collection[str]) -> list[exp.Anonymous]:
    return [n for n in node.find_all(exp.Anonymous) if isinstance(n.this, str) and n.this.lower() in udfs]


def _conjuncts(where: exp.Expr | None) -> list[exp.Expr]:
    if where is None:
        return []
    cond = where.this if isinstance(where, exp.Where) else where
    return list(cond.flatten()) if isinstance(cond, exp.And) else [cond]


def _int(node: exp.Expr | None) -> int | None:
    if node is None:
        return 0
    value = node.expression if isinstance(node, exp.Limit | exp.Offset) else node
    if isinstance(value, exp.Literal) and value.is_int:
        return int(value.this)
    return None


def _stage_sql(select: exp.Select, call: exp.Anonymous, filters: list[exp.Expr]) -> str:
    args = call.expressions[1:]
    query = exp.Select(
        expressions=[exp.alias_(a.copy(), f"a{i}") for i, a in enumerate(args)]
        + [exp.alias_(exp.Count(this=exp.Star()), "n")],
    )
    for key in ("with_", "from_", "joins"):
        if select.args.get(key) is not None:
            value = select.args[key]
            query.set(key, [v.copy() for v in value] if isinstance(value, list) else value.copy())
    if filters:
        query = query.where(exp.and_(*[f.copy() for f in filters]), copy=False)
    query.set("group", exp.Group(expressions=[exp.column(f"a{i}") for i in range(len(args))]))
    return to_duckdb(query)


def plan(tree: exp.Expr, udfs: Collection[str]) -> list[Stage]:
    """Stages for a rewritten statement; [] when it must be judged as it runs."""
    udfs = {u.lower() for u in udfs}
    if not isinstance(tree, exp.Select):
        return []
    calls = _udf_calls(tree, udfs)
    if not calls:
        return []
    conjuncts = _conjuncts(tree.args.get("where"))
    semantic = [c for c in conjuncts if _udf_calls(c, udfs)]
    plain = [c for c in conjuncts if not _udf_calls(c, udfs)]
    in_where = {id(n) for c in semantic for n in _udf_calls(c, udfs)}
    in_select = {id(n) for e in tree.expressions for n in _udf_calls(e, udfs)}
    for call in calls:
        if id(call) not in in_where and id(call) not in in_select:
            return []  # JOIN ON, HAVING, ORDER BY, ...: judge as DuckDB meets them
        if call.find_ancestor(exp.Select) is not tree or call.find_ancestor(exp.Window) is not None:
            return []
        if any(_udf_calls(arg, udfs) for arg in call.expressions[1:]):
            return []  # a call inside another's arguments
        if any(isinstance(n, exp.Subquery | exp.Select | exp.AggFunc | exp.Window)
               for a in call.expressions[1:] for n in a.walk()):
            return []  # arguments the stage query could not group by

    limit, offset = _int(tree.args.get("limit")), _int(tree.args.get("offset"))
    simple_limit = (
        tree.args.get("limit") is not None and limit is not None and offset is not None
        and not tree.args.get("order") and not tree.args.get("group") and not tree.args.get("having")
        and not tree.args.get("distinct") and not in_select
        and not any(isinstance(n, exp.AggFunc | exp.Window) for e in tree.expressions for n in e.walk())
    )

    stages: list[Stage] = []
    done: list[exp.Expr] = []
    for i, conj in enumerate(semantic):
        last = i == len(semantic) - 1
        conj_calls = _udf_calls(conj, udfs)
        inner = conj.this if isinstance(conj, exp.Not) else conj
        waves = simple_limit and last and len(conj_calls) == 1 and inner is conj_calls[0]
        for call in conj_calls:
            stages.append(Stage(
                udf_name=str(call.this).lower(),
                n_args=len(call.expressions) - 1,
                sql=_stage_sql(tree, call, plain + done),
                stop_after=(limit or 0) + (offset or 0) if waves else None,
                match=not isinstance(conj, exp.Not),
            ))
        done.append(conj)
    for expr in tree.expressions:
        for call in _udf_calls(expr, udfs):
            stages.append(Stage(str(call.this).lower(), len(call.expressions) - 1,
                                _stage_sql(tree, call, plain + done)))
    return stages
