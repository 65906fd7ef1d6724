"""Server files are off limits to clients: DuckDB is locked once start-up is done.

PostgreSQL lets only superusers read or write files on the server. meansql's
clients are not the server's owner either, so once the server has done its own
start-up work (schema, catalog, extensions), DuckDB's external access is turned
off and its configuration locked; DuckDB itself then refuses read_csv('/etc/passwd'),
COPY t TO '/tmp/x', EXPORT DATABASE, LOAD and the SETs that would undo the lock.
The statements DuckDB would still run (ATTACH, DETACH, CREATE SECRET, COPY into
the server's own spool directory) are refused here, before DuckDB sees them.

The local CLI (`meansql sql query --db`) is run by the file's owner on their own
file and keeps full access: it never calls `lock`.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass

import duckdb

from server.errors import InsufficientPrivilege
from server.statements import Statement, split_tokens

# Changed by the server's own statements (the fts extension's create_fts_index sets it inside a
# transaction): allowed by DuckDB, refused to clients by `check`.
SERVER_CONFIGS = ("current_transaction_invalidation_policy",)
# DuckDB settings a client may still SET once the configuration is locked: per-session
# preferences that reach no file, no extension and no other session's resources.
ALLOWED_CONFIGS = ("TimeZone", "Calendar", "integer_division", "search_path", "schema", "default_null_order", "default_order", "null_order")

_HINT = "clients cannot read or write files on the meansql server"
_COPY_HINT = "Anyone can COPY to stdout or from stdin: COPY ... FROM STDIN, COPY (query) TO STDOUT, or psql's \\copy."


@dataclass
class Lock:
    """The state of one locked DuckDB database: the directory the server spools COPY FROM STDIN data to."""

    spool_dir: str

    def close(self) -> None:
        shutil.rmtree(self.spool_dir, ignore_errors=True)


def lock(con: duckdb.DuckDBPyConnection) -> Lock:
    """Turn off DuckDB's access to files, URLs and extensions, and lock its configuration.

    The database file, its WAL and its temp directory stay usable (DuckDB allows them itself); the
    spool directory is the one other place the server reads from (COPY FROM STDIN in CSV format).
    """
    spool = tempfile.mkdtemp(prefix="meansql-spool-")  # mode 0700: only the server's user sees it
    try:
        con.execute("SET allowed_directories = [?]", [spool.rstrip("/") + "/"])
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET enable_external_access = false")
        con.execute("SET allowed_configs = ?", [[*ALLOWED_CONFIGS, *SERVER_CONFIGS]])
        con.execute("SET lock_configuration = true")
    except BaseException:
        shutil.rmtree(spool, ignore_errors=True)
        raise
    return Lock(spool)


_SECRET = re.compile(r"^(?:CREATE(?: OR REPLACE)?|DROP)(?: PERSISTENT| TEMPORARY| TEMP)? SECRET\b")


def _words(stmt: Statement, n: int = 6) -> list[str]:
    return [t.text.upper() for t in split_tokens(stmt.text)[:n]]


# The first words of every statement `check` refuses; the rest need no tokenizing.
_CHECKED_VERBS = frozenset(
    {"SET", "RESET", "PRAGMA", "COPY", "ATTACH", "DETACH", "INSTALL", "LOAD", "FORCE", "UPDATE", "EXPORT", "IMPORT", "CREATE", "DROP"}
)


def check(stmt: Statement) -> None:
    """Raise 42501 for a statement that would touch the server's files or undo the lock."""
    if not stmt.words or stmt.words[0].upper() not in _CHECKED_VERBS:
        return
    words = _words(stmt)
    first = words[0] if words else ""
    if first in ("SET", "RESET", "PRAGMA") and any(w.lower() in SERVER_CONFIGS for w in words):
        name = next(w.lower() for w in words if w.lower() in SERVER_CONFIGS)
        raise InsufficientPrivilege(f'permission denied to set parameter "{name}"')
    if first == "COPY":
        raise _copy_refusal(stmt)
    if first in ("ATTACH", "DETACH"):
        raise InsufficientPrivilege(
            f"permission denied to {first}: {_HINT}, nor attach or detach databases", hint="create tables in the server's database instead"
        )
    if first in ("INSTALL", "LOAD") or words[:2] in (["FORCE", "INSTALL"], ["UPDATE", "EXTENSIONS"]):
        verb = " ".join(words[:2]) if first in ("FORCE", "UPDATE") else first
        raise InsufficientPrivilege(
            f"permission denied to {verb}: clients cannot install or load DuckDB extensions on the meansql server",
            hint="the server's operator loads extensions at start-up",
        )
    if first in ("EXPORT", "IMPORT") and words[1:2] == ["DATABASE"]:
        raise InsufficientPrivilege(f"permission denied to {first} DATABASE: {_HINT}", hint="read tables with COPY (query) TO STDOUT")
    if first in ("CREATE", "DROP") and _SECRET.match(" ".join(words)):
        raise InsufficientPrivilege(
            f"permission denied to {first} SECRET: clients cannot keep credentials for files or URLs on the meansql server"
        )


def _copy_refusal(stmt: Statement) -> InsufficientPrivilege:
    """PostgreSQL's refusal of COPY to or from a server file, for the direction the statement takes."""
    depth = 0
    direction = "to or from"
    for tok in split_tokens(stmt.text)[1:]:
        if tok.text == "(":
            depth += 1
        elif tok.text == ")":
            depth -= 1
        elif depth == 0 and tok.text.upper() in ("FROM", "TO"):
            direction = "from" if tok.text.upper() == "FROM" else "to"
            break
    return InsufficientPrivilege(f"permission denied to COPY {direction} a file: {_HINT}", hint=_COPY_HINT)
