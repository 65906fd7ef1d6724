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
rebuilt when those rows change (the caller's fingerprint), and is simply gone
after a restart, to be built again on first use.

The query is ``ORDER BY array_cosine_distance(vec, <vector>::FLOAT[n]) LIMIT k``
on the index table, the form the vss optimizer turns into ``HNSW_INDEX_SCAN``.
The vector is written into the statement as a literal of the floats we
computed: with a prepared parameter (``?::FLOAT[n]``) the plan is a full scan
and sort, not the index (checked in tests/training/test_vectors.py); no user
text is ever pasted into it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

if TYPE_CHECKING:
    from training.store import Store

log = logging.getLogger(__name__)

SCHEMA = "meansql_vectors"
DEFAULT_THRESHOLD = 10_000  # rows from which a search goes through an HNSW index

Vectors = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]


def extension_file() -> Path | None:
    """The vss extension file of the installed duckdb-extension-vss package, if any."""
    spec = importlib.util.find_spec("duckdb_extension_vss")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        found = sorted(Path(base).glob(f"extensions/v{duckdb.__version__}/vss.duckdb_extension"))
        if found:
            return found[0]
    return None


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
    """HNSW indexes of sets of vectors, each under a key, in the in-memory database ``meansql_vectors``."""

    def __init__(self, store: Store, threshold: int = DEFAULT_THRESHOLD) -> None:
        self.store = store
        self.threshold = threshold  # 0: never index
        self._lock = threading.Lock()
        self._loaded: bool | None = None
        self._built: dict[str, tuple[str, str]] = {}  # key -> (fingerprint, table)
        self.builds = 0

    def available(self) -> bool:
        """Load vss and attach the in-memory database once; False when searches must stay exact."""
        if self._loaded is None:
            path = extension_file()
            if path is None:
                log.warning("vector search stays exact: the duckdb-extension-vss package is not installed "
                            "(pip install duckdb-extension-vss==%s for HNSW indexes)", duckdb.__version__)
                self._loaded = False
                return False
            try:
                self.store.database.execute(f"LOAD '{path}'")
                self.store.database.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {SCHEMA}")
                self._loaded = True
            except duckdb.Error as exc:
                log.warning("vector search stays exact: cannot load %s: %s", path, exc)
                self._loaded = False
        return bool(self._loaded)

    def wanted(self, size: int) -> bool:
        return bool(self.threshold) and size >= self.threshold

    def ensure(self, key: str, fingerprint: str, size: int, rows: Callable[[], tuple[Ids, Vectors]]) -> str | None:
        """The index table of ``key``, built now if missing or stale; None when the search should be exact.

        ``size`` is how many vectors ``rows()`` would give; below the threshold nothing is loaded.
        """
        if not self.wanted(size):
            return None
        with self._lock:
            if not self.available():
                return None
            built = self._built.get(key)
            if built is not None and built[0] == fingerprint:
                return built[1]
            ids, vectors = rows()
            if len(ids) == 0:
                return None
            table = f"{SCHEMA}.v_{hashlib.sha256(key.encode()).hexdigest()[:16]}"
            self._build(table, ids, vectors)
            self._built[key] = (fingerprint, table)
            return table

    def _build(self, table: str, ids: Ids, vectors: Vectors) -> None:
        started = time.monotonic()
        dim = int(vectors.shape[1])
        data = pa.table({
            "id": pa.array(np.asarray(ids, dtype=np.int64)),
            "vec": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(vectors, dtype=np.float32).ravel()), dim),
        })
        cur = self.store.cursor()
        view = f"_meansql_index_rows_{threading.get_ident()}"
        try:
            cur.register(view, data)
            cur.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT id, vec::FLOAT[{dim}] AS vec FROM {view}")
            cur.execute(f"CREATE INDEX {table.split('.')[1]}_hnsw ON {table} USING HNSW (vec) WITH (metric = 'cosine')")
        finally:
            cur.unregister(view)
            cur.close()
        self.builds += 1
        log.info("HNSW index of %d vectors built in %.1f s", len(ids), time.monotonic() - started)

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


def fingerprint(values: Any) -> str:
    """A short digest of a sequence of values (which rows an index holds)."""
    h = hashlib.sha256()
    for v in values:
        h.update(str(v).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]
