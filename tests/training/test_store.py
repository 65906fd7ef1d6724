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


def test_examples_of_a_version_5_file_keep_rows_and_checks_with_agent_ids_uncompressed(tmp_path: Path) -> None:
    path = tmp_path / "v5.duckdb"
    con = duckdb.connect(str(path))
    con.execute(schema.CREATE_VERSION_TABLE)
    for version in range(1, 6):
        for statement in schema.MIGRATIONS[version]:
            con.execute(statement)
        con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
    agents = [f"00000000-0000-0000-0000-00000000000{i}" for i in range(4)]
    con.execute("INSERT INTO training_examples (agent_id, input_text, source_trace_hash, labels) "
                "SELECT (?::VARCHAR[])[1 + i % 4]::UUID, 'text ' || i, 'h' || i, ['a'] FROM range(5000) t(i)", [agents])
    before = con.execute("SELECT id, agent_id, input_text FROM training_examples ORDER BY input_text").fetchall()
    con.execute("CHECKPOINT")
    packing = ("SELECT DISTINCT compression FROM pragma_storage_info('training_examples') "
               "WHERE column_name = 'agent_id' AND segment_type = 'UUID'")
    assert con.execute(packing).fetchall() == [("BitPacking",)]  # what DuckDB picks by itself
    con.close()
    store = Store(path)
    try:
        assert store.init() == max(schema.MIGRATIONS)
        cur = store.cursor()
        assert cur.execute("SELECT id, agent_id, input_text FROM training_examples ORDER BY input_text").fetchall() == before
        assert cur.execute(packing).fetchall() == [("Uncompressed",)]
        for bad in ("INSERT INTO training_examples (input_text) VALUES ('')",
                    "INSERT INTO training_examples (input_text, source_trace_hash) VALUES ('x', 'h1')",
                    "INSERT INTO training_examples (input_text, quality_score) VALUES ('x', 101)"):
            try:
                cur.execute(bad)
            except duckdb.ConstraintException:
                continue
            raise AssertionError(f"accepted: {bad}")
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
