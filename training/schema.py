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

SOURCE_TYPES = ("execution_trace", "planning_trace", "quality_feedback", "synthetic", "human_annotated")
TASK_TYPES = ("single_step", "multi_step", "reasoning", "planning", "code_generation")


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


# The curated store (issue: TrainingExampleService). CHECK constraints keep the
# SQL door as strict as the HTTP one; source_trace_hash is unique (NULLs allowed)
# so dedup holds whichever door a write comes through. source_trace_id links a
# promoted example to its unified_logs row.
def _examples_table(name: str, agent_compression: str = "") -> str:
    return f"""
    CREATE TABLE IF NOT EXISTS {name} (
        id UUID PRIMARY KEY DEFAULT uuid(),
        execution_id VARCHAR,
        task_id VARCHAR,
        agent_id UUID{agent_compression},
        source_type VARCHAR NOT NULL DEFAULT 'execution_trace' CHECK (source_type IN ({_in(SOURCE_TYPES)})),
        source_trace_hash VARCHAR UNIQUE,
        source_trace_id VARCHAR,
        input_text VARCHAR NOT NULL CHECK (length(input_text) > 0),
        input_structured JSON DEFAULT '{{}}',
        output_text VARCHAR,
        expected_actions JSON DEFAULT '[]',
        final_answer VARCHAR,
        quality_score DOUBLE CHECK (quality_score BETWEEN 0 AND 100),
        confidence DOUBLE DEFAULT 1.0 CHECK (confidence BETWEEN 0 AND 1),
        labels VARCHAR[] DEFAULT [],
        domain VARCHAR,
        task_type VARCHAR NOT NULL DEFAULT 'single_step' CHECK (task_type IN ({_in(TASK_TYPES)})),
        difficulty DOUBLE CHECK (difficulty BETWEEN 0 AND 1),
        metadata JSON DEFAULT '{{}}',
        extracted_by VARCHAR,
        cascade_id VARCHAR,
        cell_name VARCHAR,
        created_at TIMESTAMP DEFAULT current_timestamp,
        updated_at TIMESTAMP DEFAULT current_timestamp
    )
    """


MIGRATIONS[3] = [
    _examples_table("training_examples"),
    "CREATE SEQUENCE IF NOT EXISTS training_events_seq",
    # The outbox: one row per event, written in the transaction of the change it
    # reports; the publisher deletes a row once Redis (when configured) has it.
    """
    CREATE TABLE IF NOT EXISTS training_events (
        seq BIGINT DEFAULT nextval('training_events_seq'),
        event_type VARCHAR,
        aggregate_type VARCHAR,
        aggregate_id VARCHAR,
        payload JSON,
        created_at TIMESTAMP DEFAULT current_timestamp
    )
    """,
]

