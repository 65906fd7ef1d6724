"""Nearest-neighbour search over vectors: exact below a size, an HNSW index (DuckDB's vss extension) above it.

The extension comes from the PyPI package ``duckdb-extension-vss`` and is
loaded from its file, as full-text search loads fts. Without it every search
stays exact and the log says so once.

Where the index lives, and why: an HNSW index in the database file needs
``SET hnsw_enable_experimental_persistence = true``, and vss documents that
its indexes are not recovered from the write-ahead log; duckdb-vss#81 reports
checkpoint crashes ("Duplicate keys not allowed"), a start-up that hangs on
the checkpoint after the WAL is moved aside, and a file that no longer opens
("Failed to deserialize") after a crash. Our promise is that a kill -9 loses
no acknowledged row and every restart opens the file, so the index never
touches it: it lives in an in-memory database attached as ``meansql_vectors``,
is built on the first search of a set of rows at or above the threshold, is
brought up to date when those rows change (the caller's fingerprint): rows
gone or changed are deleted from it and new ones inserted, in place, until
they reach ``REBUILD_SHARE`` of its rows, when a new index is built instead;
and it is simply gone after a restart, to be built again on first use.

No query waits for a build (minutes for 100,000 vectors on a busy machine):
one background thread builds on its own cursor, and until the index of the
current rows is ready every search is exact. Closing the store interrupts a
running build and drops queued ones.

The query is ``ORDER BY array_cosine_distance(vec, <vector>::FLOAT[n]) LIMIT k``
on the index table, the form the vss optimizer turns into ``HNSW_INDEX_SCAN``.
The vector is written into the statement as a literal of the floats we
computed: with a prepared parameter (``?::FLOAT[n]``) the plan is a full scan
and sort, not the index (checked in tests/training/test_vectors.py); no user
text is ever pasted into it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from training.embeddings import cosine
from training.store import extension_file as store_extension_file

if TYPE_CHECKING:
    from training.store import Store

log = logging.getLogger(__name__)

SCHEMA = "meansql_vectors"
# Rows from which a search goes through an HNSW index; 0: never. Off by default: on bench/vectors.py's synthetic data
# the index reached recall@10 >= 0.95 nowhere faster than numpy's exact product up to 200,000 vectors, nor on real
# MiniLM vectors of 3,970 texts (recall 1.0, 195 ms p50 against 61 ms; bench/README.md).
DEFAULT_THRESHOLD = 0
# Index options (vss defaults: ef_construction 128, M 16, ef_search 64, which gave recall@10 0.72 at 20,000 vectors).
# ef_search is an index option rather than the hnsw_ef_search setting, which the locked configuration refuses.
# Recall@10 with these: 1.00 at 20,000 vectors, 0.99 at 100,000, 0.85 at 200,000 (bench/README.md).
EF_CONSTRUCTION = 128
M = 32
EF_SEARCH = 1024
BUILD_CHUNK = 2_000  # rows added to an index per statement
# Changed rows are deleted from and inserted into an index in place; once its deleted rows (which HNSW keeps in its
# graph) and those to insert reach this share of its rows, the index is built again instead.
REBUILD_SHARE = 0.5
MEMORY_VECTORS = 200_000  # vectors kept in memory for exact searches (384 floats: ~300 MB at most)
# float32 products of unit vectors of up to a few thousand floats err by well under this; a vector this close
# to the k-th best is scored again in float64 before the k are chosen.
ROUNDING = 1e-4

Vectors = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]


def extension_file() -> Path | None:
    """The vss extension file of the installed duckdb-extension-vss package, if any."""
    return store_extension_file("vss")


def vector_literal(vector: Vectors) -> str:
    """A FLOAT[n] constant of a vector we computed: one string cast, which DuckDB folds before the vss optimizer
    looks (a list of 384 numeric literals costs the binder ~20 ms; the string, well under 1 ms).
    9 significant digits give back the same float32."""
    values = ",".join(f"{float(x):.9g}" for x in np.asarray(vector, dtype=np.float32))
    return f"'[{values}]'::FLOAT[{len(vector)}]"


def search_sql(table: str, vector: Vectors, k: int) -> str:
    """Top k rows of an index table by cosine, best first: (id, score) with score the cosine similarity."""
    lit = vector_literal(vector)
    # The distance is projected as is and ordered on: the vss optimizer (1.5.5) does not use the index when the
    # projection computes something else from it (1 - distance), so the score is computed one level up.
    return (f"SELECT id, 1 - distance AS score FROM (SELECT id, array_cosine_distance(vec, {lit}) AS distance "
            f"FROM {table} ORDER BY distance LIMIT {int(k)}) ORDER BY distance")


class VectorIndexes:
    """HNSW indexes of sets of vectors, each under a key, in the in-memory database ``meansql_vectors``.

    Indexes are built by one background thread on its own cursor: ``ensure`` never waits for a build. Until
    the index of a key's current rows is ready (first build, or an update or rebuild after the rows changed) it answers
    None and the caller searches exactly.
    """

    def __init__(self, store: Store, threshold: int = DEFAULT_THRESHOLD, *, ef_construction: int = EF_CONSTRUCTION,
                 m: int = M, ef_search: int = EF_SEARCH) -> None:
        self.store = store
        self.threshold = threshold  # 0: never index
        self.options = f"metric = 'cosine', ef_construction = {int(ef_construction)}, M = {int(m)}, ef_search = {int(ef_search)}"
        self._lock = threading.Condition()
        self._loaded: bool | None = None
        self._ready: dict[str, tuple[str, str]] = {}  # key -> (fingerprint, table) of built indexes
        self._retired: dict[str, str] = {}  # key -> the table its last rebuild replaced, dropped at the next one
        self._pending: dict[str, tuple[str, Callable[[], tuple[Ids, Vectors]]]] = {}  # key -> latest rows wanted
        self._building: tuple[str, str] | None = None
        self._failed: dict[str, str] = {}  # key -> fingerprint whose build failed (not retried)
        self._contents: dict[str, tuple[Ids, Vectors, int]] = {}  # key -> rows of its index, and how many it deleted
        self._builder: threading.Thread | None = None
        self._builder_cursor: Any = None
        self._closed = False
        self._generation = 0
        self.builds = 0
        self.updates = 0
        store.closing.append(self.close)

    def available(self) -> bool:
        """Load vss and attach the in-memory database once; False when searches must stay exact.

        Called at start-up before DuckDB is locked (server/file_access.py): afterwards LOAD is refused.
        """
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def _load(self) -> bool:
        path = extension_file()
        if path is None:
            log.warning("vector search stays exact: the duckdb-extension-vss package is not installed "
                        "(pip install duckdb-extension-vss==%s for HNSW indexes)", duckdb.__version__)
            return False
        try:
            self.store.database.execute(f"LOAD '{path}'")
            self.store.database.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {SCHEMA}")
        except duckdb.Error as exc:
            log.warning("vector search stays exact: cannot load %s: %s", path, exc)
            return False
        return True

    def wanted(self, size: int) -> bool:
        return bool(self.threshold) and size >= self.threshold

    def ready(self, key: str, fingerprint: str) -> str | None:
        """The index table of ``key`` if one of these rows is ready (nothing is queued)."""
        with self._lock:
            ready = self._ready.get(key)
            return ready[1] if ready is not None and ready[0] == fingerprint else None

    def ensure(self, key: str, fingerprint: str, size: int, rows: Callable[[], tuple[Ids, Vectors]]) -> str | None:
        """The index table of ``key`` if one of these rows (``fingerprint``) is ready; else None, search exactly.

        A missing or stale index is queued for the builder thread, which calls ``rows()`` (``size`` vectors)
        itself; below the threshold nothing is built.
        """
        if not self.wanted(size) or not self.available():
            return None
        with self._lock:
            ready = self._ready.get(key)
            if ready is not None and ready[0] == fingerprint:
                return ready[1]
            if self._closed or self._building == (key, fingerprint) or self._failed.get(key) == fingerprint:
                return None
            if key not in self._pending or self._pending[key][0] != fingerprint:
                self._pending[key] = (fingerprint, rows)
                self._lock.notify_all()
            if self._builder is None:
                self._builder = threading.Thread(target=self._build_loop, name="meansql-vector-index", daemon=True)
                self._builder.start()
            return None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no build is queued or running; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._closed or (not self._pending and self._building is None), timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the builder: queued builds are dropped, a running one is interrupted; waits for the thread."""
        with self._lock:
            self._closed = True
            self._pending.clear()
            self._lock.notify_all()
            builder, cursor = self._builder, self._builder_cursor
        if builder is None:
            return
        if cursor is not None:
            cursor.interrupt()
        builder.join(timeout)
        if builder.is_alive():
            log.warning("the vector index builder did not stop within %.0f s", timeout)

    def _build_loop(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._closed or bool(self._pending))
                if self._closed:
                    self._lock.notify_all()
                    return
                key = next(iter(self._pending))
                fingerprint, rows = self._pending.pop(key)
                self._building = (key, fingerprint)
            table = None
            deleted = 0
            try:
                ids, vectors = rows()
                if len(ids):
                    changed = self._update(key, ids, vectors)
                    if changed is not None:
                        table, deleted = changed
                    else:
                        table = self._build(key, ids, vectors)
            except Exception as exc:  # the search stays exact; the reason is in the log
                with self._lock:
                    closed = self._closed
                    if not closed:
                        self._failed[key] = fingerprint
                if closed:
                    log.info("vector index build stopped: the server is shutting down")
                else:
                    log.warning("vector search on %s stays exact: the HNSW index was not built: %s", key, exc)
            with self._lock:
                self._building = None
                if table is not None and not self._closed:
                    self._contents[key] = (ids, vectors, deleted)
                    self._swap(key, fingerprint, table)
                self._lock.notify_all()

    def _swap(self, key: str, fingerprint: str, table: str) -> None:
        """Make ``table`` the index of ``key``. The table it replaces stays until the next rebuild, as a query
        planned on it a moment ago may still be about to read it."""
        old = self._ready.get(key)
        self._ready[key] = (fingerprint, table)
        self._failed.pop(key, None)
        if old is not None and old[1] != table:
            self._retire(key, old[1])

    def _retire(self, key: str, table: str) -> None:
        """Keep ``table`` until the next one of ``key`` is retired, then drop it."""
        gone = self._retired.pop(key, None)
        self._retired[key] = table
        if gone is not None and gone != table:
            cur = self.store.cursor()
            try:
                cur.execute(f"DROP TABLE IF EXISTS {gone}")
            except duckdb.Error as exc:
                log.warning("cannot drop the old vector index %s: %s", gone, exc)
            finally:
                cur.close()

    def _build(self, key: str, ids: Ids, vectors: Vectors) -> str:
        started = time.monotonic()
        self._generation += 1
        name = f"v_{hashlib.sha256(key.encode()).hexdigest()[:16]}_{self._generation}"
        table = f"{SCHEMA}.{name}"
        dim = int(vectors.shape[1])
        cur = self._cursor()
        try:
            # Rows go into the indexed table a chunk at a time: DuckDB does not interrupt a CREATE INDEX, and
            # closing the store waits for at most one chunk.
            cur.execute(f"CREATE OR REPLACE TABLE {table} (id BIGINT, vec FLOAT[{dim}])")
            try:
                cur.execute(f"CREATE INDEX {name}_hnsw ON {table} USING HNSW (vec) WITH ({self.options})")
                self._insert(cur, table, ids, vectors)
            except BaseException:
                try:
                    cur.execute(f"DROP TABLE IF EXISTS {table}")
                except duckdb.Error as exc:
                    log.debug("cannot drop %s after a failed build: %s", table, exc)
                raise
        finally:
            with self._lock:
                self._builder_cursor = None
            cur.close()
        self.builds += 1
        log.info("HNSW index of %d vectors built in %.1f s", len(ids), time.monotonic() - started)
        return table

    def _cursor(self) -> Any:
        """The builder's cursor, which closing the store interrupts."""
        cur = self.store.cursor()
        with self._lock:
            if self._closed:
                cur.close()
                raise BuildStopped("the store is closing")
            self._builder_cursor = cur
        return cur

    def _insert(self, cur: Any, table: str, ids: Ids, vectors: Vectors) -> None:
        """Add rows to an index table, a chunk at a time (closing the store waits for one chunk at most)."""
        if not len(ids):
            return
        dim = int(vectors.shape[1])
        data = pa.table({
            "id": pa.array(np.asarray(ids, dtype=np.int64)),
            "vec": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(vectors, dtype=np.float32).ravel()), dim),
        })
        view = f"_meansql_index_rows_{threading.get_ident()}"
        for start in range(0, len(ids), BUILD_CHUNK):
            if self._closed:
                raise BuildStopped("the store is closing")
            cur.register(view, data.slice(start, BUILD_CHUNK))
            try:
                cur.execute(f"INSERT INTO {table} SELECT id, vec::FLOAT[{dim}] FROM {view}")
            finally:
                cur.unregister(view)

    def _update(self, key: str, ids: Ids, vectors: Vectors) -> tuple[str, int] | None:
        """Bring the ready index of ``key`` to these rows in place: rows gone or changed are deleted from it,
        new or changed ones inserted. None (build a new index) when there is none, or when so much changed
        that a new one is better: HNSW keeps deleted rows in its graph, so once they and the rows to insert
        reach ``REBUILD_SHARE`` of the rows, the index is built again. Answers (table, rows deleted since built).
        """
        with self._lock:
            ready, contents = self._ready.get(key), self._contents.get(key)
        if ready is None or contents is None:
            return None
        old_ids, old_vectors, deleted = contents
        if old_vectors.shape[1] != vectors.shape[1]:
            return None
        _, old_at, new_at = np.intersect1d(old_ids, ids, assume_unique=True, return_indices=True)
        same = np.all(old_vectors[old_at] == vectors[new_at], axis=1) if len(old_at) else np.zeros(0, dtype=bool)
        kept_old = np.zeros(len(old_ids), dtype=bool)
        kept_old[old_at[same]] = True
        kept_new = np.zeros(len(ids), dtype=bool)
        kept_new[new_at[same]] = True
        gone, added = old_ids[~kept_old], np.flatnonzero(~kept_new)
        if deleted + len(gone) + len(added) > REBUILD_SHARE * len(ids):
            return None
        table = ready[1]
        started = time.monotonic()
        with self._lock:
            if self._ready.get(key) != ready:
                return None
            del self._ready[key]  # searches are exact while its rows change
        cur = self._cursor()
        try:
            if len(gone):
                view = f"_meansql_index_gone_{threading.get_ident()}"
                cur.register(view, pa.table({"id": pa.array(gone, pa.int64())}))
                try:
                    cur.execute(f"DELETE FROM {table} WHERE id IN (SELECT id FROM {view})")
                finally:
                    cur.unregister(view)
            self._insert(cur, table, ids[added], vectors[added])
        except BaseException:
            with self._lock:
                self._contents.pop(key, None)
                self._retire(key, table)  # a query planned on it a moment ago may still read it
            raise
        finally:
            with self._lock:
                self._builder_cursor = None
            cur.close()
        self.updates += 1
        log.info("HNSW index of %d vectors updated in %.1f s: %d added, %d deleted", len(ids),
                 time.monotonic() - started, len(added), len(gone))
        return table, deleted + len(gone)

    def search(self, table: str, vector: Vectors, k: int) -> list[tuple[int, float]]:
        """(id, cosine similarity) of the k nearest vectors, best first."""
        cur = self.store.cursor()
        try:
            rows = cur.execute(search_sql(table, vector, k)).fetchall()
        finally:
            cur.close()
        return [(int(i), float(s)) for i, s in rows]

    def explain(self, table: str, vector: Vectors, k: int) -> str:
        """DuckDB's plan of a search (HNSW_INDEX_SCAN when the index answers it)."""
        cur = self.store.cursor()
        try:
            return "\n".join(str(r[1]) for r in cur.execute("EXPLAIN " + search_sql(table, vector, k)).fetchall())
        finally:
            cur.close()


