"""SQL functions over embeddings: EMBED(text), SIMILAR_TO(a, b), and VECTOR_SEARCH's rewrite.

EMBED and SIMILAR_TO are vectorised DuckDB UDFs (Arrow in, Arrow out): each
vector's distinct texts are encoded in one batch, through the embedder's cache.
DuckDB's Python API has no table-function UDFs, so
``VECTOR_SEARCH('query', 'table', 'column', k)`` in a FROM clause is rewritten
(pure, on the sqlglot tree) into a subquery of the table's rows with a
``score`` column, ordered by it, best first, k rows. When the table holds at
least ``vector_index_threshold`` texts, the subquery instead reads the k
nearest rowids from an in-memory HNSW index of the column's vectors
(training/vectors.py) and joins the table's rows to them.
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
from training.vectors import VectorIndexes, search_sql

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


class IndexedSearch:
    """VECTOR_SEARCH's subquery through an HNSW index when the table is large enough; None: search exactly."""

    def __init__(self, store: Store, embedder: Embedder, indexes: VectorIndexes) -> None:
        self.store = store
        self.embedder = embedder
        self.indexes = indexes

    def __call__(self, table: str, column: str, query: str, k: int) -> exp.Expr | None:
        if not self.indexes.threshold:
            return None
        tsql = exp.to_table(table).sql("duckdb")
        csql = exp.to_identifier(column).sql("duckdb")
        cur = self.store.cursor()
        try:
            # How many texts, and a digest of (rowid, text) of every row: any change means a rebuild.
            row = cur.execute(f"SELECT count({csql}), bit_xor(hash(rowid, {csql})) FROM {tsql}").fetchone()
        except duckdb.Error as exc:  # a view has no rowid to join back on; the exact search reports real errors
            log.debug("VECTOR_SEARCH on %s stays exact: %s", tsql, exc)
            return None
        finally:
            cur.close()
        size = int(row[0]) if row else 0
        if not self.indexes.wanted(size):
            return None

        def rows() -> tuple[Any, Any]:
            cur = self.store.cursor()
            try:
                data = cur.execute(f"SELECT rowid, CAST({csql} AS VARCHAR) FROM {tsql} WHERE {csql} IS NOT NULL").fetchall()
            finally:
                cur.close()
            return np.array([r[0] for r in data], dtype=np.int64), self.embedder.encode([r[1] for r in data])

        key = f"table:{tsql}:{csql}:{self.embedder.name}"
        index = self.indexes.ensure(key, f"{size}:{row[1] if row else ''}", size, rows)
        if index is None:
            return None
        nearest = search_sql(index, self.embedder.encode_one(query), k)
        return sqlglot.parse_one(f"SELECT _vs.*, _ix.score FROM ({nearest}) AS _ix JOIN {tsql} AS _vs "
                                 f"ON _vs.rowid = _ix.id ORDER BY _ix.score DESC", read="duckdb")


def rewrite_vector_search(tree: exp.Expr, search: Search | None = None) -> exp.Expr:
    """Replace each VECTOR_SEARCH(...) in a FROM or JOIN with the subquery that computes it.

    ``search`` may answer with an indexed subquery (IndexedSearch); otherwise every row is scored.
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
