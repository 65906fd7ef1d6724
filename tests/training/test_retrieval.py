"""Example ranking is pure: strategies, limits and criterion order."""

from __future__ import annotations

import datetime as dt
import random

from training.retrieval import Example, rank


def ex(i: int, criterion: str = "eco", conf: float = 1.0, verified: bool = False) -> Example:
    return Example(f"t{i}", f"text {i}", criterion, "true", conf, verified, dt.datetime(2026, 1, i))


def test_recent_takes_newest_first() -> None:
    sel = rank([ex(1), ex(3), ex(2)], strategy="recent", limit=2, criterion="eco")
    assert [e.trace_id for e in sel.examples] == ["t3", "t2"]


def test_high_confidence_orders_by_confidence_then_verified() -> None:
    items = [ex(1, conf=0.7), ex(2, conf=0.9), ex(3, conf=0.9, verified=True)]
    sel = rank(items, strategy="high_confidence", limit=3, criterion="eco")
    assert [e.trace_id for e in sel.examples] == ["t3", "t2", "t1"]


def test_random_is_a_sample_of_the_limit() -> None:
    items = [ex(i) for i in range(1, 11)]
    a = rank(items, strategy="random", limit=4, criterion="eco", rng=random.Random(1))
    b = rank(items, strategy="random", limit=4, criterion="eco", rng=random.Random(2))
    assert len(a.examples) == 4 and len(set(a.examples)) == 4
    assert a.examples != b.examples


def test_same_criterion_first_then_fill() -> None:
    items = [ex(5, "luxury"), ex(1, "eco"), ex(6, "luxury"), ex(2, "eco")]
    sel = rank(items, strategy="recent", limit=3, criterion="eco")
    assert [e.trace_id for e in sel.examples] == ["t2", "t1", "t6"]
    assert (sel.same_criterion, sel.other_criteria) == (2, 1)
    only = rank(items, strategy="recent", limit=2, criterion="eco")
    assert (only.same_criterion, only.other_criteria) == (2, 0)
