"""Parameter types of a prepared statement, inferred as Postgres' parser would.

DuckDB 1.5 defers a parameter's type until values are bound (its prepared
statements report UNKNOWN), so ParameterDescription is worked out here from
the statement's tree and the column types of the tables it names: a parameter
compared with, assigned to or inserted into a column takes the column's type, a
cast gives its type, LIMIT/OFFSET take bigint, and anything else is text, as
Postgres resolves an otherwise unknown parameter.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import TokenError
from sqlglot.tokens import TokenType

from server.pgwire import types
from server.statements import ThreadTokenizer

_TOKENIZER = ThreadTokenizer(Postgres)

# table name (lower case) → {column name (lower case): DuckDB type name}
ColumnsOf = Callable[[str], dict[str, str]]
# SQL text of a one-column SELECT → its DuckDB type name, or None
TypeOfQuery = Callable[[str], str | None]

_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike, exp.Add, exp.Sub,
                exp.Mul, exp.Div, exp.Mod, exp.NullSafeEQ, exp.NullSafeNEQ, exp.Coalesce)


def parameter_index(node: exp.Expr) -> int | None:
    """The 0-based index of a $n parameter node, or None for anything else."""
    if isinstance(node, exp.Parameter | exp.Placeholder):
        inner = node.this
        text = inner.this if isinstance(inner, exp.Literal) else inner
        if isinstance(text, str | int) and str(text).isdigit():
            return int(text) - 1
    return None


def count(tree: exp.Expr) -> int:
    """How many parameters a statement takes (the highest $n)."""
    return max((i + 1 for node in tree.find_all(exp.Parameter, exp.Placeholder)
                if (i := parameter_index(node)) is not None), default=0)


def from_tokens(text: str) -> dict[int, int]:
    """$n → OID read from the tokens ($n alone, or $n::type), for text the parser cannot read."""
    try:
        tokens = _TOKENIZER.tokenize(text)
    except TokenError:
        return {}
    found: dict[int, int] = {}
    for i, (a, b) in enumerate(zip(tokens, tokens[1:])):
        if a.token_type != TokenType.PARAMETER or b.token_type != TokenType.NUMBER or not b.text.isdigit():
            continue
        index, oid = int(b.text) - 1, 0
        rest = tokens[i + 2:i + 6]
        if len(rest) >= 2 and rest[0].token_type == TokenType.DCOLON:
            name = rest[1].text
            if len(rest) >= 4 and rest[2].token_type == TokenType.L_BRACKET and rest[3].token_type == TokenType.R_BRACKET:
                name += "[]"
            oid = types.oid_of(name)
        found[index] = found.get(index) or oid
    return found


class _Scope:
    def __init__(self, tree: exp.Expr, columns_of: ColumnsOf, type_of_query: TypeOfQuery | None = None) -> None:
        self.type_of_query = type_of_query
        self.tables: dict[str, dict[str, str]] = {}
        self.order: list[dict[str, str]] = []
        for table in tree.find_all(exp.Table):
            cols = columns_of(table.name.lower()) if table.name else {}
            self.tables[table.alias_or_name.lower()] = cols
            self.tables.setdefault(table.name.lower(), cols)
            self.order.append(cols)

    def column(self, col: exp.Column) -> str | None:
        name = col.name.lower()
        if col.table:
            return self.tables.get(col.table.lower(), {}).get(name)
        return next((cols[name] for cols in self.order if name in cols), None)

    def ask(self, node: exp.Expr) -> int | None:
        """The type DuckDB's binder gives an expression, evaluated over the FROM clause it sits in."""
        if self.type_of_query is None or node.find(exp.Parameter, exp.Placeholder) is not None:
            return None
        select = node.find_ancestor(exp.Select)
        query = exp.select(node.copy())
        if select is not None:
            for key in ("from_", "joins", "with_"):
                if select.args.get(key) is not None:
                    query.set(key, select.args[key].copy() if not isinstance(select.args[key], list)
                              else [j.copy() for j in select.args[key]])
            if query.find(exp.Parameter, exp.Placeholder) is not None:
                return None
        duck = self.type_of_query(query.sql(dialect="duckdb"))
        return types.oid_of(duck) if duck and duck.upper() != "NULL" else None


def _cast_oid(cast: exp.Cast) -> int:
    return types.oid_of(cast.to.sql(dialect="duckdb"))


def _type_of(node: exp.Expr, scope: _Scope) -> int | None:
    """The OID of an expression next to a parameter, where it is plain to see."""
    if isinstance(node, exp.Column):
        duck = scope.column(node)
        return types.oid_of(duck) if duck else scope.ask(node)
    if isinstance(node, exp.Cast):
        return _cast_oid(node)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return None
        return types.INT4 if node.is_int else types.NUMERIC
    if isinstance(node, exp.Boolean):
        return types.BOOL
    if isinstance(node, exp.Paren):
        return _type_of(node.this, scope)
    return scope.ask(node)


def _insert_columns(insert: exp.Insert, scope: _Scope) -> list[int | None]:
    target = insert.this
    table = target.this if isinstance(target, exp.Schema) else target
    if not isinstance(table, exp.Table):
        return []
    cols = scope.tables.get(table.alias_or_name.lower()) or {}
    if isinstance(target, exp.Schema) and target.expressions:
        names = [c.name.lower() for c in target.expressions]
    else:
        names = list(cols)
    return [types.oid_of(cols[n]) if n in cols else None for n in names]


def _infer_one(node: exp.Expr, scope: _Scope, insert_types: list[int | None]) -> int | None:
    parent = node.parent
    if isinstance(parent, exp.Cast):
        return _cast_oid(parent)
    if isinstance(parent, exp.Limit | exp.Offset | exp.Fetch):
        return types.INT8
    if isinstance(parent, exp.Tuple) and isinstance(parent.parent, exp.Values):
        position = parent.expressions.index(node) if node in parent.expressions else -1
        if 0 <= position < len(insert_types):
            return insert_types[position]
        return None
    if isinstance(parent, exp.In | exp.Between):
        if parent.this is not node:
            return _type_of(parent.this, scope)
        for other in parent.expressions if isinstance(parent, exp.In) else (parent.args.get("low"),):
            if other is not None and other is not node and (oid := _type_of(other, scope)):
                return oid
        return None
    if isinstance(parent, _COMPARISONS):
        sides = [parent.this, parent.args.get("expression")] + list(parent.expressions or [])
        for other in sides:
            if other is not None and other is not node and (oid := _type_of(other, scope)):
                return oid
    if isinstance(parent, exp.Not | exp.And | exp.Or | exp.Where):
        return types.BOOL
    return None


def infer(tree: exp.Expr, columns_of: ColumnsOf, given: list[int],
          type_of_query: TypeOfQuery | None = None) -> list[int]:
    """OIDs of a statement's parameters: the client's where it gave one (non-zero), else inferred."""
    n = max(count(tree), len(given))
    found: dict[int, int] = {}
    scope = _Scope(tree, columns_of, type_of_query)
    insert_types = _insert_columns(tree, scope) if isinstance(tree, exp.Insert) else []
    for node in tree.find_all(exp.Parameter, exp.Placeholder):
        index = parameter_index(node)
        if index is None or index in found:
            continue
        oid = _infer_one(node, scope, insert_types)
        if oid:
            found[index] = oid
    return [client or found.get(i) or types.TEXT for i, client in enumerate([*given, *[0] * (n - len(given))])]
