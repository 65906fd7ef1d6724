"""A write-ahead log torn at any byte after the last-but-one commit still opens, with that commit in it.

A process writes two commits to the log table and dies without a checkpoint (as kill -9 leaves it). The test
then cuts copies of the WAL at every byte between the end of the first commit and the end of the second, and
opens each: DuckDB replays what is whole, the first commit is always there, the second is all there or not at
all, and the store opens such a file as `meansql serve` does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb

from training.store import Store

WRITER = textwrap.dedent(
    """
    import os, sys, duckdb
    con = duckdb.connect(sys.argv[1])
    con.execute("SET checkpoint_threshold = '1GB'")
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute("INSERT INTO unified_logs (trace_id, role, user_input) VALUES ('first-1', 'assistant', 'a'), ('first-2', 'assistant', 'b')")
    print(os.path.getsize(sys.argv[1] + ".wal"), flush=True)
    con.execute("INSERT INTO unified_logs (trace_id, role, user_input) "
                "SELECT 'second-' || i, 'assistant', repeat('x', 50) FROM range(3) t(i)")
    print(os.path.getsize(sys.argv[1] + ".wal"), flush=True)
    os._exit(0)  # no checkpoint, no clean close
    """
)


def _counts(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    row = con.execute("SELECT count(*) FILTER (WHERE trace_id LIKE 'first-%'), count(*) FILTER (WHERE trace_id LIKE 'second-%') "
                      "FROM unified_logs").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _write_two_commits(db: Path) -> tuple[int, int, bytes]:
    out = subprocess.run([sys.executable, "-c", WRITER, str(db)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first_end, second_end = (int(x) for x in out.stdout.split())
    wal = db.with_name(db.name + ".wal").read_bytes()
    assert len(wal) == second_end > first_end
    return first_end, second_end, wal


def test_a_torn_wal_opens_with_the_last_but_one_commit(tmp_path: Path) -> None:
    db = tmp_path / "meansql.duckdb"
    store = Store(db)
    store.init()  # the schema, checkpointed
    with store.cursor() as cur:
        row = cur.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'unified_logs'").fetchone()
    store.close()
    assert row is not None
    # Every byte: on a file holding only the log table (as the server writes it), so each open is quick.
    small = tmp_path / "logs-only.duckdb"
    with duckdb.connect(str(small)) as con:
        con.execute(str(row[0]))
    first_end, second_end, wal = _write_two_commits(small)
    seen: set[int] = set()
    for cut in range(first_end, second_end + 1):
        small.with_name(small.name + ".wal").write_bytes(wal[:cut])
        # Read-only replays the WAL and writes nothing back; no extension autoloading keeps each open quick.
        with duckdb.connect(str(small), read_only=True, config={"autoload_known_extensions": False}) as con:
            first, second = _counts(con)
        assert first == 2, f"the first commit is missing when the WAL is cut at byte {cut}"
        assert second in (0, 3), f"half a commit replayed when the WAL is cut at byte {cut}"
        seen.add(second)
    assert seen == {0, 3}  # cuts inside the second commit drop it; the whole log keeps it
    # The server's own open (migrations and a checkpoint at start-up) of the whole store, torn at a few places.
    first_end, second_end, wal = _write_two_commits(db)
    for cut in (first_end, (first_end + second_end) // 2, second_end - 1, second_end):
        copy = tmp_path / f"store{cut}.duckdb"
        shutil.copyfile(db, copy)
        copy.with_name(copy.name + ".wal").write_bytes(wal[:cut])
        store = Store(copy)
        try:
            store.init()
            with store.cursor() as cur:
                assert _counts(cur) == (2, 3 if cut == second_end else 0)
        finally:
            store.close()
