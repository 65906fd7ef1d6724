"""The quick-start guide's SQL runs as written, and the tables show up where clients look."""

from __future__ import annotations

import psycopg
import pytest

from tests.conftest import ServerProcess, create_products

SEED_QUERIES = [
    "SELECT 'bamboo toothbrush' as product LIMIT 5;",
    """SELECT trace_id, session_id, cascade_id, cell_name,
       JSONExtractString(full_request_json, '$.messages[-1].content') as input,
       JSONExtractString(content_json, '$.content') as output
FROM unified_logs
WHERE cascade_id = 'semantic_matches'
  AND role = 'assistant'
ORDER BY timestamp DESC
LIMIT 5""",
    """SELECT
    user_input,
    assistant_output,
    confidence,
    trainable,
    verified,
    timestamp
FROM training_examples_with_annotations
WHERE cascade_id = 'semantic_matches'
  AND cell_name = 'evaluate'
  AND trainable = true
ORDER BY timestamp DESC
LIMIT 10;""",
    "SELECT * FROM training_stats_by_cascade\nORDER BY trainable_count DESC;",
    """SELECT trace_id, cascade_id, cell_name, timestamp
FROM training_examples_mv
WHERE cascade_id = 'semantic_matches'
  AND user_input LIKE '%bamboo%'
ORDER BY timestamp DESC
LIMIT 5;""",
    "SELECT COUNT(*) FROM training_examples_mv\nWHERE cascade_id = 'semantic_matches'\n  AND cell_name = 'evaluate';",
    "SELECT COUNT(*) FROM training_annotations WHERE trainable = true;",
    "SELECT COUNT(*) FROM training_examples_with_annotations\nWHERE cascade_id = 'semantic_matches' AND trainable = true;",
    "SELECT * FROM training_examples_with_annotations LIMIT 5",
    "SELECT 'test' as text, 'test' MEANS 'example' as result;",
    "SHOW TABLES LIKE '%training%'",
]


@pytest.fixture()
def seeded(server: ServerProcess) -> ServerProcess:
    with server.connect() as conn:
        create_products(conn)
        conn.execute("SELECT id, description, description MEANS 'eco-friendly' as is_eco FROM products")
        conn.execute("INSERT INTO training_annotations (trace_id, trainable, confidence) "
                     "SELECT trace_id, true, 1.0 FROM training_examples_mv WHERE user_input LIKE '%bamboo%'")
    return server


def test_seed_queries_run_as_written(seeded: ServerProcess) -> None:
    with seeded.connect() as conn:
        results = [conn.execute(q).fetchall() for q in SEED_QUERIES]
    assert results[0] == [("bamboo toothbrush",)]
    assert len(results[1]) == 5 and all(r[5] in ("true", "false") and "Text: " in r[4] for r in results[1])
    assert [(r[0], r[1], r[3]) for r in results[2]] == [("Eco-friendly bamboo toothbrush", "true", True)]
    assert results[3][0][:5] == ("semantic_matches", "evaluate", 5, 1, 0)
    assert len(results[4]) == 1
    assert (results[5], results[6], results[7]) == ([(5,)], [(1,)], [(1,)])
    assert results[9] == [("test", False)]  # the stand-in: "example" is not in "test"
    assert {r[0] for r in results[10]} == {"training_annotations", "training_examples_mv",
                                            "training_examples_with_annotations", "training_stats_by_cascade",
                                            "training_examples", "training_events",
                                            "training_example_labels"}  # the curated store, its outbox and labels


def test_information_schema_lists_the_tables(seeded: ServerProcess) -> None:
    with seeded.connect() as conn:
        rows = conn.execute("SELECT table_name, table_type FROM information_schema.tables "
                            "WHERE table_name LIKE '%training%' OR table_name = 'unified_logs' ORDER BY 1").fetchall()
        cols = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'training_annotations' "
                            "ORDER BY ordinal_position").fetchall()
    assert rows == [("training_annotations", "BASE TABLE"), ("training_events", "BASE TABLE"),
                    ("training_example_labels", "BASE TABLE"), ("training_examples", "BASE TABLE"), ("training_examples_mv", "VIEW"),
                    ("training_examples_with_annotations", "VIEW"), ("training_stats_by_cascade", "VIEW"),
                    ("unified_logs", "BASE TABLE")]
    assert [c[0] for c in cols] == ["trace_id", "trainable", "verified", "confidence", "notes", "tags",
                                    "created_at", "updated_at"]


def test_prepared_statements_run_once(seeded: ServerProcess, fresh_provider) -> None:  # type: ignore[no-untyped-def]
    fresh_provider.reset()
    with seeded.connect() as conn:
        for _ in range(3):
            row = conn.execute("SELECT %s::VARCHAR MEANS %s AS m", ("Compostable bag", "eco-friendly"), prepare=True).fetchone()
            assert row == (True,)
        conn.execute("CREATE TABLE once (a INT)")
        conn.execute("INSERT INTO once VALUES (%s)", (1,), prepare=True)
        assert conn.execute("SELECT count(*) FROM once").fetchone() == (1,)
    assert len(fresh_provider.requests) == 1  # Describe makes no call; the repeats are cache hits


def test_psql_transaction_status(seeded: ServerProcess) -> None:
    with psycopg.connect(seeded.url) as conn:
        conn.execute("CREATE TABLE tx (a INT)")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.rollback()
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM tx")
