"""HNSW search through DuckDB's vss extension: used above the threshold, same neighbours as exact search."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from training.store import Store
from training.vectors import VectorIndexes, extension_file, fingerprint


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Normalised vectors around 20 centres, as embeddings of texts on a few topics are."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    v = centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, dim))
    return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True), dtype=np.float32)


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "vectors.duckdb")
    s.init()
    yield s
    s.close()


def test_the_index_answers_above_the_threshold_with_the_exact_neighbours(store: Store) -> None:
    if extension_file() is None:
        pytest.skip("duckdb-extension-vss is not installed")
    vectors = clustered(600, 32)
    ids = np.arange(1000, 1600, dtype=np.int64)
    indexes = VectorIndexes(store, threshold=500)
    # below the threshold: exact search, nothing built
    assert indexes.ensure("small", "a", 499, lambda: (ids[:499], vectors[:499])) is None
    assert indexes.wait(5) and indexes.builds == 0
    # the first search starts the build and is answered exactly; the next ones, once it is built, by the index
    assert indexes.ensure("docs", fingerprint(ids), len(ids), lambda: (ids, vectors)) is None
    assert indexes.wait(120)
    table = indexes.ensure("docs", fingerprint(ids), len(ids), lambda: (ids, vectors))
    assert table is not None and indexes.builds == 1
    overlap = []
    for q in clustered(20, 32, seed=1):
        exact = ids[np.argsort(-(vectors @ q))[:10]]
        found = indexes.search(table, q, 10)
        assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
        top = dict(found)
        overlap.append(len(set(exact.tolist()) & set(top)) / 10)
        for i, s in found:  # scores are the cosine similarities
            assert abs(s - float(vectors[i - 1000] @ q)) < 1e-4
    assert np.mean(overlap) >= 0.9, overlap
    assert "HNSW_INDEX_SCAN" in indexes.explain(table, vectors[0], 10)
    # same rows: the index is reused; other rows: exact until the index has them (a few: updated in place; many:
    # a new index), then the index
    assert indexes.ensure("docs", fingerprint(ids), len(ids), lambda: (ids, vectors)) == table and indexes.builds == 1
    assert indexes.ensure("docs", fingerprint(ids[:550]), 550, lambda: (ids[:550], vectors[:550])) is None
    assert indexes.wait(120) and (indexes.builds, indexes.updates) == (1, 1)
    assert indexes.ensure("docs", fingerprint(ids[:550]), 550, lambda: (ids[:550], vectors[:550])) == table
    other = clustered(600, 32, seed=5)  # every vector changed
    assert indexes.ensure("docs", "other", 600, lambda: (ids, other)) is None
    assert indexes.wait(120) and (indexes.builds, indexes.updates) == (2, 1)
    rebuilt = indexes.ensure("docs", "other", 600, lambda: (ids, other))
    assert rebuilt is not None and rebuilt != table
    assert indexes.search(rebuilt, other[10], 1)[0][0] == 1010
    assert indexes.search(table, vectors[0], 1)[0][0] == 1000  # the replaced index stays readable until the next rebuild


def test_a_search_during_the_build_is_exact_and_does_not_wait(store: Store) -> None:
    if extension_file() is None:
        pytest.skip("duckdb-extension-vss is not installed")
    vectors = clustered(300, 16)
    ids = np.arange(300, dtype=np.int64)
    indexes = VectorIndexes(store, threshold=100)
    reading, release = threading.Event(), threading.Event()

    def rows() -> tuple[np.ndarray, np.ndarray]:
        reading.set()
        assert release.wait(60)  # the builder is busy with this set until the test lets it go
        return ids, vectors

    assert indexes.ensure("docs", "f", 300, rows) is None
    assert reading.wait(30)
    started = time.monotonic()
    for _ in range(5):  # while the build runs: no wait, no second build queued
        assert indexes.ensure("docs", "f", 300, rows) is None
    assert time.monotonic() - started < 1.0
    assert not indexes.wait(0.2) and indexes.builds == 0
    release.set()
    assert indexes.wait(60) and indexes.builds == 1
    table = indexes.ensure("docs", "f", 300, rows)
    assert table is not None and "HNSW_INDEX_SCAN" in indexes.explain(table, vectors[3], 5)
    assert indexes.search(table, vectors[3], 1)[0][0] == 3


def test_closing_the_store_stops_a_running_build(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    if extension_file() is None:
        pytest.skip("duckdb-extension-vss is not installed")
    indexes = VectorIndexes(store, threshold=100)
    reading = threading.Event()

    def rows() -> tuple[np.ndarray, np.ndarray]:
        reading.set()
        return np.arange(20_000, dtype=np.int64), clustered(20_000, 64)

    assert indexes.ensure("big", "f", 20_000, rows) is None
    assert indexes.ensure("other", "g", 300, lambda: (np.arange(300, dtype=np.int64), clustered(300, 16))) is None
    assert reading.wait(30)
    time.sleep(0.5)  # into CREATE INDEX
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="training.vectors"):
        store.close()
    assert time.monotonic() - started < 15
    assert indexes._builder is not None and not indexes._builder.is_alive()
    assert indexes.builds == 0 and indexes.ensure("big", "f", 20_000, rows) is None
    assert "vector index build stopped" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text


def test_the_index_never_touches_the_database_file(store: Store, tmp_path: Path) -> None:
    if extension_file() is None:
        pytest.skip("duckdb-extension-vss is not installed")
    vectors = clustered(120, 16)
    indexes = VectorIndexes(store, threshold=100)
    indexes.ensure("k", "f", 120, lambda: (np.arange(120, dtype=np.int64), vectors))
    assert indexes.wait(60) and indexes.ensure("k", "f", 120, lambda: (np.arange(120, dtype=np.int64), vectors)) is not None
    cur = store.cursor()
    try:
        indexes_in_file = cur.execute("SELECT count(*) FROM duckdb_indexes() WHERE database_name <> 'meansql_vectors'")
        assert indexes_in_file.fetchone() == (0,)
    finally:
        cur.close()
    store.close()
    again = Store(tmp_path / "vectors.duckdb")  # opens with no extension loaded: nothing of vss in the file
    try:
        cur = again.cursor()
        assert cur.execute("SELECT count(*) FROM duckdb_indexes()").fetchone() == (0,)
        cur.close()
    finally:
        again.close()


def test_changed_rows_go_into_the_index_in_place(store: Store) -> None:
    if extension_file() is None:
        pytest.skip("duckdb-extension-vss is not installed")
    vectors = clustered(700, 32)
    ids = np.arange(700, dtype=np.int64)
    indexes = VectorIndexes(store, threshold=100)

    def ready(i: np.ndarray, v: np.ndarray) -> str:
        indexes.ensure("docs", fingerprint(i), len(i), lambda: (i, v))
        assert indexes.wait(120)
        table = indexes.ensure("docs", fingerprint(i), len(i), lambda: (i, v))
        assert table is not None
        return table

    table = ready(ids[:600], vectors[:600])
    assert (indexes.builds, indexes.updates) == (1, 0)
    # 50 new rows, 10 deleted, 5 whose vector changed: the same index, updated
    changed = vectors[:650].copy()
    changed[20:25] = vectors[650:655]
    keep = np.r_[0:100, 110:650]
    now_ids, now_vectors = ids[keep], changed[keep]
    assert ready(now_ids, now_vectors) == table and (indexes.builds, indexes.updates) == (1, 1)
    cur = store.cursor()
    assert cur.execute(f"SELECT count(*), count(DISTINCT id) FROM {table}").fetchone() == (640, 640)
    cur.close()
    for q in (vectors[620], vectors[650], vectors[105], vectors[22]):
        exact = now_ids[np.argsort(-(now_vectors @ q))[:5]].tolist()
        found = [i for i, _ in indexes.search(table, q, 5)]
        assert found == exact, (found, exact)
    assert not {i for i, _ in indexes.search(table, vectors[105], 20)} & set(range(100, 110))  # deleted rows are gone
    # past REBUILD_SHARE of the rows changed (deleted ones counted), a new index is built instead
    assert ready(ids[300:], vectors[300:]) != table and (indexes.builds, indexes.updates) == (2, 1)
