"""SQL functions over embeddings: EMBED(text), SIMILAR_TO(a, b), and VECTOR_SEARCH's rewrite.

EMBED and SIMILAR_TO are vectorised DuckDB UDFs (Arrow in, Arrow out): each
vector's distinct texts are encoded in one batch, through the embedder's cache.
DuckDB's Python API has no table-function UDFs, so
``VECTOR_SEARCH('query', 'table', 'column', k)`` in a FROM clause is rewritten
(on the sqlglot tree) into a subquery of the table's rows with a ``score``
column, ordered by it, best first, k rows. For a table, the k nearest rowids
are found first, by numpy's exact product over the column's cached vectors or,
from ``vector_index_threshold`` texts, through an in-memory HNSW index of them
(training/vectors.py), and the table's rows are joined to them; otherwise (a
view) SIMILAR_TO scores every row in SQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot import exp

from semantic_ops.errors import SemanticSyntaxError
from training.embeddings import Embedder, cosine
from training.store import Store
from training.vectors import VectorIndexes, VectorSets, search_sql, top_k

log = logging.getLogger(__name__)

EMBED = "embed"
SIMILAR_TO = "similar_to"
VECTOR_SEARCH = "vector_search"
NAMES = (EMBED, SIMILAR_TO, VECTOR_SEARCH)  # words that make a statement go through the rewrite


def _vectors(embedder: Embedder, column: pa.Array) -> tuple[np.ndarray[Any, Any], list[bool]]:
    """Vectors of a column's texts (zeros where NULL) and which rows were NULL."""
    values = column.to_pylist()
    nulls = [v is None for v in values]
    texts = [str(v) for v in values if v is not None]
    distinct = list(dict.fromkeys(texts))
    found = embedder.encode(distinct)
    index = {t: i for i, t in enumerate(distinct)}
    out = np.zeros((len(values), found.shape[1] if len(distinct) else (embedder.dim or 384)), dtype=np.float32)
    for i, v in enumerate(values):
        if v is not None:
            out[i] = found[index[str(v)]]
    return out, nulls


def register(con: Any, embedder: Embedder) -> None:
    """Create EMBED and SIMILAR_TO on a connection (visible to its cursors)."""
    dim = embedder.dim
    fixed = bool(dim)

    def embed(column: pa.Array) -> pa.Array:
        vectors, nulls = _vectors(embedder, column)
        flat = pa.array(vectors.ravel(), pa.float32())
        mask = pa.array(nulls, pa.bool_()) if any(nulls) else None
        if not fixed:
            offsets = pa.array(np.arange(len(nulls) + 1, dtype=np.int32) * vectors.shape[1])
            return pa.ListArray.from_arrays(offsets, flat, mask=mask)
        return pa.FixedSizeListArray.from_arrays(flat, dim, mask=mask)

    def similar_to(a: pa.Array, b: pa.Array) -> pa.Array:
        va, na = _vectors(embedder, a)
        vb, nb = _vectors(embedder, b)
        scores = cosine(va, vb)
        return pa.array([None if x or y else float(s) for s, x, y in zip(scores, na, nb)], pa.float64())

    # The packaged model's width is known before it loads; another model's only after its first call.
    vector_type = duckdb.array_type(duckdb.sqltype("FLOAT"), dim) if embedder.dim else duckdb.list_type(duckdb.sqltype("FLOAT"))
    con.create_function(EMBED, embed, ["VARCHAR"], vector_type,
                        type="arrow", null_handling="special")
    con.create_function(SIMILAR_TO, similar_to, ["VARCHAR", "VARCHAR"], "DOUBLE",
                        type="arrow", null_handling="special")


def _search_args(node: exp.Expr) -> list[exp.Expr] | None:
    """The arguments of a VECTOR_SEARCH call, or None when node is not one."""
    if isinstance(node, exp.Anonymous) and isinstance(node.this, str) and node.this.lower() == VECTOR_SEARCH:
        return list(node.expressions)
    vector_search = getattr(exp, "VectorSearch", None)  # sqlglot parses BigQuery's VECTOR_SEARCH into its own node
    if vector_search is not None and isinstance(node, vector_search):
        return [v for k in node.arg_types if isinstance(v := node.args.get(k), exp.Expr)]
    return None


def _string(arg: exp.Expr, what: str) -> str:
    if isinstance(arg, exp.Literal) and arg.is_string:
        return str(arg.this)
    raise SemanticSyntaxError(f"VECTOR_SEARCH needs the {what} as a quoted string, got {arg.sql()}",
                              hint="VECTOR_SEARCH('query text', 'table', 'column', k)")


Search = Callable[[str, str, str, int], "exp.Expr | None"]  # (table, column, query text, k) -> subquery or None


