"""Pure: which values a rewritten SELECT needs judged, found before it runs.

For a SELECT whose semantic calls sit in top-level WHERE conjuncts or in the
select list, each call gets a *stage*: a query over the same FROM that returns
the call's distinct arguments (with their row counts), filtered by every plain
conjunct and by the semantic conjuncts before it (already judged by then).
So cheap predicates run first, the budget is known before the first call, and
`LIMIT k` can stop once k matching rows are certain. Other shapes (calls in
JOIN ON, HAVING, subqueries...) return no stages and are judged as DuckDB
meets them, vector by vector.

Where reading a table twice is costly (a PostgreSQL table read over the
network in proxy mode), `keep` first copies the rows its plain conjuncts keep,
only the columns the statement names, into a temporary table; the stages and
the query then read that copy, so each kept row crosses once.
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


@dataclass(frozen=True)
class Kept:
    """A statement rewritten to read the rows its plain conjuncts keep from a temporary copy."""

    create: str  # CREATE OR REPLACE TEMPORARY TABLE ... AS SELECT <named columns> FROM <table> WHERE <plain>
    drop: str
    tree: exp.Select  # the statement over the copy, with only its semantic conjuncts left


def keep(tree: exp.Expr, udfs: Collection[str], name: str) -> Kept | None:
    """The statement over a temporary copy `name` of its kept rows; None for shapes this does not cover.

    Covered: a SELECT over one table (no joins, CTEs or subqueries) whose column references are unqualified
    or qualified by the table's name or alias. The copy holds the table's columns the statement reads besides
    its plain conjuncts (all of them under `*`); names that are only select-list aliases match no column and
    are left out.
    """
    udfs = {u.lower() for u in udfs}
    if not isinstance(tree, exp.Select) or tree.args.get("with_") or tree.args.get("joins"):
        return None
    source = tree.args.get("from_")
    table = source.this if isinstance(source, exp.From) else None
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        return None
    alias = table.args.get("alias")
    if alias is not None and alias.columns:
        return None  # FROM t AS x(a, b) renames the columns
    if any(isinstance(n, exp.Select | exp.Subquery | exp.Lateral | exp.Unnest) for n in tree.walk() if n is not tree):
        return None
    if any(isinstance(n, exp.Table) for n in tree.walk() if n is not table):
        return None
    conjuncts = _conjuncts(tree.args.get("where"))
    plain = [c for c in conjuncts if not _udf_calls(c, udfs)]
    semantic = [c for c in conjuncts if _udf_calls(c, udfs)]
    rewritten = tree.copy()
    rewritten.set("where", exp.Where(this=exp.and_(*[c.copy() for c in semantic])) if semantic else None)
    rewritten.set("from_", None)
    # The columns the copy must hold: those the statement reads besides its plain conjuncts (PostgreSQL
    # applies those in the copy's scan).
    qualifier = table.alias_or_name.lower()
    if any(c.args.get("db") or c.args.get("catalog") or (c.table and c.table.lower() != qualifier)
           for c in tree.find_all(exp.Column)):
        return None
    names: set[str] = set()
    everything = False
    for node in rewritten.walk():
        if isinstance(node, exp.Column):
            if isinstance(node.this, exp.Star):
                everything = True
            else:
                names.add(node.name.lower())
        elif isinstance(node, exp.Star) and not isinstance(node.parent, exp.Count | exp.Column):
            everything = True
    if not everything:
        names -= {e.alias.lower() for e in tree.expressions if isinstance(e, exp.Alias)} - _plain_names(tree)
        if not names:
            return None  # nothing of the table is read but its row count: the copy would add a scan

    if everything:
        columns: exp.Expr = exp.Star()
    else:
        wanted = exp.In(
            this=exp.Lower(this=exp.to_identifier("c")),
            expressions=[exp.Literal.string(n) for n in sorted(names)],
        )
        columns = exp.Anonymous(this="COLUMNS", expressions=[exp.Lambda(this=wanted, expressions=[exp.to_identifier("c")])])
    copy = exp.Select(expressions=[columns]).from_(table.copy(), copy=False)
    if plain:
        copy = copy.where(exp.and_(*[c.copy() for c in plain]), copy=False)
    target = exp.Table(this=exp.to_identifier(name), db=exp.to_identifier("main"), catalog=exp.to_identifier("temp"))
    create = exp.Create(this=target.copy(), kind="TABLE", replace=True, expression=copy,
                        properties=exp.Properties(expressions=[exp.TemporaryProperty()]))
    read = target.copy()
    read.set("alias", exp.TableAlias(this=exp.to_identifier(table.alias_or_name)))
    rewritten.set("from_", exp.From(this=read))
    return Kept(create=to_duckdb(create), drop=f"DROP TABLE IF EXISTS {to_duckdb(target)}", tree=rewritten)


def _plain_names(tree: exp.Select) -> set[str]:
    """Names the select list reads as columns (outside an alias of the same name)."""
    return {n.name.lower() for e in tree.expressions for n in e.find_all(exp.Column) if not isinstance(n.this, exp.Star)}


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
