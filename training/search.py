"""Full-text search over curated examples: BM25 through DuckDB's fts extension (PostgreSQL's ts_rank on its store).

The extension comes from the PyPI package ``duckdb-extension-fts`` and is loaded
from its file when that package is installed; without it, search falls back to
ILIKE on every word (same rows matched, no BM25 ranking) and says so in the log.

DuckDB's fts index is a snapshot: it is built once, and rows created or changed
after the snapshot are matched with ILIKE until the next rebuild, which runs in
the background once enough rows are stale. Either way a row matches when it
holds every word of the query.

Scores are the extension's BM25 (the formula of its ``match_bm25`` macro:
k 1.2, b 0.75, porter stems, conjunctive), computed from the index tables for
the documents that hold the query's terms only. The macro itself is a
correlated subquery per row, so it scores every example of the table; after a
build the postings (the index's ``terms`` table) are sorted by term, so the
rows of a term are a few row groups that DuckDB's zonemaps find.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from pathlib import Path
from typing import Any

import duckdb

from training.store import Cursor, Store
from training.store import extension_file as store_extension_file

log = logging.getLogger(__name__)

FIELDS = ("input_text", "output_text", "final_answer")
INDEX_SCHEMA = "fts_main_training_examples"
REBUILD_AFTER = 10_000  # stale rows that trigger a background rebuild
_WORD = re.compile(r"\w+", re.UNICODE)


def extension_file() -> Path | None:
    """The fts extension file of the installed duckdb-extension-fts package, if any."""
    return store_extension_file("fts")


def available(store: Store) -> bool:
    """Load the fts extension once per store; False when it is not installed."""
    with store.fts_lock:
        if store.fts_extension is None:
            path = extension_file()
            if path is None:
                log.warning("full-text search uses ILIKE: the duckdb-extension-fts package is not installed "
                            "(pip install duckdb-extension-fts==%s for BM25 ranking)", duckdb.__version__)
                store.fts_extension = False
            else:
                try:
                    store.database.execute(f"LOAD '{path}'")
                    store.fts_extension = True
                except duckdb.Error as exc:
                    log.warning("full-text search uses ILIKE: cannot load %s: %s", path, exc)
                    store.fts_extension = False
        return bool(store.fts_extension)


def words(q: str) -> list[str]:
    return _WORD.findall(q.lower())


def build_index(store: Store) -> None:
    """(Re)build the BM25 index on the writer thread, its postings sorted by term."""
    started = dt.datetime.now()

    def build(cur: Cursor) -> None:
        fields = ", ".join(f"'{f}'" for f in FIELDS)
        cur.execute(f"PRAGMA create_fts_index('training_examples', 'id', {fields}, overwrite=1)")
        cur.execute(f"CREATE OR REPLACE TABLE {INDEX_SCHEMA}.terms AS "
                    f"SELECT * FROM {INDEX_SCHEMA}.terms ORDER BY termid, docid")

    store.write(build).result()
    store.fts_built_at = started
    log.info("full-text index of training_examples built in %.1f s", (dt.datetime.now() - started).total_seconds())


def _has_index(cur: Cursor) -> bool:
    row = cur.execute("SELECT count(*) FROM duckdb_schemas() WHERE schema_name = ?", [INDEX_SCHEMA]).fetchone()
    return bool(row and row[0])


def prepare(store: Store, cur: Cursor) -> bool:
    """Make sure a BM25 index exists (built now if missing); False when only ILIKE is possible."""
    if not available(store):
        return False
    if store.fts_built_at is None:
        if not _has_index(cur):
            build_index(store)
            return True
        # An index from an earlier run: its age is unknown, so rebuild it in the background.
        store.fts_built_at = dt.datetime.min
        _rebuild_later(store)
        return True
    stale = cur.execute("SELECT count(*) FROM training_examples WHERE updated_at > ?", [store.fts_built_at]).fetchone()
    if stale and stale[0] > REBUILD_AFTER:
        _rebuild_later(store)
    return True


def _rebuild_later(store: Store) -> None:
    if getattr(store, "_fts_rebuilding", False):
        return
    store._fts_rebuilding = True  # type: ignore[attr-defined]

    def run() -> None:
        try:
            build_index(store)
        except Exception as exc:
            log.warning("full-text index rebuild failed: %s", exc)
        finally:
            store._fts_rebuilding = False  # type: ignore[attr-defined]

    threading.Thread(target=run, name="meansql-fts", daemon=True).start()


def _ilike(terms: list[str], params: list[Any]) -> str:
    parts = []
    for term in terms:
        parts.append("(" + " OR ".join(f"{f} ILIKE ?" for f in FIELDS) + ")")
        params.extend([f"%{term}%"] * len(FIELDS))
    return " AND ".join(parts) if parts else "true"


# BM25 of the documents that hold every term of the query (one parameter: the query text).
_SCORES = f"""
WITH q AS (SELECT DISTINCT stem(unnest({INDEX_SCHEMA}.tokenize(?)), 'porter') AS t),
qt AS (SELECT d.termid, d.df FROM {INDEX_SCHEMA}.dict d JOIN q ON d.term = q.t),
hits AS (SELECT termid, docid, count(*) AS tf FROM {INDEX_SCHEMA}.terms
         WHERE termid IN (SELECT termid FROM qt) GROUP BY termid, docid),
cdocs AS (SELECT docid FROM hits GROUP BY docid HAVING count(*) = (SELECT count(*) FROM q))
SELECT docs.name AS id,
       sum(log((st.num_docs - qt.df + 0.5) / (qt.df + 0.5) + 1)
           * (hits.tf * (1.2 + 1) / (hits.tf + 1.2 * (1 - 0.75 + 0.75 * (docs.len / st.avgdl))))) AS score
FROM hits JOIN cdocs USING (docid) JOIN qt USING (termid) JOIN {INDEX_SCHEMA}.docs docs USING (docid),
     {INDEX_SCHEMA}.stats st
GROUP BY docs.name
"""


def relation(store: Store, cur: Cursor, q: str) -> tuple[str, list[Any], str, list[Any]]:
    """(FROM relation, its params, WHERE condition, its params) for a search; the relation has a _score column."""
    terms = words(q)
    if not terms:
        return "(SELECT *, NULL::DOUBLE AS _score FROM training_examples)", [], "true", []
    from training.pgattach import AttachedStore

    if isinstance(store, AttachedStore):
        return store.search(terms), [], "true", []  # PostgreSQL's own full text: ts_rank over a GIN index
    if not prepare(store, cur):
        params: list[Any] = []
        return "(SELECT *, NULL::DOUBLE AS _score FROM training_examples)", [], _ilike(terms, params), params
    text = " ".join(terms)
    rel = (f"(SELECT e.*, s.score AS _score FROM training_examples e "
           f"LEFT JOIN ({_SCORES}) s ON e.id = s.id)")
    built = store.fts_built_at
    fresh: list[Any] = []
    condition = f"((_score IS NOT NULL AND updated_at <= ?) OR (updated_at > ? AND {_ilike(terms, fresh)}))"
    return rel, [text], condition, [built, built, *fresh]
