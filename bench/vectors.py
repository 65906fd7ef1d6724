"""Nearest-neighbour search at scale: exact scan against the HNSW index (DuckDB's vss extension), in ms per query.

    .venv/bin/python -m bench.vectors                  # 100,000 vectors of 384 floats
    .venv/bin/python -m bench.vectors --n 20000 --queries 50
    .venv/bin/python -m bench.vectors --n 20000 --m 16 --ef-search 256   # other index options

The vectors are synthetic and clustered (200 topics, noise around each), L2-normalised like the embedding
model's, so no model runs and the figure is about search alone. Printed, each measured in the same run:
the time to build the index (in memory, by the background builder of training/vectors.py), p50/p95 ms of a top-10 query
through the index (the SQL training/vectors.py runs, HNSW_INDEX_SCAN in its plan), the same query on a copy
of the table with no index (DuckDB's exact scan), and numpy's exact matrix-vector product; then the recall
of the index's top 10 against the exact top 10.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python bench/vectors.py`
    sys.path.insert(0, str(ROOT))

from training.store import Store  # noqa: E402
from training.vectors import EF_CONSTRUCTION, EF_SEARCH, M, VectorIndexes, search_sql  # noqa: E402


def clustered(n: int, dim: int, topics: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((topics, dim)).astype(np.float32)
    v = centres[rng.integers(0, topics, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True), dtype=np.float32)


def ms(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=20) if len(samples) > 1 else samples * 19
    return f"p50 {statistics.median(samples):7.2f} ms   p95 {q[18]:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ef-construction", type=int, default=EF_CONSTRUCTION)
    parser.add_argument("--m", type=int, default=M)
    parser.add_argument("--ef-search", type=int, default=EF_SEARCH)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    vectors = clustered(args.n, args.dim, 200, rng)
    queries = clustered(args.queries, args.dim, 200, np.random.default_rng(8))
    ids = np.arange(args.n, dtype=np.int64)
    print(f"{args.n:,} vectors of {args.dim} floats, {args.queries} queries, top {args.k}; "
          f"ef_construction {args.ef_construction}, M {args.m}, ef_search {args.ef_search}; load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        store.init()
        try:
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
