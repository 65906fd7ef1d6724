"""The curated store's doors over the PostgreSQL store: its `meansql` schema attached read-write to DuckDB.

The HTTP API, the CLI's training commands and the event publisher run the
same code on both stores (examples.py, labels.py, export.py): here the Store's
cursors are those of an in-memory DuckDB that attaches the PostgreSQL store
through the postgres extension (PyPI ``duckdb-extension-postgres_scanner``,
as proxy mode's semantic path loads it) and resolves unqualified names in its
`meansql` schema. A DuckDB transaction that writes there is one PostgreSQL
transaction, so rows written through one meansql process are seen at once by
every other and by plain psql.

The database keeps the label side table and the event outbox itself, with
triggers (pg_schema migration 2), so a write from psql gets them too; the
Python side writes neither (``triggers``) and notes the fields an update named,
which the trigger puts in the event.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import duckdb
from psycopg import sql as pg_sql

from training import pg_schema, schema
from training.errors import StoreError
from training.store import Cursor, Store, extension_file

if TYPE_CHECKING:
    from training.pgstore import PostgresStore

log = logging.getLogger(__name__)

CATALOG = "meansql_store"
_PLACEHOLDER = re.compile(r"\?")


class AttachedStore(Store):
    """A Store whose tables are the PostgreSQL store's, written on one writer thread as the file's are."""

    triggers = True

    def __init__(self, pg: PostgresStore) -> None:
        super().__init__(":memory:")
        self.pg = pg
        self.path = pg.where
        try:
            self._attach(pg.url)
            self._use(self._writer_cursor)
        except BaseException:
            self.close()
            raise

    def _attach(self, url: str) -> None:
        path = extension_file("postgres_scanner")
        if path is None:
            raise StoreError(
                "the PostgreSQL store's training API needs the duckdb-extension-postgres_scanner package",
                hint=f"pip install duckdb-extension-postgres_scanner=={duckdb.__version__}",
            )
        try:
            self.database.execute(f"INSTALL '{path}'")
            self.database.execute("LOAD postgres_scanner")
            # The URL is the server's own setting; ATTACH takes no parameters.
            self.database.execute(f"ATTACH '{url.replace(chr(39), chr(39) * 2)}' AS {CATALOG} (TYPE postgres, SCHEMA '{pg_schema.SCHEMA}')")
        except duckdb.Error as exc:
            raise StoreError(f"cannot attach the store at {self.path}: {str(exc).replace(url, self.path)}") from None

    @staticmethod
    def _use(cur: Cursor) -> Cursor:
        cur.execute(f"USE {CATALOG}.{pg_schema.SCHEMA}")
        return cur

    def init(self) -> int:
        """Create or migrate the meansql schema (PostgresStore.init)."""
        return self.pg.init()

    def cursor(self) -> Cursor:
        return self._use(super().cursor())

    def note_updated(self, cur: Cursor, fields: Sequence[str]) -> None:
        """Tell the update trigger which fields this transaction's next update named (its event lists them)."""
        names = sorted(f for f in fields if f in schema.EXAMPLE_FIELDS)
        cur.execute(pg_schema.NOTE_UPDATED_FIELDS.format(catalog=CATALOG, fields=",".join(names)))

    def update(self, cur: Cursor, sql: str, params: Sequence[Any]) -> None:
        """The UPDATE runs in PostgreSQL itself, in cur's transaction: DuckDB's own UPDATE of an attached table
        sends json values as varchar, which PostgreSQL refuses. postgres_execute takes no parameters, so each `?`
        becomes the literal psycopg would send for it (as its client-side binding does)."""
        values = iter(params)
        text = _PLACEHOLDER.sub(lambda _: pg_sql.Literal(next(values)).as_string(None), sql)
        text = text.replace(" training_examples ", f" {pg_schema.SCHEMA}.training_examples ", 1)
        cur.execute(f"CALL postgres_execute('{CATALOG}', '{text.replace(chr(39), chr(39) * 2)}')")

    def search(self, words: Sequence[str]) -> str:
        """The relation of examples matching every word, ranked by PostgreSQL's ts_rank (a _score column)."""
        text = " ".join(w for w in words if w.isalnum() or w.replace("_", "").isalnum())
        return pg_schema.SEARCH.format(catalog=CATALOG, document=pg_schema.TEXT_DOCUMENT.replace("'", "''"), words=text)

    def annotate(self, trace_ids: Sequence[str], **marks: Any) -> int:
        """Annotations go through the PostgreSQL store (its view's trigger writes the outbox row)."""
        return self.pg.annotate(trace_ids, **marks)
