"""The curated training store at scale: bulk import rate, then p50/p95 of its queries over N examples.

    .venv/bin/python -m bench.store                 # 1,000,000 examples (a few minutes)
    .venv/bin/python -m bench.store --rows 100000 --repeat 30

Every figure is printed next to a baseline measured in the same run: the same
filter as one raw DuckDB count(*), without the store's layers (models, JSON,
totals). Full-text search uses BM25 when the duckdb-extension-fts package is
installed (ILIKE otherwise; the line says which).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training import examples, retrieval, search
from training.models import ExampleFilter
from training.store import Store

DOMAINS = ("frontend", "backend", "devops", "planning", "debugging", "documentation", "data", "security", "mobile",
           "testing", "infra", "ml")
TASKS = ("single_step", "multi_step", "reasoning", "planning", "code_generation")
SOURCES = ("execution_trace", "planning_trace", "quality_feedback", "synthetic", "human_annotated")
LABELS = tuple(f"label{i}" for i in range(30))
AGENTS = tuple(f"00000000-0000-4000-8000-{i:012d}" for i in range(8))


def vocabulary(rng: random.Random, n: int = 2000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(4, 9))) for _ in range(n)]


def make_rows(n: int, start: int, rng: random.Random, vocab: list[str]) -> list[dict[str, Any]]:
    base = dt.datetime(2026, 1, 1)
    rows = []
    for i in range(start, start + n):
        rows.append({
            "agent_id": AGENTS[i % len(AGENTS)], "source_type": SOURCES[i % 5], "source_trace_hash": f"sha256:{i:012x}",
            "input_text": " ".join(rng.choices(vocab, k=12)), "output_text": " ".join(rng.choices(vocab, k=8)),
            "final_answer": rng.choice(("true", "false")), "quality_score": round(rng.uniform(0, 100), 1),
            "confidence": round(rng.uniform(0, 1), 2), "labels": rng.sample(LABELS, 3), "domain": DOMAINS[i % 12],
            "task_type": TASKS[(i // 7) % 5], "difficulty": round(rng.random(), 2),
            "cascade_id": f"cascade_{i % 20}", "cell_name": ("evaluate", "classify")[(i // 20) % 2],
            "input_structured": {"criterion": f"criterion {i % 50}"},
            "created_at": (base + dt.timedelta(seconds=i)).isoformat(),
        })
    return rows


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """p50 and p95 in milliseconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--dir", type=Path, default=None, help="where the DuckDB file goes (default: a temp dir)")
    args = ap.parse_args()
    rng = random.Random(7)
    vocab = vocabulary(rng)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        store.init()
        try:
            run(store, args, rng, vocab)
        finally:
            store.close()


def run(store: Store, args: argparse.Namespace, rng: random.Random, vocab: list[str]) -> None:
    print(f"training store bench: {args.rows:,} examples, {args.repeat} timed runs per query")
    t0 = time.perf_counter()
    gen = 0.0
    for start in range(0, args.rows, args.chunk):
        g = time.perf_counter()
        rows = make_rows(min(args.chunk, args.rows - start), start, rng, vocab)
        gen += time.perf_counter() - g
        results = examples.bulk(store, rows)
        assert all(r["status"] == "created" for r in results)
    elapsed = time.perf_counter() - t0 - gen
    print(f"bulk import (validation, dedup check, insert, outbox events): {args.rows / elapsed:,.0f} rows/s "
          f"({elapsed:.1f} s; generating the rows took {gen:.1f} s more)")
    store.write(lambda cur: cur.execute("DELETE FROM training_events")).result()  # nobody publishes here

    cur = store.cursor()
    fts = search.available(store)
    t = time.perf_counter()
    examples.list_examples(store, ExampleFilter(q=vocab[0]), limit=1)  # builds the index
    print(f"full-text: {'BM25 (fts extension)' if fts else 'ILIKE (duckdb-extension-fts not installed)'}; "
          f"first search incl. index build {time.perf_counter() - t:.1f} s")

    def raw(sql: str, *params: Any) -> Callable[[], Any]:
        return lambda: cur.execute(sql, list(params)).fetchall()

    word = vocab[1]
    cases: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        ("filtered list (domain, min_quality, labels; page of 50 + total)",
         lambda: examples.list_examples(store, ExampleFilter(domain="backend", min_quality=80, labels=["label3"]), limit=50),
         raw("SELECT count(*) FROM training_examples WHERE domain = ? AND quality_score >= ? "
             "AND list_has_any(labels, ['label3'])", "backend", 80)),
        ("filtered list (domain, min_quality; page of 50 + total)",
         lambda: examples.list_examples(store, ExampleFilter(domain="backend", min_quality=80), limit=50),
         raw("SELECT count(*) FROM training_examples WHERE domain = ? AND quality_score >= ?", "backend", 80)),
        ("filtered list, newest first, no filter",
         lambda: examples.list_examples(store, limit=50),
         raw("SELECT count(*) FROM training_examples")),
        ("stats (all examples)", lambda: examples.stats(store),
         raw("SELECT count(*) FROM training_examples")),
        ("stats (one domain)", lambda: examples.stats(store, ExampleFilter(domain="frontend")),
         raw("SELECT count(*) FROM training_examples WHERE domain = ?", "frontend")),
        (f"full-text search q={word!r}", lambda: examples.list_examples(store, ExampleFilter(q=word), order_by="relevance"),
         raw("SELECT count(*) FROM training_examples WHERE input_text ILIKE ?", f"%{word}%")),
        ("retrieval for injection (curated, recent, limit 5)",
         lambda: retrieval.select_examples(cur, cascade_id="cascade_3", cell_name="classify", strategy="recent", limit=5,
                                           source="curated", min_quality=50, criterion="criterion 3"),
         raw("SELECT count(*) FROM training_examples WHERE cascade_id = ? AND cell_name = ?", "cascade_3", "classify")),
        ("retrieval for injection (curated, high_confidence, limit 5)",
         lambda: retrieval.select_examples(cur, cascade_id="cascade_4", cell_name="evaluate", strategy="high_confidence",
                                           limit=5, source="curated", criterion="criterion 4"),
         raw("SELECT count(*) FROM training_examples WHERE cascade_id = ? AND cell_name = ?", "cascade_4", "evaluate")),
    ]
    print(f"{'query':<62} {'p50 ms':>8} {'p95 ms':>8}   {'baseline p50/p95 ms':>20}")
    for name, fn, base in cases:
        n = min(args.repeat, 10) if name.startswith("full-text") else args.repeat
        p50, p95 = timed(fn, n)
        b50, b95 = timed(base, n)
        print(f"{name:<62} {p50:>8.1f} {p95:>8.1f}   {b50:>9.1f} / {b95:<9.1f}")
    cur.close()


if __name__ == "__main__":
    main()
