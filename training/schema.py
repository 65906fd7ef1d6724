"""DDL, views and migrations of the store: all of its SQL text in one place.

The log table carries no index or constraint so that appends stay cheap and a
torn WAL never has an index to replay. Annotations are keyed by trace_id
(last write wins), which needs the primary key.
"""

from __future__ import annotations

CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER,
    applied_at TIMESTAMP DEFAULT current_timestamp
)
"""

# Migration n takes the schema from version n-1 to n.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """
        CREATE TABLE IF NOT EXISTS unified_logs (
            trace_id VARCHAR,
            session_id VARCHAR,
            query_id VARCHAR,
            cascade_id VARCHAR,
            cell_name VARCHAR,
            role VARCHAR,
            model VARCHAR,
            full_request_json JSON,
            content_json JSON,
            user_input VARCHAR,
            criterion VARCHAR,
            input_json JSON,
            assistant_output VARCHAR,
            answer BOOLEAN,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cost DOUBLE,
            latency_ms DOUBLE,
            cache_hit BOOLEAN,
            attempt INTEGER,
            error VARCHAR,
            "timestamp" TIMESTAMP
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS training_annotations (
            trace_id VARCHAR PRIMARY KEY,
            trainable BOOLEAN DEFAULT true,
            verified BOOLEAN DEFAULT false,
            confidence DOUBLE DEFAULT 1.0,
            notes VARCHAR,
            tags VARCHAR[],
            created_at TIMESTAMP DEFAULT current_timestamp,
            updated_at TIMESTAMP DEFAULT current_timestamp
        )
        """,
        """
        CREATE OR REPLACE VIEW training_examples_mv AS
        SELECT trace_id, session_id, cascade_id, cell_name, user_input, criterion,
               input_json, assistant_output, model, "timestamp"
        FROM unified_logs
        WHERE role = 'assistant' AND error IS NULL AND assistant_output IS NOT NULL
        """,
        """
        CREATE OR REPLACE VIEW training_examples_with_annotations AS
        SELECT e.*,
               coalesce(a.trainable, false) AS trainable,
               coalesce(a.verified, false) AS verified,
               a.confidence,
               a.notes,
               a.tags,
               a.updated_at AS annotated_at
        FROM training_examples_mv e
        LEFT JOIN training_annotations a USING (trace_id)
        """,
        """
        CREATE OR REPLACE VIEW training_stats_by_cascade AS
        SELECT cascade_id, cell_name,
               count(*) AS example_count,
               count(*) FILTER (WHERE trainable) AS trainable_count,
               count(*) FILTER (WHERE verified) AS verified_count,
               avg(confidence) FILTER (WHERE trainable) AS avg_confidence
        FROM training_examples_with_annotations
        GROUP BY cascade_id, cell_name
        """,
        # ClickHouse spelling used by the quick-start queries; '$.a[-1]' becomes
        # DuckDB's '$.a[#-1]'.
        """
        CREATE OR REPLACE MACRO JSONExtractString(j, p) AS
            json_extract_string(j, regexp_replace(p, '\\[-', '[#-', 'g'))
        """,
    ],
}

MIGRATIONS[2] = [
    # One row per answer a model gave that parsed; failed or unparseable answers are never cached.
    """
    CREATE TABLE IF NOT EXISTS semantic_cache (
        key VARCHAR,
        cascade_id VARCHAR,
        model VARCHAR,
        answer JSON,
        trace_id VARCHAR,
        created_at TIMESTAMP
    )
    """,
    # The call that answered an item (several items share one call when batched).
    "ALTER TABLE unified_logs ADD COLUMN IF NOT EXISTS call_id VARCHAR",
    "ALTER TABLE unified_logs ADD COLUMN IF NOT EXISTS batch_size INTEGER",
]

# _meansql_keys: an Arrow table of the keys wanted, registered on the cursor.
CACHE_LOOKUP = """
SELECT c.key, any_value(c.answer) FROM semantic_cache c
JOIN _meansql_keys k ON c.key = k.key
GROUP BY c.key
"""

CACHE_FIELDS = ("key", "cascade_id", "model", "answer", "trace_id", "created_at")

UPSERT_ANNOTATION = """
INSERT INTO training_annotations (trace_id, trainable, verified, confidence, notes, tags)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (trace_id) DO UPDATE SET
    trainable = excluded.trainable,
    verified = excluded.verified,
    confidence = excluded.confidence,
    notes = excluded.notes,
    tags = excluded.tags,
    updated_at = now()
"""

LOG_FIELDS = (
    "trace_id", "session_id", "query_id", "cascade_id", "cell_name", "role", "model",
    "full_request_json", "content_json", "user_input", "criterion", "input_json",
    "assistant_output", "answer", "prompt_tokens", "completion_tokens", "cost",
    "latency_ms", "cache_hit", "attempt", "error", "timestamp", "call_id", "batch_size",
)

# Candidate examples for injection: trainable traces of one cascade and cell.
# The strategy decides order and limit in Python (retrieval.py).
SELECT_EXAMPLE_CANDIDATES = """
SELECT trace_id, user_input, criterion, assistant_output, confidence, verified,
       "timestamp", annotated_at
FROM training_examples_with_annotations
WHERE cascade_id = ? AND cell_name = ? AND trainable
  AND coalesce(confidence, 1.0) >= ?
  AND (verified OR NOT ?)
"""

STATS = """
SELECT cascade_id, cell_name, example_count, trainable_count, verified_count, avg_confidence
FROM training_stats_by_cascade
WHERE ? IS NULL OR cascade_id = ?
ORDER BY trainable_count DESC, cascade_id, cell_name
"""

MIGRATIONS[3] = [
    # Embeddings of texts, per model; FLOAT[384] is all-MiniLM-L6-v2's width (other widths: embedding_cache_<dim>).
    """
    CREATE TABLE IF NOT EXISTS embedding_cache (
        model VARCHAR,
        text_hash VARCHAR,
        vector FLOAT[384]
    )
    """,
    # Thresholds of the local judge set by `meansql training calibrate`; the newest row of a cascade wins.
    """
    CREATE TABLE IF NOT EXISTS judge_calibration (
        cascade_id VARCHAR,
        criterion VARCHAR,
        min_confidence DOUBLE,
        target_precision DOUBLE,
        examples INTEGER,
        proxy_share DOUBLE,
        created_at TIMESTAMP DEFAULT current_timestamp
    )
    """,
]


def embedding_table(dim: int) -> str:
    return "embedding_cache" if dim == 384 else f"embedding_cache_{int(dim)}"


def create_embedding_table(dim: int) -> str:
    return f"CREATE TABLE IF NOT EXISTS {embedding_table(dim)} (model VARCHAR, text_hash VARCHAR, vector FLOAT[{int(dim)}])"


def embedding_lookup(table: str) -> str:
    """Cached vectors of one model for the hashes in the registered Arrow table _meansql_hashes."""
    return f"""
    SELECT e.text_hash, any_value(e.vector) FROM {table} e
    JOIN _meansql_hashes h ON e.text_hash = h.text_hash
    WHERE e.model = ?
    GROUP BY e.text_hash
    """


CALIBRATION_INSERT = """
INSERT INTO judge_calibration (cascade_id, criterion, min_confidence, target_precision, examples, proxy_share)
VALUES (?, ?, ?, ?, ?, ?)
"""

CALIBRATION_LOOKUP = """
SELECT min_confidence FROM judge_calibration
WHERE cascade_id = ? AND (criterion IS NULL OR criterion = ?)
ORDER BY (criterion IS NULL), created_at DESC
LIMIT 1
"""
