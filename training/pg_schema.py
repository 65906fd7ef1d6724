"""The store's SQL text for PostgreSQL: the `meansql` schema, its migrations and the queries the store runs.

The same names and columns as the DuckDB store (schema.py), in PostgreSQL's
spelling. `db init` adds `meansql` to the end of the database's search_path,
so clients relayed by a proxy read `unified_logs` and write
`training_annotations` unqualified, while their own tables in `public` win
on a clash. Clients' plain INSERTs into training_annotations upsert, as on
DuckDB: the name is a view whose INSTEAD OF trigger writes the row (last
write wins) and its outbox event in the statement's transaction.
"""

from __future__ import annotations

SCHEMA = "meansql"

# Two processes migrating at once: the second waits here, then finds the work done.
LOCK = "SELECT pg_advisory_xact_lock(hashtext('meansql schema migration'))"

CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS meansql"
CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS meansql.schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

CURRENT_VERSION = "SELECT coalesce(max(version), 0) FROM meansql.schema_version"
RECORD_VERSION = "INSERT INTO meansql.schema_version (version) VALUES (%s)"

# The database-level search_path, with meansql at its end (ALTER DATABASE takes no parameters).
DATABASE_SEARCH_PATH = """
SELECT coalesce((SELECT option_value FROM pg_db_role_setting s, pg_options_to_table(s.setconfig)
                 WHERE s.setdatabase = d.oid AND s.setrole = 0 AND option_name = 'search_path'),
                boot_val), current_database()
FROM pg_database d, pg_settings
WHERE d.datname = current_database() AND pg_settings.name = 'search_path'
"""