class VectorSearch:
    """VECTOR_SEARCH's subquery over a table's column: the k nearest rowids, found with numpy's exact product
    over the column's cached vectors or, at or above ``vector_index_threshold``, through an HNSW index once
    one of the current rows is ready, then the table's rows joined to them.

    None (score every row in SQL) for what has no rowid to join on, a view say. ``on(con)`` binds the
    search to the session's connection, so that it reads the rows that session sees (its open
    transaction's, its temporary tables).
    """

    def __init__(self, store: Store, embedder: Embedder, indexes: VectorIndexes | None = None,
                 sets: VectorSets | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.indexes = indexes
        self.sets = sets or VectorSets()

    def on(self, con: Any) -> Search:
        return lambda table, column, query, k: self(table, column, query, k, con=con)

    def __call__(self, table: str, column: str, query: str, k: int, *, con: Any = None) -> exp.Expr | None:
        tsql = exp.to_table(table).sql("duckdb")
        csql = exp.to_identifier(column).sql("duckdb")
        own = con is None
        cur = self.store.cursor() if own else con
        try:
            try:
                # How many texts, and a digest of (rowid, text) of every row: any change means other vectors.
                row = cur.execute(f"SELECT count({csql}), bit_xor(hash(rowid, {csql})) FROM {tsql}").fetchone()
            except duckdb.Error as exc:  # a view has no rowid to join back on; the SQL search reports real errors
                log.debug("VECTOR_SEARCH on %s scores every row in SQL: %s", tsql, exc)
                return None
            size = int(row[0]) if row else 0
            fp = f"{size}:{row[1] if row else ''}"
            key = f"table:{tsql}:{csql}:{self.embedder.name}"
            wanted = self.indexes is not None and self.indexes.wanted(size) and self.indexes.available()
            index = self.indexes.ready(key, fp) if wanted and self.indexes is not None else None
            if index is not None:
                nearest = search_sql(index, self.embedder.encode_one(query), k)
                return sqlglot.parse_one(f"SELECT _vs.*, _ix.score FROM ({nearest}) AS _ix JOIN {tsql} AS _vs "
                                         f"ON _vs.rowid = _ix.id ORDER BY _ix.score DESC, _ix.id", read="duckdb")
            rows = f"SELECT rowid, CAST({csql} AS VARCHAR) FROM {tsql} WHERE {csql} IS NOT NULL"
            ids, vectors = self.sets.get(key, fp, lambda: self.embedder.encode_rows(cur, rows))
        finally:
            if own:
                cur.close()
        if wanted and self.indexes is not None:
            # the builder indexes exactly the rows searched here, those this connection sees
            self.indexes.ensure(key, fp, size, lambda: (ids, vectors))
        hits = top_k(ids, vectors, self.embedder.encode_one(query), k)
        if not hits:
            return sqlglot.parse_one(f"SELECT _vs.*, CAST(NULL AS DOUBLE) AS score FROM {tsql} AS _vs WHERE false",
                                     read="duckdb")
        # Two list constants: DuckDB reads a string of numbers into BIGINT[] / DOUBLE[] exactly (repr round-trips
        # a double), and a k of thousands stays two tokens for sqlglot.
        found = "[" + ",".join(str(i) for i, _ in hits) + "]"
        scores = "[" + ",".join(repr(s) for _, s in hits) + "]"
        return sqlglot.parse_one(
            f"SELECT _vs.*, _ix.score FROM (SELECT unnest('{found}'::BIGINT[]) AS id, "
            f"unnest('{scores}'::DOUBLE[]) AS score) AS _ix JOIN {tsql} AS _vs ON _vs.rowid = _ix.id "
            f"ORDER BY _ix.score DESC, _ix.id", read="duckdb")


def rewrite_vector_search(tree: exp.Expr, search: Search | None = None) -> exp.Expr:
    """Replace each VECTOR_SEARCH(...) in a FROM or JOIN with the subquery that computes it.

    ``search`` may answer with the subquery of the nearest rowids (VectorSearch); otherwise every row is scored.
    """

    def replace(node: exp.Expr) -> exp.Expr:
        if not isinstance(node, exp.Table):
            return node
        args = _search_args(node.this)
        if args is None:
            return node
        if len(args) != 4:
            raise SemanticSyntaxError(f"VECTOR_SEARCH takes 4 arguments (query, table, column, k), got {len(args)}",
                                      hint="VECTOR_SEARCH('query text', 'table', 'column', k)")
        query = args[0]
        table = exp.to_table(_string(args[1], "table name"))
        column = exp.column(_string(args[2], "column name"), table="_vs")
        k = args[3]
        if not (isinstance(k, exp.Literal) and k.is_int and int(k.this) > 0):
            raise SemanticSyntaxError(f"VECTOR_SEARCH needs k as a positive whole number, got {k.sql()}")
        alias = node.args.get("alias")
        alias = alias.copy() if alias else exp.TableAlias(this=exp.to_identifier(VECTOR_SEARCH))
        if search is not None and isinstance(query, exp.Literal) and query.is_string:
            indexed = search(table.sql("duckdb"), _string(args[2], "column name"), str(query.this), int(k.this))
            if indexed is not None:
                return exp.Subquery(this=indexed, alias=alias)
        score = exp.Anonymous(this=SIMILAR_TO, expressions=[exp.cast(column, "VARCHAR"), exp.cast(query.copy(), "VARCHAR")])
        sub = (exp.select(exp.column(exp.Star(), table="_vs"),
                          exp.alias_(score, "score"))
               .from_(table.as_("_vs"))
               .where(exp.column(_string(args[2], "column name"), table="_vs").is_(exp.null()).not_())
               .order_by(exp.Ordered(this=exp.column("score"), desc=True))
               .limit(k.copy()))
        return exp.Subquery(this=sub, alias=alias)

    return tree.transform(replace)