def top_k(ids: Ids, vectors: Vectors, query: Vectors, k: int) -> list[tuple[int, float]]:
    """The exact k nearest of normalised ``vectors`` to ``query``: (id, cosine similarity), best first, ties by id.

    numpy's float32 product ranks every vector; the few that can be among the k best within its rounding
    error are scored again in float64 (``embeddings.cosine``, as SIMILAR_TO scores them) and ranked on that.
    """
    n = len(ids)
    k = min(int(k), n)
    if k <= 0:
        return []
    query = np.asarray(query, dtype=np.float32)
    rough = vectors @ query
    if k < n:
        kth = -np.partition(-rough, k - 1)[k - 1]
        candidates = np.flatnonzero(rough >= kth - ROUNDING)
    else:
        candidates = np.arange(n)
    exact = cosine(vectors[candidates], np.tile(query, (len(candidates), 1)))
    best = np.lexsort((ids[candidates], -exact))[:k]
    return [(int(ids[candidates[i]]), float(exact[i])) for i in best]


class VectorSets:
    """Vectors of sets of rows searched lately, in memory under a key with the fingerprint of their rows.

    An exact search of rows that have not changed reads no vector again; the sets searched least recently
    are dropped beyond ``limit`` vectors in all.
    """

    def __init__(self, limit: int = MEMORY_VECTORS) -> None:
        self.limit = limit
        self._sets: OrderedDict[str, tuple[str, Ids, Vectors]] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, key: str, fingerprint: str, load: Callable[[], tuple[Ids, Vectors]]) -> tuple[Ids, Vectors]:
        """The ids and vectors of ``key``'s rows as ``fingerprint`` names them; ``load()`` when not kept."""
        with self._lock:
            kept = self._sets.get(key)
            if kept is not None and kept[0] == fingerprint:
                self._sets.move_to_end(key)
                return kept[1], kept[2]
        ids, vectors = load()
        with self._lock:
            self.loads += 1
            self._sets[key] = (fingerprint, ids, vectors)
            self._sets.move_to_end(key)
            total = sum(len(v[1]) for v in self._sets.values())
            while total > self.limit and len(self._sets) > 1:
                _, (_, dropped, _) = self._sets.popitem(last=False)
                total -= len(dropped)
        return ids, vectors


class BuildStopped(Exception):
    """The store closed before a build started."""


def fingerprint(values: Any) -> str:
    """A short digest of a sequence of values (which rows an index holds)."""
    h = hashlib.sha256()
    for v in values:
        h.update(str(v).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]