# Migration n takes the schema from version n-1 to n.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """
        CREATE TABLE meansql.unified_logs (
            trace_id text,
            session_id text,
            query_id text,
            cascade_id text,
            cell_name text,
            role text,
            model text,
            full_request_json json,
            content_json json,
            user_input text,
            criterion text,
            input_json json,
            assistant_output text,
            answer boolean,
            prompt_tokens integer,
            completion_tokens integer,
            cost double precision,
            latency_ms double precision,
            cache_hit boolean,
            attempt integer,
            error text,
            "timestamp" timestamp,
            call_id text,
            batch_size integer
        )
        """,
        # Annotations join the log by trace; candidates are found by operator and cell.
        "CREATE INDEX unified_logs_trace_id ON meansql.unified_logs (trace_id)",
        "CREATE INDEX unified_logs_cascade_cell ON meansql.unified_logs (cascade_id, cell_name)",
        """
        CREATE TABLE meansql.annotation_rows (
            trace_id text PRIMARY KEY,
            trainable boolean DEFAULT true,
            verified boolean DEFAULT false,
            confidence double precision DEFAULT 1.0,
            notes text,
            tags text[],
            created_at timestamp DEFAULT localtimestamp,
            updated_at timestamp DEFAULT localtimestamp
        )
        """,
        """
        CREATE VIEW meansql.training_annotations AS
        SELECT trace_id, trainable, verified, confidence, notes, tags, created_at, updated_at
        FROM meansql.annotation_rows
        """,
        "ALTER VIEW meansql.training_annotations ALTER COLUMN trainable SET DEFAULT true",
        "ALTER VIEW meansql.training_annotations ALTER COLUMN verified SET DEFAULT false",
        "ALTER VIEW meansql.training_annotations ALTER COLUMN confidence SET DEFAULT 1.0",
        """
        CREATE TABLE meansql.training_events (
            seq bigserial,
            event_type text,
            aggregate_type text,
            aggregate_id text,
            payload json,
            created_at timestamp DEFAULT localtimestamp
        )
        """,
        """
        CREATE FUNCTION meansql.upsert_annotation() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.confidence IS NOT NULL AND NOT NEW.confidence BETWEEN 0 AND 1 THEN
                RAISE EXCEPTION 'confidence must be between 0 and 1, got %', NEW.confidence
                    USING ERRCODE = '22023';
            END IF;
            INSERT INTO meansql.annotation_rows (trace_id, trainable, verified, confidence, notes, tags)
            VALUES (NEW.trace_id, NEW.trainable, NEW.verified, NEW.confidence, NEW.notes, NEW.tags)
            ON CONFLICT (trace_id) DO UPDATE SET
                trainable = excluded.trainable, verified = excluded.verified, confidence = excluded.confidence,
                notes = excluded.notes, tags = excluded.tags, updated_at = localtimestamp;
            INSERT INTO meansql.training_events (event_type, aggregate_type, aggregate_id, payload)
            VALUES ('training_annotation.upserted', 'training_annotation', NEW.trace_id,
                    json_build_object('trainable', NEW.trainable, 'verified', NEW.verified,
                                      'confidence', NEW.confidence));
            RETURN NEW;
        END
        $$
        """,
        """
        CREATE TRIGGER upsert INSTEAD OF INSERT ON meansql.training_annotations
        FOR EACH ROW EXECUTE FUNCTION meansql.upsert_annotation()
        """,
        """
        CREATE VIEW meansql.training_examples_mv AS
        SELECT trace_id, session_id, cascade_id, cell_name, user_input, criterion,
               input_json, assistant_output, model, "timestamp"
        FROM meansql.unified_logs
        WHERE role = 'assistant' AND error IS NULL AND assistant_output IS NOT NULL
        """,
        """
        CREATE VIEW meansql.training_examples_with_annotations AS
        SELECT e.*,
               coalesce(a.trainable, false) AS trainable,
               coalesce(a.verified, false) AS verified,
               a.confidence,
               a.notes,
               a.tags,
               a.updated_at AS annotated_at
        FROM meansql.training_examples_mv e
        LEFT JOIN meansql.annotation_rows a USING (trace_id)
        """,
        """
        CREATE VIEW meansql.training_stats_by_cascade AS
        SELECT cascade_id, cell_name,
               count(*) AS example_count,
               count(*) FILTER (WHERE trainable) AS trainable_count,
               count(*) FILTER (WHERE verified) AS verified_count,
               avg(confidence) FILTER (WHERE trainable) AS avg_confidence
        FROM meansql.training_examples_with_annotations
        GROUP BY cascade_id, cell_name
        """,
        # ClickHouse spelling of the quick-start queries; '$.a[-1]' becomes jsonpath's '$.a[last]'.
        """
        CREATE FUNCTION meansql.JSONExtractString(j json, p text) RETURNS text
        LANGUAGE sql IMMUTABLE AS $$
            SELECT jsonb_path_query_first(j::jsonb, regexp_replace(p, '\\[-(\\d+)\\]', '[last-\\1+1]', 'g')::jsonpath)
                   #>> '{}'
        $$
        """,
        # One row per answer that parsed; the key is the operator, model and full prompt.
        """
        CREATE TABLE meansql.semantic_cache (
            key text PRIMARY KEY,
            cascade_id text,
            model text,
            answer json,
            trace_id text,
            created_at timestamp
        )
        """,
        # A value being judged: who judges it and until when the claim holds unless renewed.
        """
        CREATE TABLE meansql.semantic_claims (
            key text PRIMARY KEY,
            owner text NOT NULL,
            process text NOT NULL,
            expires_at timestamptz NOT NULL
        )
        """,
        """
        CREATE TABLE meansql.training_examples (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            execution_id text,
            task_id text,
            agent_id uuid,
            source_type text NOT NULL DEFAULT 'execution_trace' CHECK (source_type IN
                ('execution_trace', 'planning_trace', 'quality_feedback', 'synthetic', 'human_annotated')),
            source_trace_hash text UNIQUE,
            source_trace_id text,
            input_text text NOT NULL CHECK (length(input_text) > 0),
            input_structured json DEFAULT '{}',
            output_text text,
            expected_actions json DEFAULT '[]',
            final_answer text,
            quality_score double precision CHECK (quality_score BETWEEN 0 AND 100),
            confidence double precision DEFAULT 1.0 CHECK (confidence BETWEEN 0 AND 1),
            labels text[] DEFAULT '{}',
            domain text,
            task_type text NOT NULL DEFAULT 'single_step' CHECK (task_type IN
                ('single_step', 'multi_step', 'reasoning', 'planning', 'code_generation')),
            difficulty double precision CHECK (difficulty BETWEEN 0 AND 1),
            metadata json DEFAULT '{}',
            extracted_by text,
            cascade_id text,
            cell_name text,
            created_at timestamp DEFAULT localtimestamp,
            updated_at timestamp DEFAULT localtimestamp
        )
        """,
        "CREATE INDEX training_examples_cascade_cell ON meansql.training_examples (cascade_id, cell_name, created_at)",
        """
        CREATE TABLE meansql.judge_calibration (
            cascade_id text,
            criterion text,
            min_confidence double precision,
            target_precision double precision,
            examples integer,
            proxy_share double precision,
            created_at timestamp DEFAULT localtimestamp
        )
        """,
    ],
}

LOG_COPY = "COPY meansql.unified_logs ({columns}) FROM STDIN"

CACHE_LOOKUP = "SELECT key, answer FROM meansql.semantic_cache WHERE key = ANY(%s)"
CACHE_INSERT = """
INSERT INTO meansql.semantic_cache (key, cascade_id, model, answer, trace_id, created_at)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (key) DO NOTHING
"""

# Claims: a free key, or one whose claim lapsed, becomes ours; keys held by others are left alone.
# Keys are taken in sorted order, as every writer of claims and cache rows takes them, so no two deadlock.
CLAIM = """
INSERT INTO meansql.semantic_claims AS c (key, owner, process, expires_at)
SELECT k, %(owner)s, %(process)s, now() + make_interval(secs => %(ttl)s) FROM unnest(%(keys)s::text[]) k ORDER BY k
ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, process = excluded.process, expires_at = excluded.expires_at
WHERE c.expires_at < now() OR c.owner = excluded.owner
RETURNING key
"""
RELEASE = "DELETE FROM meansql.semantic_claims WHERE key = ANY(%s) AND owner = %s"
RENEW = """
UPDATE meansql.semantic_claims SET expires_at = now() + make_interval(secs => %s)
WHERE key IN (SELECT key FROM meansql.semantic_claims WHERE process = %s ORDER BY key FOR UPDATE)
"""

UPSERT_ANNOTATION = """
INSERT INTO meansql.training_annotations (trace_id, trainable, verified, confidence, notes, tags)
VALUES (%s, %s, %s, %s, %s, %s)
"""

SELECT_EXAMPLE_CANDIDATES = """
SELECT trace_id, user_input, criterion, assistant_output, confidence, verified,
       "timestamp", annotated_at