MIGRATIONS[4] = [
    # Embeddings of texts, per model; FLOAT[384] is all-MiniLM-L6-v2's width (other models: embedding_vectors).
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

MIGRATIONS[5] = [
    # Embeddings of any other model (a litellm embedding model, any width), keyed by model: created here, at start-up,
    # rather than on a model's first vector, so that no DDL runs while the server answers queries.
    """
    CREATE TABLE IF NOT EXISTS embedding_vectors (
        model VARCHAR,
        text_hash VARCHAR,
        vector FLOAT[]
    )
    """,
]

# agent_id holds few distinct UUIDs; DuckDB bit-packs such 128-bit values and unpacks them slowly
# (count(DISTINCT agent_id) over 1,000,000 examples: 1.2 s bit-packed, 33 ms uncompressed), so the
# column is stored uncompressed. DuckDB cannot change a column's compression in place: the table is
# copied, with the same ids and constraints.
MIGRATIONS[6] = [
    _examples_table("training_examples_v6", " USING COMPRESSION uncompressed"),
    "INSERT INTO training_examples_v6 SELECT * FROM training_examples",
    "DROP TABLE training_examples",
    "ALTER TABLE training_examples_v6 RENAME TO training_examples",
]

# One row per distinct label of each example's labels list (training/labels.py keeps it with every write), so a label
# filter reads the rows of its labels instead of searching every list. No index or constraint: rows are rewritten
# with their example, in its transaction. The back-fill is sorted by label, so the rows of a label are a few row
# groups that DuckDB's zonemaps find. (Migration 8 replaces this table with a wider one.)
MIGRATIONS[7] = [
    """
    CREATE TABLE IF NOT EXISTS training_example_labels (
        example_id UUID,
        label VARCHAR,
        created_at TIMESTAMP,
        quality_score DOUBLE,
        confidence DOUBLE,
        difficulty DOUBLE
    )
    """,
    "DELETE FROM training_example_labels",
    """
    INSERT INTO training_example_labels
    SELECT DISTINCT * FROM (SELECT id AS example_id, unnest(labels) AS label, created_at, quality_score, confidence,
                                   difficulty FROM training_examples) ORDER BY label, created_at
    """,
]

# Migration 8: the label rows carry every column a list filter or sort can name (all but the full-text q and
# updated_at), so a page filtered by labels and any of those is filtered, ordered and counted in this table alone, and
# only its rows are read from training_examples (a join back on the UUID costs a scan of every id). label_key is
# md5_number_lower(label): rows of a label are spread over the whole table once examples arrive over time, and an
# integer compare over every row costs a fraction of a string compare; `label = ?` then only confirms the matches.
LABEL_SORT_COLUMNS = ("created_at", "quality_score", "confidence", "difficulty")
LABEL_FILTER_COLUMNS = ("agent_id", "domain", "task_type", "source_type", "cascade_id", "cell_name")
LABEL_COLUMNS = (*LABEL_SORT_COLUMNS, *LABEL_FILTER_COLUMNS)
LABEL_KEY = "md5_number_lower({})"
# label_bits: the example's labels as bits, one per label at md5_number_lower(label) % 64 (LABEL_BIT); a label's bit
# clear in it says the example lacks the label, a bit set that it may have it. A join of two labels' rows on the
# example (all of them; any of them counted once) needs only the rows whose bits allow the other label.
LABEL_BIT = "CAST(1 AS UBIGINT) << CAST(md5_number_lower({}) % 64 AS INTEGER)"
# (A 0 first: an empty list has bits too; list_distinct leaves NULLs out.)
_LABEL_BITS = (
    f"list_reduce(list_prepend(CAST(0 AS UBIGINT), list_transform(list_distinct(labels), l -> {LABEL_BIT.format('l')})), (a, b) -> a | b)"
)
_LABEL_INTO = f"INSERT INTO training_example_labels (example_id, label, label_key, {', '.join(LABEL_COLUMNS)}, label_bits)"
_LABEL_KEYED = f"SELECT example_id, label, {LABEL_KEY.format('label')}, {', '.join(LABEL_COLUMNS)}, label_bits"
_LABEL_SELECT = f"SELECT DISTINCT id AS example_id, unnest(labels) AS label, {', '.join(LABEL_COLUMNS)}, {_LABEL_BITS} AS label_bits"
# A label repeated in one list is one row; the back-fill is sorted by label, so right after it the rows of a label are
# a few row groups that DuckDB's zonemaps find.
_LABELS_BACKFILL = f"""
{_LABEL_INTO}
{_LABEL_KEYED} FROM ({_LABEL_SELECT} FROM training_examples) ORDER BY label, created_at
"""
MIGRATIONS[8] = [
    "DROP TABLE IF EXISTS training_example_labels",
    """
    CREATE TABLE training_example_labels (
        example_id UUID,
        label VARCHAR,
        label_key UBIGINT,
        created_at TIMESTAMP,
        quality_score DOUBLE,
        confidence DOUBLE,
        difficulty DOUBLE,
        agent_id UUID,
        domain VARCHAR,
        task_type VARCHAR,
        source_type VARCHAR,
        cascade_id VARCHAR,
        cell_name VARCHAR
    )
    """,
    # (Filled by migration 9, which adds a column.)
]
# Migration 9: label_bits (see LABEL_BIT), written with every label row; the rows again, sorted by label.
MIGRATIONS[9] = [
    "ALTER TABLE training_example_labels ADD COLUMN label_bits UBIGINT",
    "DELETE FROM training_example_labels",
    _LABELS_BACKFILL,
]
LABELS_REBUILD = ["DELETE FROM training_example_labels", _LABELS_BACKFILL]
# {source}: a registered relation of new examples (the examples' columns, id and agent_id as VARCHAR); {ids}: one of
# ids (VARCHAR).
LABELS_FROM = f"""
{_LABEL_INTO}
{_LABEL_KEYED} FROM (
    SELECT DISTINCT CAST(id AS UUID) AS example_id, unnest(labels) AS label, {", ".join(LABEL_SORT_COLUMNS)},
           CAST(agent_id AS UUID) AS agent_id, {", ".join(LABEL_FILTER_COLUMNS[1:])}, {_LABEL_BITS} AS label_bits
    FROM {{source}})
"""
LABELS_DELETE = "DELETE FROM training_example_labels WHERE example_id IN (SELECT CAST(id AS UUID) FROM {ids})"
LABELS_RESYNC = f"""
{_LABEL_INTO}
{_LABEL_KEYED} FROM ({_LABEL_SELECT} FROM training_examples WHERE id IN (SELECT CAST(id AS UUID) FROM {{ids}}))
"""
LABEL_COUNTS = "SELECT label, count(*) AS n FROM training_example_labels GROUP BY label ORDER BY n DESC, label"

EXAMPLE_FIELDS = (
    "id", "execution_id", "task_id", "agent_id", "source_type", "source_trace_hash", "source_trace_id",
    "input_text", "input_structured", "output_text", "expected_actions", "final_answer", "quality_score",
    "confidence", "labels", "domain", "task_type", "difficulty", "metadata", "extracted_by", "cascade_id",
    "cell_name", "created_at", "updated_at",
)
JSON_FIELDS = ("input_structured", "expected_actions", "metadata")

SELECT_EXAMPLES = "SELECT " + ", ".join(EXAMPLE_FIELDS) + " FROM training_examples"

EVENT_FIELDS = ("event_type", "aggregate_type", "aggregate_id", "payload")
INSERT_EVENT = "INSERT INTO training_events (event_type, aggregate_type, aggregate_id, payload) VALUES (?, ?, ?, ?)"
PENDING_EVENTS = "SELECT seq, event_type, aggregate_type, aggregate_id, payload FROM training_events ORDER BY seq LIMIT ?"
DELETE_EVENTS = "DELETE FROM training_events WHERE seq <= ?"

# Curated examples of one cascade and cell for injection, in two steps: the ids first, from the filter, sort and JSON
# columns only, then their rows by primary key (DuckDB's own late fetch of a top-N is a join on rowid that scans every
# wide column of the table when the rows lie far apart, as one cascade's rows do). Ordered in SQL so only `limit` rows
# per criterion class leave the database.
_CURATED_WHERE = """
WHERE cascade_id = ? AND cell_name = ?
  AND coalesce(quality_score, 100) >= ? AND coalesce(confidence, 1.0) >= ?"""
SELECT_CURATED_CANDIDATES = f"""
SELECT CAST(id AS VARCHAR) FROM training_examples {_CURATED_WHERE}
  AND coalesce(output_text, final_answer) IS NOT NULL
ORDER BY {{same_criterion}} DESC, {{order}}
LIMIT ?
"""
# The first ? candidates in the strategy's order, from cheap columns alone: when they hold `limit` examples of the
# criterion, so does the whole table.
SELECT_CURATED_WINDOW = f"""
SELECT CAST(id AS VARCHAR) FROM training_examples {_CURATED_WHERE}
ORDER BY {{order}}
LIMIT ?
"""
# The first ? candidates of the criterion alone ({criterion_filter}: a test of the one JSON column, which DuckDB makes
# while it scans, on the rows that pass the others).
SELECT_CURATED_SAME = f"""
SELECT CAST(id AS VARCHAR) FROM training_examples {_CURATED_WHERE}
  AND {{criterion_filter}} AND coalesce(output_text, final_answer) IS NOT NULL
ORDER BY {{order}}
LIMIT ?
"""
# {ids}: one parameter mark per id.
SELECT_CURATED_ROWS = """
SELECT CAST(id AS VARCHAR), input_text, json_extract_string(input_structured, '$.criterion'),
       coalesce(output_text, final_answer), confidence, created_at
FROM training_examples
WHERE id IN ({ids}) AND coalesce(output_text, final_answer) IS NOT NULL
ORDER BY {same_criterion} DESC, {order}
LIMIT ?
"""
# "Same criterion as the question": the JSON is parsed only for rows whose text can hold it.
SAME_CRITERION = """(CASE WHEN contains(CAST(input_structured AS VARCHAR), ?)
     THEN json_extract_string(input_structured, '$.criterion') IS NOT DISTINCT FROM ? ELSE false END)"""
NO_CRITERION = """(CASE WHEN contains(CAST(input_structured AS VARCHAR), 'criterion')
     THEN json_extract_string(input_structured, '$.criterion') IS NULL ELSE true END)"""
SAME_CRITERION_FILTER = """contains(CAST(input_structured AS VARCHAR), ?)
  AND json_extract_string(input_structured, '$.criterion') IS NOT DISTINCT FROM ?"""
NO_CRITERION_FILTER = """(NOT contains(CAST(input_structured AS VARCHAR), 'criterion')
  OR json_extract_string(input_structured, '$.criterion') IS NULL)"""
CURATED_ORDER = {
    "recent": "created_at DESC",
    "high_confidence": "coalesce(confidence, 1.0) DESC, created_at DESC",
    "random": "random()",
}

# A logged call with what promotion needs: the trace and its annotation.
SELECT_TRACE_FOR_PROMOTION = """
SELECT l.trace_id, l.session_id, l.query_id, l.cascade_id, l.cell_name, l.user_input, l.criterion,
       CAST(l.input_json AS VARCHAR), l.assistant_output, l.model,
       coalesce(a.trainable, false), coalesce(a.verified, false), a.confidence, a.notes, a.tags
FROM unified_logs l LEFT JOIN training_annotations a USING (trace_id)
WHERE l.trace_id = ? AND l.role = 'assistant' AND l.error IS NULL AND l.assistant_output IS NOT NULL
"""

SESSION_LOGS = """
SELECT l.trace_id, l.query_id, l.cascade_id, l.cell_name, l.model, l.user_input, l.criterion,
       l.assistant_output, l.answer, l.error, l.cache_hit, l."timestamp",
       coalesce(a.trainable, false) AS trainable, coalesce(a.verified, false) AS verified, a.confidence
FROM unified_logs l LEFT JOIN training_annotations a USING (trace_id)
WHERE l.session_id = ? AND l.role = 'assistant'
ORDER BY l."timestamp"
LIMIT ?
"""

SELECT_ANNOTATED_EXAMPLES = """
SELECT trace_id, session_id, cascade_id, cell_name, user_input, criterion, assistant_output, model,
       "timestamp", trainable, verified, confidence, notes, tags, annotated_at
FROM training_examples_with_annotations
WHERE (? IS NULL OR cascade_id = ?) AND (trainable OR NOT ?)
ORDER BY "timestamp" DESC
LIMIT ? OFFSET ?
"""


def embedding_table(local: bool) -> str:
    """The packaged all-MiniLM-L6-v2 has its FLOAT[384] table; every other model shares embedding_vectors (FLOAT[])."""
    return "embedding_cache" if local else "embedding_vectors"


def embedding_lookup(table: str) -> str:
    """Cached vectors of one model for the hashes in the registered Arrow table _meansql_hashes."""
    return f"""
    SELECT e.text_hash, any_value(e.vector) FROM {table} e
    JOIN _meansql_hashes h ON e.text_hash = h.text_hash
    WHERE e.model = ?
    GROUP BY e.text_hash
    """


def embedding_rows(table: str, rows: str) -> str:
    """(id, cached vector or NULL, the text where no vector is cached) of each (id, text) row of the query ``rows``.

    The text hash is computed by DuckDB as text_hash() computes it in Python, so no cached text leaves DuckDB;
    a text cached twice gives its id twice (the caller keeps one).
    """
    return f"""
    SELECT r.id, e.vector, CASE WHEN e.vector IS NULL THEN r.text END AS missing
    FROM ({rows}) AS r(id, text)
    LEFT JOIN {table} e ON e.model = ? AND e.text_hash = substr(sha256(r.text), 1, 32)
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
