"""Proxy mode's semantic path: the upstream PostgreSQL attached to DuckDB through postgres_scanner.

At start-up, before DuckDB is locked (`server.file_access`), the postgres_scanner
extension is loaded from the PyPI package ``duckdb-extension-postgres_scanner``
and the upstream is attached read-only under `CATALOG`. DuckDB refuses to attach
a PostgreSQL database once external access is off, but keeps using one attached
before: its connection pool reconnects as needed.

A proxy session's DuckDB cursor resolves unqualified table names in the
upstream's `public` schema, so a semantic statement reads PostgreSQL's tables
with filters and projections pushed into the scan, and is judged by the same
executor as on a plain meansql server. After `public` it looks in meansql's
own store (`store_schema`): the upstream's `meansql` schema when the store is
the upstream, as PostgreSQL's search_path does after `meansql db init`, or the
DuckDB file; so `unified_logs` and the training tables read as in plain SQL.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import duckdb

from server.errors import InsufficientPrivilege
from server.pgwire import upstream
from server.statements import Statement, split_tokens
from training import pg_schema
from training.store import extension_file as store_extension_file

log = logging.getLogger(__name__)

CATALOG = "meansql_upstream"
SCHEMA = "public"
# The scanner's own functions reach any PostgreSQL by connection string (and libpq reads files named in it), run
# statements or change its pool: the server's to use, not its clients'.
FUNCTIONS = frozenset(
    {
        "postgres_scan",
        "postgres_scan_pushdown",
        "postgres_query",
        "postgres_execute",
        "postgres_attach",
        "postgres_configure_pool",
        "pg_clear_cache",
    }
)


def extension_file() -> Path | None:
    """The postgres_scanner extension file of the installed duckdb-extension-postgres_scanner package, if any."""
    return store_extension_file("postgres_scanner")


def attach(con: duckdb.DuckDBPyConnection, url: str) -> None:
    """Load postgres_scanner and attach the upstream read-only; raises RuntimeError with a password-free reason."""
    path = extension_file()
    if path is None:
        raise RuntimeError(
            f"the duckdb-extension-postgres_scanner package is not installed "
            f"(pip install duckdb-extension-postgres_scanner=={duckdb.__version__})"
        )
    target = upstream.Target.parse(url)
    try:
        con.execute(f"INSTALL '{path}'")
        con.execute("LOAD postgres_scanner")
        # The URL is the server's own setting, checked by Target.parse; ATTACH takes no parameters.
        con.execute(f"ATTACH '{url.replace(chr(39), chr(39) * 2)}' AS {CATALOG} (TYPE postgres, READ_ONLY)")
    except duckdb.Error as exc:
        message = str(exc).replace(url, target.describe())
        if target.password:
            message = message.replace(target.password, "********")
        raise RuntimeError(message) from None


# The scanner's cache is shared by every cursor: a USE on one cursor while another clears it finds no schema.
_CACHE_LOCK = threading.Lock()


def store_schema(upstream_url: str, store_url: str | None, duckdb_catalog: str) -> str | None:
    """Where meansql's own tables are for a semantic statement, as a DuckDB search_path entry: the upstream's
    `meansql` schema when the store is the upstream database, the DuckDB file's `main` when the store is the
    file (`store_url` None); None for a store in another PostgreSQL database, which is not attached."""
    if store_url is None:
        return f"{_quote(duckdb_catalog)}.main"
    here, store = upstream.Target.parse(upstream_url), upstream.Target.parse(store_url)
    if (here.host, here.port, here.database) == (store.host, store.port, store.database):
        return f"{CATALOG}.{pg_schema.SCHEMA}"
    return None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def prepare_cursor(cur: duckdb.DuckDBPyConnection, store: str | None = None) -> None:
    """Unqualified names on this cursor are the upstream's tables, then those of meansql's store (if given)."""
    with _CACHE_LOCK:
        cur.execute(f"USE {CATALOG}.{SCHEMA}")
        if store is not None:
            path = f"{CATALOG}.{SCHEMA},{store}"
            cur.execute(f"SET search_path = '{path.replace(chr(39), chr(39) * 2)}'")


def refresh(cur: duckdb.DuckDBPyConnection) -> None:
    """Forget cached upstream table definitions, so a column added through the proxy a moment ago is seen."""
    with _CACHE_LOCK:
        cur.execute("CALL pg_clear_cache()")


def check(stmt: Statement) -> None:
    """Raise 42501 for a statement that calls one of the scanner's own functions."""
    for tok in split_tokens(stmt.text):
        name = tok.text.strip('"').lower()
        if name in FUNCTIONS:
            raise InsufficientPrivilege(f"permission denied for function {name}", hint="semantic statements read the upstream's tables by name")
