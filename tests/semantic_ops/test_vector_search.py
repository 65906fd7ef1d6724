"""VECTOR_SEARCH's exact search in numpy over the cached vectors: the rows and scores of the SQL scan."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlglot

from semantic_ops import functions
from semantic_ops.functions import VectorSearch, rewrite_vector_search
from tests.conftest import wait_for
from training.embeddings import LOCAL, Embedder
from training.store import Store
from training.vectors import VectorSets, top_k

WORDS = ["cat", "dog", "bank", "rates", "kitten", "fire", "market", "bond", "apple", "pie", "tart", "sleep"]


class Encoder:
    """Vectors that depend on a text's words (texts sharing words are near), counting the texts it encodes."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.texts: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        out = np.zeros((len(texts), self.dim))
        for i, t in enumerate(texts):
            for w in t.split():
                seed = int(hashlib.sha256(w.encode()).hexdigest()[:8], 16)
                out[i] += np.random.default_rng(seed).standard_normal(self.dim)
        return out


def texts(n: int, seed: int = 0) -> list[str | None]:
    """n short texts of a few words each: some repeated (equal scores), some NULL."""
    rng = np.random.default_rng(seed)
    out: list[str | None] = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 4)))) for _ in range(n)]
    for i in range(0, n, 17):
        out[i] = None
    return out


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "search.duckdb")
    s.init()
    yield s
    s.close()


def make(store: Store, model: str, dim: int) -> tuple[Embedder, Encoder, VectorSearch]:
    encoder = Encoder(dim)
    embedder = Embedder(model, store=store, encoder=encoder, dim=dim if model == LOCAL else None)
    functions.register(store.database, embedder)
    return embedder, encoder, VectorSearch(store, embedder)


def run(cur: Any, query: str, search: Any = None) -> list[tuple[Any, ...]]:
    tree = rewrite_vector_search(sqlglot.parse_one(query, read="duckdb"), search)
    return cur.execute(tree.sql("duckdb")).fetchall()


def expected(cur: Any, table: str, query: str, k: int) -> list[tuple[Any, ...]]:
    """The SQL scan's top k, its ties ordered by rowid."""
    return cur.execute(
        f"SELECT *, SIMILAR_TO(CAST(body AS VARCHAR), '{query}') AS score FROM {table} "
        f"WHERE body IS NOT NULL ORDER BY score DESC, rowid LIMIT {k}"
    ).fetchall()


def same(found: list[tuple[Any, ...]], wanted: list[tuple[Any, ...]]) -> None:
    assert [r[:-1] for r in found] == [r[:-1] for r in wanted]
    assert all(abs(f[-1] - w[-1]) < 1e-12 for f, w in zip(found, wanted)), (found, wanted)


@pytest.mark.parametrize("model, dim", [(LOCAL, 384), ("other/model", 48)])
def test_numpy_finds_the_rows_and_scores_of_the_sql_scan(store: Store, model: str, dim: int) -> None:
    embedder, encoder, search = make(store, model, dim)
    cur = store.cursor()
    cur.execute("CREATE TABLE docs (id INT, body VARCHAR)")
    cur.executemany("INSERT INTO docs VALUES (?, ?)", list(enumerate(texts(600))))
    for query in ("cat kitten", "bank rates", "nothing alike"):
        for k in (1, 40, 1000):
            sql = f"SELECT * FROM VECTOR_SEARCH('{query}', 'docs', 'body', {k})"
            found = run(cur, sql, search.on(cur))
            same(found, expected(cur, "docs", query, k))
            scan = run(cur, sql)  # the SQL scan itself: same scores; rows of equal score in an order of its own
            assert np.allclose([r[-1] for r in scan], [r[-1] for r in found], rtol=0, atol=1e-12)
            last = found[-1][-1] + 1e-12
            assert sorted(r for r in scan if r[-1] > last) == sorted(r for r in found if r[-1] > last)
    # with k of 40 the 40th best is among many repeats of one text: rows of equal score come by rowid
    top = run(cur, "SELECT id, score FROM VECTOR_SEARCH('cat', 'docs', 'body', 40)", search.on(cur))
    tied = [i for i in range(1, len(top)) if top[i][1] == top[i - 1][1]]
    assert tied and all(top[i][0] > top[i - 1][0] for i in tied)
    # every vector but the queries' came from the cache table in one join, after the model encoded each once
    assert search.sets.loads == 1
    queries = {"cat kitten", "bank rates", "nothing alike", "cat"}
    assert len(encoder.texts) == len(set(encoder.texts)) == len({t for t in texts(600) if t} | queries)
    cur.close()