FROM meansql.training_examples_with_annotations
WHERE cascade_id = %s AND cell_name = %s AND trainable
  AND coalesce(confidence, 1.0) >= %s
  AND (verified OR NOT %s)
"""

SELECT_CURATED_CANDIDATES = """
SELECT id::text, input_text, input_structured ->> 'criterion',
       coalesce(output_text, final_answer), confidence, created_at
FROM meansql.training_examples
WHERE cascade_id = %(cascade_id)s AND cell_name = %(cell_name)s
  AND coalesce(quality_score, 100) >= %(min_quality)s AND coalesce(confidence, 1.0) >= %(min_confidence)s
  AND coalesce(output_text, final_answer) IS NOT NULL
ORDER BY (input_structured ->> 'criterion') IS NOT DISTINCT FROM %(criterion)s DESC, {order}
LIMIT %(limit)s
"""
CURATED_ORDER = {
    "recent": "created_at DESC",
    "high_confidence": "coalesce(confidence, 1.0) DESC, created_at DESC",
    "random": "random()",
}

CALIBRATION_INSERT = """
INSERT INTO meansql.judge_calibration (cascade_id, criterion, min_confidence, target_precision, examples, proxy_share)
VALUES (%s, %s, %s, %s, %s, %s)
"""

CALIBRATION_LOOKUP = """
SELECT min_confidence FROM meansql.judge_calibration
WHERE cascade_id = %s AND (criterion IS NULL OR criterion = %s)
ORDER BY (criterion IS NULL), created_at DESC
LIMIT 1
"""

# What full-text search reads of an example (the GIN index and the search query spell it the same way).
TEXT_DOCUMENT = "to_tsvector('english', coalesce(input_text, '') || ' ' || coalesce(output_text, '') || ' ' || coalesce(final_answer, ''))"

# Migration 2: the curated store's doors. The database keeps the label side table and the outbox itself, with
# triggers, so a plain INSERT, UPDATE or DELETE from psql writes them in its transaction as the HTTP API does;
# every outbox row is also a NOTIFY on training_events at its commit; published_at marks what Redis took.
MIGRATIONS[2] = [
    """
    CREATE TABLE meansql.training_example_labels (
        example_id uuid,
        label text,
        created_at timestamp,
        quality_score double precision,
        confidence double precision,
        difficulty double precision,
        PRIMARY KEY (label, example_id)
    )
    """,
    "CREATE INDEX training_example_labels_example ON meansql.training_example_labels (example_id)",
    f"CREATE INDEX training_examples_text ON meansql.training_examples USING gin (({TEXT_DOCUMENT}))",
    "CREATE INDEX training_examples_labels ON meansql.training_examples USING gin (labels)",
    "ALTER TABLE meansql.training_events ADD COLUMN published_at timestamptz",
    "CREATE INDEX training_events_unpublished ON meansql.training_events (seq) WHERE published_at IS NULL",
    """
    CREATE FUNCTION meansql.example_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        fields text[];
    BEGIN
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            DELETE FROM meansql.training_example_labels WHERE example_id = OLD.id;
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            INSERT INTO meansql.training_example_labels
            SELECT DISTINCT NEW.id, l, NEW.created_at, NEW.quality_score, NEW.confidence, NEW.difficulty
            FROM unnest(NEW.labels) l
            ON CONFLICT DO NOTHING;
        END IF;
        IF TG_OP = 'INSERT' THEN
            INSERT INTO meansql.training_events (event_type, aggregate_type, aggregate_id, payload)
            VALUES ('training_example.created', 'training_example', NEW.id::text,
                    json_build_object('execution_id', NEW.execution_id, 'agent_id', NEW.agent_id::text,
                                      'source_type', NEW.source_type, 'quality_score', NEW.quality_score,
                                      'domain', NEW.domain, 'cascade_id', NEW.cascade_id, 'cell_name', NEW.cell_name));
        ELSIF TG_OP = 'UPDATE' THEN
            -- The fields the writer named (meansql notes them for the transaction), else those that changed.
            fields := string_to_array(nullif(current_setting('meansql.updated_fields', true), ''), ',');
            IF fields IS NULL THEN
                SELECT coalesce(array_agg(n.key ORDER BY n.key), '{}') INTO fields
                FROM jsonb_each(to_jsonb(NEW)) n
                WHERE n.key <> 'updated_at' AND n.value IS DISTINCT FROM to_jsonb(OLD) -> n.key;
            END IF;
            INSERT INTO meansql.training_events (event_type, aggregate_type, aggregate_id, payload)
            VALUES ('training_example.updated', 'training_example', NEW.id::text,
                    json_build_object('updated_fields', fields));
        ELSE
            INSERT INTO meansql.training_events (event_type, aggregate_type, aggregate_id, payload)
            VALUES ('training_example.deleted', 'training_example', OLD.id::text, '{}'::json);
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER changed AFTER INSERT OR UPDATE OR DELETE ON meansql.training_examples
    FOR EACH ROW EXECUTE FUNCTION meansql.example_changed()
    """,
    """
    CREATE FUNCTION meansql.notify_event() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('training_events', json_build_object(
            'event_type', NEW.event_type, 'aggregate_type', NEW.aggregate_type,
            'aggregate_id', NEW.aggregate_id, 'payload', coalesce(NEW.payload, '{}'::json))::text);
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER notify AFTER INSERT ON meansql.training_events
    FOR EACH ROW EXECUTE FUNCTION meansql.notify_event()
    """,
    # Rows of examples written before this migration.
    """
    INSERT INTO meansql.training_example_labels
    SELECT DISTINCT id, l, created_at, quality_score, confidence, difficulty
    FROM meansql.training_examples, unnest(labels) l
    ON CONFLICT DO NOTHING
    """,
]

# The publisher: a batch of unpublished events that no other process holds, marked once Redis took them.
CLAIM_EVENTS = """
SELECT seq, event_type, aggregate_type, aggregate_id, payload::text FROM meansql.training_events
WHERE published_at IS NULL ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED
"""
MARK_EVENTS = "UPDATE meansql.training_events SET published_at = now() WHERE seq = ANY(%s)"
# Published events older than the retention (seconds); the unpublished are never pruned.
PRUNE_EVENTS = "DELETE FROM meansql.training_events WHERE published_at < now() - make_interval(secs => %s)"
LISTEN_EVENTS = "LISTEN training_events"

# Run by DuckDB, on the attached store (training/pgattach.py), in the write's own PostgreSQL transaction.
# {catalog} is the attach name, {fields} names from schema.EXAMPLE_FIELDS (checked by the caller).
NOTE_UPDATED_FIELDS = "CALL postgres_execute('{catalog}', 'SELECT set_config(''meansql.updated_fields'', ''{fields}'', true)')"
# Full-text search: every example matching the query with its ts_rank, as a relation with a _score column.
# {words}: the query's words (\w+ only, so no quote can occur).
SEARCH = (
    "(SELECT * FROM postgres_query('{catalog}', 'SELECT e.*, ts_rank({document}, q) AS _score "
    "FROM meansql.training_examples e, plainto_tsquery(''english'', ''{words}'') q WHERE {document} @@ q'))"
)
