"""Choosing the training examples an operator's prompt carries.

Fetching candidates is one query; ranking them is pure (strategies are a dict
keyed by their YAML names). Examples judged under the same criterion come
first; other criteria of the same operator only fill up what is missing.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from training import schema


@dataclass(frozen=True)
class Example:
    """One annotated call, as a prompt shows it."""

    trace_id: str
    input: str
    criterion: str | None
    output: str
    confidence: float | None
    verified: bool
    timestamp: dt.datetime | None
    source: str = "logs"  # or "curated": a training_examples row (trace_id is then its id)


@dataclass(frozen=True)
class Selection:
    """The chosen examples and where they came from."""

    examples: tuple[Example, ...]
    strategy: str
    same_criterion: int
    other_criteria: int


def _recent(items: list[Example], rng: random.Random) -> list[Example]:
    epoch = dt.datetime.min
    return sorted(items, key=lambda e: e.timestamp or epoch, reverse=True)


def _high_confidence(items: list[Example], rng: random.Random) -> list[Example]:
    epoch = dt.datetime.min
    return sorted(
        items,
        key=lambda e: (e.confidence if e.confidence is not None else 1.0, e.verified, e.timestamp or epoch),
        reverse=True,
    )


def _random(items: list[Example], rng: random.Random) -> list[Example]:
    shuffled = list(items)
    rng.shuffle(shuffled)
    return shuffled


STRATEGIES: dict[str, Callable[[list[Example], random.Random], list[Example]]] = {
    "recent": _recent,
    "high_confidence": _high_confidence,
    "random": _random,
}


def rank(
    candidates: Sequence[Example],
    *,
    strategy: str,
    limit: int,
    criterion: str | None,
    rng: random.Random | None = None,
) -> Selection:
    """Pick up to ``limit`` examples: same criterion first, then the others."""
    order = STRATEGIES[strategy]
    rng = rng or random.Random()
    same = [e for e in candidates if e.criterion == criterion]
    other = [e for e in candidates if e.criterion != criterion]
    chosen_same = order(same, rng)[:limit]
    chosen_other = order(other, rng)[: limit - len(chosen_same)]
    return Selection(tuple(chosen_same + chosen_other), strategy, len(chosen_same), len(chosen_other))


def fetch_candidates(
    cursor: Any,
    *,
    cascade_id: str,
    cell_name: str,
    min_confidence: float,
    verified_only: bool,
    sql: str = schema.SELECT_EXAMPLE_CANDIDATES,
) -> list[Example]:
    """Trainable examples of one cascade and cell that pass the filters (`sql`: the store's spelling of the query)."""
    rows = cursor.execute(
        sql,
        [cascade_id, cell_name, min_confidence, verified_only],
    ).fetchall()
    return [
        Example(
            trace_id=r[0], input=r[1] or "", criterion=r[2], output=r[3] or "",
            confidence=r[4], verified=bool(r[5]), timestamp=r[6],
        )
        for r in rows
    ]


# Candidates of the "recent" and "high_confidence" strategies looked at first, in the strategy's order (see
# schema.SELECT_CURATED_WINDOW): at least 10 x limit. Every row of the window is read whole, and rows far apart (as in
# confidence order) cost a read each, so the window is small; when it holds too few of the criterion, the criterion's
# own query finds them.
RECENT_WINDOW = 50
# Characters no JSON writer escapes inside a string (some write '/' as '\/', or <, >, & and ' as \u escapes).
_PLAIN_JSON = re.compile(r"[A-Za-z0-9 !#$%()*+,.:;=?@\[\]^_`{|}~-]*")


def criterion_token(criterion: str) -> str:
    """Text that the JSON of every example of this criterion contains: the quoted criterion when no JSON writer can
    escape any of its characters, else its longest ASCII word (which appears verbatim however the rest is escaped)."""
    if _PLAIN_JSON.fullmatch(criterion):
        return f'"{criterion}"'
    return max(re.findall(r"[A-Za-z0-9]+", criterion), key=len, default="criterion")


def fetch_curated(
    cursor: Any,
    *,
    cascade_id: str,
    cell_name: str,
    strategy: str,
    limit: int,
    min_quality: float,
    min_confidence: float,
    criterion: str | None,
) -> list[Example]:
    """Curated examples of one cascade and cell, at most ``limit`` (same criterion first, in strategy order).

    Curated rows were chosen by a person or a pipeline, so they count as verified.
    """
    same = schema.SAME_CRITERION if criterion is not None else schema.NO_CRITERION
    params: list[Any] = [cascade_id, cell_name, min_quality, min_confidence]
    same_params: list[Any] = []
    if criterion is not None:
        same_params = [criterion_token(criterion), criterion]
    order = schema.CURATED_ORDER[strategy]

    def rows_of(ids: list[Any], most: int = limit) -> list[Any]:
        if not ids:
            return []
        sql = schema.SELECT_CURATED_ROWS.format(ids=", ".join("CAST(? AS UUID)" for _ in ids), same_criterion=same, order=order)
        return list(cursor.execute(sql, [*(str(i[0]) for i in ids), *same_params, most]).fetchall())

    if strategy in ("recent", "high_confidence"):
        # The window is a prefix of the filtered rows in strategy order, so its candidates (rows with an answer) of
        # either class are a prefix of that class's candidates. When it holds `limit` of the criterion, or is every
        # row, it holds the choice; else the criterion's first come from their own query, the others from the window.
        size = max(RECENT_WINDOW, 10 * limit)
        window = cursor.execute(schema.SELECT_CURATED_WINDOW.format(order=order), [*params, size]).fetchall()
        rows = rows_of(window, len(window))
        first = [r for r in rows if r[2] == criterion]
        others = [r for r in rows if r[2] != criterion]
        if len(window) < size or len(first) >= limit:
            return _curated((first + others)[:limit])
        if len(others) >= limit:
            test = schema.SAME_CRITERION_FILTER if criterion is not None else schema.NO_CRITERION_FILTER
            sql = schema.SELECT_CURATED_SAME.format(order=order, criterion_filter=test)
            first = rows_of(cursor.execute(sql, [*params, *same_params, limit]).fetchall())
            return _curated((first + others)[:limit])
        # A window of rows without an answer: the whole table decides.
    sql = schema.SELECT_CURATED_CANDIDATES.format(order=order, same_criterion=same)
    return _curated(rows_of(cursor.execute(sql, [*params, *same_params, limit]).fetchall()))


def _curated(rows: Sequence[Any]) -> list[Example]:
    """Examples of SELECT_CURATED_ROWS rows."""
    return [
        Example(trace_id=r[0], input=r[1] or "", criterion=r[2], output=r[3] or "", confidence=r[4], verified=True,
                timestamp=r[5], source="curated")
        for r in rows
    ]


def select_examples(
    cursor: Any,
    *,
    cascade_id: str,
    cell_name: str,
    strategy: str,
    limit: int,
    min_confidence: float = 0.0,
    verified_only: bool = False,
    criterion: str | None = None,
    rng: random.Random | None = None,
    source: str = "logs",
    min_quality: float = 0.0,
) -> Selection:
    """Fetch and rank the examples one operator cell injects, from annotated logs, curated examples or both."""
    candidates: list[Example] = []
    if source in ("logs", "both"):
        candidates += fetch_candidates(
            cursor, cascade_id=cascade_id, cell_name=cell_name,
            min_confidence=min_confidence, verified_only=verified_only,
        )
    if source in ("curated", "both"):
        candidates += fetch_curated(
            cursor, cascade_id=cascade_id, cell_name=cell_name, strategy=strategy, limit=limit,
            min_quality=min_quality, min_confidence=min_confidence, criterion=criterion,
        )
    return rank(candidates, strategy=strategy, limit=limit, criterion=criterion, rng=rng)


def stats(cursor: Any, cascade_id: str | None = None) -> list[dict[str, Any]]:
    """Rows of training_stats_by_cascade, optionally for one cascade."""
    cur = cursor.execute(schema.STATS, [cascade_id, cascade_id])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def nearest(
    candidates: Sequence[Example],
    similarities: Sequence[float],
    *,
    limit: int,
    criterion: str | None,
    label: Callable[[Example], bool | None] | None = None,
) -> Selection:
    """The ``semantic`` strategy: the examples most similar to the input, same criterion first.

    With ``label`` (a boolean operator), the choice is balanced between true and false
    examples when both exist, each side taken nearest first.
    """
    order = sorted(range(len(candidates)), key=lambda i: -similarities[i])
    pool = [candidates[i] for i in order if candidates[i].criterion == criterion]
    pool += [candidates[i] for i in order if candidates[i].criterion != criterion]
    chosen = pool[:limit]
    if label is not None:
        yes = [e for e in pool if label(e) is True]
        no = [e for e in pool if label(e) is False]
        if yes and no:
            take_yes = min(len(yes), max(limit - len(no), (limit + 1) // 2))
            keep = {e.trace_id for e in yes[:take_yes] + no[: limit - take_yes]}
            chosen = [e for e in pool if e.trace_id in keep]
    same = sum(1 for e in chosen if e.criterion == criterion)
    return Selection(tuple(chosen), "semantic", same, len(chosen) - same)