def test_vectors_come_from_the_cache_and_change_with_the_rows(store: Store) -> None:
    embedder, encoder, search = make(store, LOCAL, 384)
    cur = store.cursor()
    cur.execute("CREATE TABLE docs (id INT, body VARCHAR)")
    cur.executemany("INSERT INTO docs VALUES (?, ?)", [(1, "cat"), (2, "dog bank"), (3, "apple pie"), (4, None)])
    first = run(cur, "SELECT id, score FROM VECTOR_SEARCH('apple tart', 'docs', 'body', 3)", search.on(cur))
    same(first, [(r[0], r[-1]) for r in expected(cur, "docs", "apple tart", 3)])
    assert [r[0] for r in first] == [3, 1, 2] and len(encoder.texts) == 4
    wait_for(lambda: cur.execute("SELECT count(*) FROM embedding_cache").fetchone() == (4,), what="cache rows")
    # a text cached twice (two processes encoded it at once) still gives its row once
    cur.execute("INSERT INTO embedding_cache SELECT * FROM embedding_cache WHERE text_hash = substr(sha256('cat'), 1, 32)")
    # a new process (no vector in memory) with no model: every vector is read from the cache table
    fresh = Embedder(store=store, encoder=lambda t: pytest.fail(f"encoded {t}"), dim=384)
    again = VectorSearch(store, fresh)
    assert run(cur, "SELECT id, score FROM VECTOR_SEARCH('apple tart', 'docs', 'body', 3)", again.on(cur)) == first
    # the same rows again: nothing is read
    assert run(cur, "SELECT id, score FROM VECTOR_SEARCH('apple tart', 'docs', 'body', 3)", again.on(cur)) == first
    assert again.sets.loads == 1
    # a changed row: its vectors are read again, and the search sees it
    cur.execute("UPDATE docs SET body = 'apple tart' WHERE id = 1")
    changed = run(cur, "SELECT id, score FROM VECTOR_SEARCH('apple tart', 'docs', 'body', 3)", search.on(cur))
    assert changed[0][0] == 1 and abs(changed[0][1] - 1.0) < 1e-6
    assert len({r[0] for r in changed}) == 3
    cur.close()


def test_the_search_sees_what_the_session_sees(store: Store) -> None:
    """Rows of the session's open transaction, its temporary tables; a view is scored in SQL."""
    _, _, search = make(store, LOCAL, 384)
    cur = store.cursor()
    cur.execute("CREATE TABLE docs (id INT, body VARCHAR)")
    cur.execute("INSERT INTO docs VALUES (1, 'dog'), (2, 'bank rates')")
    cur.execute("BEGIN")
    cur.execute("INSERT INTO docs VALUES (3, 'cat kitten')")
    assert run(cur, "SELECT id FROM VECTOR_SEARCH('cat kitten', 'docs', 'body', 1)", search.on(cur)) == [(3,)]
    cur.execute("ROLLBACK")
    assert run(cur, "SELECT id FROM VECTOR_SEARCH('cat kitten', 'docs', 'body', 3)", search.on(cur)) in ([(1,), (2,)], [(2,), (1,)])
    cur.execute("CREATE TEMP TABLE mine (id INT, body VARCHAR)")
    cur.execute("INSERT INTO mine VALUES (7, 'apple pie'), (8, 'market bond')")
    assert run(cur, "SELECT id FROM VECTOR_SEARCH('apple', 'mine', 'body', 1)", search.on(cur)) == [(7,)]
    cur.execute("CREATE VIEW v AS SELECT * FROM docs")
    assert search("v", "body", "dog", 1, con=cur) is None  # no rowid: the SQL scan answers
    assert run(cur, "SELECT id FROM VECTOR_SEARCH('dog', 'v', 'body', 1)", search.on(cur)) == [(1,)]
    cur.execute("CREATE TABLE empty (body VARCHAR)")
    assert run(cur, "SELECT score FROM VECTOR_SEARCH('dog', 'empty', 'body', 3)", search.on(cur)) == []
    cur.close()


def test_top_k_is_the_exact_order_with_ties_by_id() -> None:
    rng = np.random.default_rng(3)
    v = rng.standard_normal((2000, 64)).astype(np.float32)
    v[1000:1100] = v[5]  # 100 copies of one vector: equal scores
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = rng.permutation(10_000)[:2000].astype(np.int64)
    for q in (v[5], v[17], rng.standard_normal(64).astype(np.float32)):
        q = q / np.linalg.norm(q)
        exact = (v.astype(np.float64) * q.astype(np.float64)).sum(axis=1)
        order = np.lexsort((ids, -exact))
        for k in (1, 10, 50, 150, 2000, 5000):
            found = top_k(ids, v, q, k)
            assert [i for i, _ in found] == ids[order][:k].tolist()
            assert np.allclose([s for _, s in found], exact[order][:k], atol=1e-12)
    assert top_k(ids[:0], v[:0], v[0], 3) == []


def test_vector_sets_keep_the_latest_within_their_limit() -> None:
    sets = VectorSets(limit=250)
    loaded: list[str] = []

    def load(name: str, n: int) -> Any:
        return lambda: (loaded.append(name), (np.arange(n, dtype=np.int64), np.zeros((n, 4), np.float32)))[1]

    sets.get("a", "1", load("a", 100))
    sets.get("b", "1", load("b", 100))
    sets.get("a", "1", load("a", 100))  # kept
    sets.get("c", "1", load("c", 100))  # over 250: b, the least recent, goes
    sets.get("a", "1", load("a", 100))
    sets.get("b", "1", load("b", 100))
    sets.get("a", "2", load("a2", 100))  # other rows under the same key
    assert loaded == ["a", "b", "c", "b", "a2"]
