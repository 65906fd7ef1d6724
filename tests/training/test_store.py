"""The store on a real DuckDB file: migrations, the writer, annotations."""

from __future__ import annotations

from pathlib import Path

import duckdb

from training import schema
from training.annotations import annotate
from training.logs import LogRecord
from training.store import Store


def test_migrates_a_version_1_file(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(schema.CREATE_VERSION_TABLE)
    for statement in schema.MIGRATIONS[1]:
        con.execute(statement)
    con.execute("INSERT INTO schema_version (version) VALUES (1)")
    con.close()
    store = Store(path)
    try:
        assert store.init() == max(schema.MIGRATIONS)
        assert store.init() == max(schema.MIGRATIONS)  # idempotent
        rec = LogRecord(session_id="s", query_id="q", cascade_id="c", cell_name="e", model="m", request={},
                        user_input="x", criterion="y", inputs={"text": "x"}, assistant_output="true", answer=True,
                        call_id="call-1", batch_size=2)
        store.append_logs([rec.row()]).result()
        cur = store.cursor()
        assert cur.execute("SELECT user_input, call_id, batch_size FROM unified_logs").fetchall() == [("x", "call-1", 2)]
        assert cur.execute("SELECT count(*) FROM semantic_cache").fetchone() == (0,)
    finally:
        store.close()


def test_writer_keeps_good_writes_when_one_fails(tmp_path: Path) -> None:
    store = Store(tmp_path / "w.duckdb")
    try:
        store.init()
        good = store.write(lambda cur: cur.execute("CREATE TABLE t AS SELECT 1 AS a"))
        bad = store.write(lambda cur: cur.execute("INSERT INTO nowhere VALUES (1)"))
        good.result()
        assert isinstance(bad.exception(), duckdb.CatalogException)
        annotate(store, ["t1", "t1"], confidence=0.5)
        cur = store.cursor()
        assert cur.execute("SELECT count(*), max(confidence) FROM training_annotations").fetchone() == (1, 0.5)
        assert cur.execute("SELECT a FROM t").fetchall() == [(1,)]
    finally:
        store.close()
