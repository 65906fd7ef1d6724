"""The training store as the executor and the local judge see it: call log, answer cache, examples, annotations.

Two implementations share this interface: the DuckDB file (`DuckDBStore`, over
`training.store.Store`) and PostgreSQL (`training.pgstore.PostgresStore`),
which many meansql processes may share. Claims say which process judges an
uncached value, so that processes needing the same value at once judge it once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from training import cache, retrieval, schema
from training.retrieval import Example, Selection
from training.store import Store, insert_rows

Row = tuple[Any, ...]


class TrainingStore(Protocol):
    """What judging a query reads and writes."""

    where: str  # for messages: the file or the server, without a password

    def commit_calls(self, logs: Sequence[Row], answers: Sequence[Row], *, owner: str | None = None, release: Sequence[str] = ()) -> None:
        """Log rows (schema.LOG_FIELDS) and cache rows (schema.CACHE_FIELDS), durable on return, in one transaction;
        the claims of `owner` on `release` end in it."""

    def cache_lookup(self, keys: Sequence[str]) -> dict[str, Any]:
        """Cached answers of those keys that have one."""

    def claim(self, keys: Sequence[str], owner: str) -> set[str]:
        """Claim keys for judging: the returned ones are `owner`'s (free, lapsed or its own already);
        others are being judged elsewhere."""

    def release(self, keys: Sequence[str], owner: str) -> None:
        """End `owner`'s claims on keys without an answer (its calls failed)."""

    def example_candidates(self, *, cascade_id: str, cell_name: str, min_confidence: float, verified_only: bool) -> list[Example]:
        """Trainable annotated calls of one operator cell that pass the filters."""

    def select_examples(
        self,
        *,
        cascade_id: str,
        cell_name: str,
        strategy: str,
        limit: int,
        min_confidence: float,
        verified_only: bool,
        criterion: str | None,
        source: str,
        min_quality: float,
    ) -> Selection:
        """The examples one operator cell injects (retrieval.select_examples)."""

    def annotate(
        self,
        trace_ids: Sequence[str],
        *,
        trainable: bool = True,
        verified: bool = False,
        confidence: float | None = 1.0,
        notes: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> int:
        """Upsert annotations (last write wins) with their outbox events; returns how many."""

    def calibration(self, cascade_id: str, criterion: str | None) -> float | None:
        """The newest calibrated threshold of an operator (for the criterion, else for all), if any."""

    def save_calibration(self, rows: Sequence[Row]) -> None:
        """Store judge_calibration rows (cascade_id, criterion, min_confidence, target_precision, examples,
        proxy_share)."""

    def close(self) -> None:
        """Release connections (the DuckDB file is closed by its owner)."""


class LocalClaims:
    """Claims within one process: enough when one process owns the store (a DuckDB file)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[str, str] = {}

    def claim(self, keys: Sequence[str], owner: str) -> set[str]:
        with self._lock:
            mine = set()
            for key in keys:
                if self._owners.setdefault(key, owner) == owner:
                    mine.add(key)
            return mine

    def release(self, keys: Sequence[str], owner: str) -> None:
        with self._lock:
            for key in keys:
                if self._owners.get(key) == owner:
                    del self._owners[key]


class DuckDBStore:
    """The training store in the DuckDB file, through its one writer thread."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.where = store.path
        self._claims = LocalClaims()

    def commit_calls(self, logs: Sequence[Row], answers: Sequence[Row], *, owner: str | None = None, release: Sequence[str] = ()) -> None:
        def write(cur: Any) -> None:
            insert_rows(cur, "unified_logs", schema.LOG_FIELDS, logs)
            insert_rows(cur, "semantic_cache", schema.CACHE_FIELDS, answers)

        if logs or answers:
            self.store.write(write).result()
        if owner is not None and release:
            self._claims.release(release, owner)

    def cache_lookup(self, keys: Sequence[str]) -> dict[str, Any]:
        return cache.lookup(self.store, keys)

    def claim(self, keys: Sequence[str], owner: str) -> set[str]:
        return self._claims.claim(keys, owner)

    def release(self, keys: Sequence[str], owner: str) -> None:
        self._claims.release(keys, owner)

    def example_candidates(self, *, cascade_id: str, cell_name: str, min_confidence: float, verified_only: bool) -> list[Example]:
        cur = self.store.cursor()
        try:
            return retrieval.fetch_candidates(
                cur, cascade_id=cascade_id, cell_name=cell_name, min_confidence=min_confidence, verified_only=verified_only
            )
        finally:
            cur.close()

    def select_examples(
        self,
        *,
        cascade_id: str,
        cell_name: str,
        strategy: str,
        limit: int,
        min_confidence: float,
        verified_only: bool,
        criterion: str | None,
        source: str,
        min_quality: float,
    ) -> Selection:
        cur = self.store.cursor()
        try:
            return retrieval.select_examples(
                cur,
                cascade_id=cascade_id,
                cell_name=cell_name,
                strategy=strategy,
                limit=limit,
                min_confidence=min_confidence,
                verified_only=verified_only,
                criterion=criterion,
                source=source,
                min_quality=min_quality,
            )
        finally:
            cur.close()

    def annotate(
        self,
        trace_ids: Sequence[str],
        *,
        trainable: bool = True,
        verified: bool = False,
        confidence: float | None = 1.0,
        notes: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> int:
        from training.annotations import annotate

        return annotate(self.store, trace_ids, trainable=trainable, verified=verified, confidence=confidence, notes=notes, tags=tags)

    def calibration(self, cascade_id: str, criterion: str | None) -> float | None:
        cur = self.store.cursor()
        try:
            row = cur.execute(schema.CALIBRATION_LOOKUP, [cascade_id, criterion]).fetchone()
        finally:
            cur.close()
        return float(row[0]) if row else None

    def save_calibration(self, rows: Sequence[Row]) -> None:
        def write(cur: Any) -> None:
            for row in rows:
                cur.execute(schema.CALIBRATION_INSERT, list(row))

        self.store.write(write).result()

    def close(self) -> None:
        """Nothing of its own: the file belongs to the Store."""


def claim_unanswered(store: TrainingStore, keys: Sequence[str], owner: str) -> tuple[dict[str, Any], set[str]]:
    """Claim keys for `owner`; returns (answers cached meanwhile, keys now `owner`'s to judge).

    A claim freed between a cache lookup and this claim may have left its answer behind, so the keys
    claimed are looked up once more (and released when answered).
    """
    got = store.claim(keys, owner)
    if not got:
        return {}, set()
    late = store.cache_lookup(sorted(got))
    if late:
        store.release(sorted(late), owner)
    return late, got - set(late)


def wait_for_answers(
    store: TrainingStore, keys: Sequence[str], owner: str, *, stop: threading.Event, poll: float = 0.05, most: float = 0.5
) -> tuple[dict[str, Any], set[str]]:
    """Wait until every key is answered in the cache or its claim ends unanswered (then it is `owner`'s).

    Returns (answers found, keys now claimed by `owner`); returns early, with what it has, once `stop` is set.
    """
    answers: dict[str, Any] = {}
    mine: set[str] = set()
    left = list(keys)
    while left and not stop.is_set():
        found = store.cache_lookup(left)
        answers.update(found)
        left = [k for k in left if k not in found]
        if not left:
            break
        late, got = claim_unanswered(store, left, owner)
        answers.update(late)
        mine |= got
        left = [k for k in left if k not in got and k not in late]
        if left:
            stop.wait(poll)
            poll = min(most, poll * 2)
    return answers, mine
