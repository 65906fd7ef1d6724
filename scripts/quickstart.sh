#!/usr/bin/env bash
# The main job, end to end on a fresh machine: install, serve an embedded DuckDB
# file, ask a MEANS query over psql, annotate three answers, ask again and see
# them injected. With MEANSQL_MODEL unset the local judge answers (the packaged
# all-MiniLM-L6-v2 embedding model: offline, no key); set MEANSQL_MODEL (and
# MEANSQL_API_BASE, a key) to have an LLM judge instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

work=$(mktemp -d)
port=${MEANSQL_PORT:-15432}
cleanup() { kill "${server_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
export HF_HUB_OFFLINE=1  # the embedding model ships in a package; nothing is downloaded

.venv/bin/meansql serve --db "$work/meansql.duckdb" --port "$port" >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
cat "$work/serve.log"

PSQL=(psql -X -v ON_ERROR_STOP=1 "postgresql://localhost:$port/default")
QUERY="SELECT id, description, description MEANS 'eco-friendly' AS is_eco FROM products ORDER BY id;"

echo "== 1. create a table and ask a MEANS query"
"${PSQL[@]}" <<'SQL'
CREATE TABLE products (id INT, description VARCHAR);
INSERT INTO products VALUES
  (1, 'Eco-friendly bamboo toothbrush'),
  (2, 'Sustainable cotton t-shirt'),
  (3, 'Plastic water bottle'),
  (4, 'Reusable steel water bottle'),
  (5, 'Disposable plastic fork');
SQL
"${PSQL[@]}" -c "$QUERY" 2>&1

echo "== 2. every model call is a row in unified_logs"
"${PSQL[@]}" -c "SELECT trace_id, user_input, assistant_output FROM unified_logs WHERE cascade_id = 'semantic_matches' ORDER BY user_input;"

echo "== 3. mark three answers as training examples"
"${PSQL[@]}" -c "INSERT INTO training_annotations (trace_id, trainable, verified, confidence)
  SELECT trace_id, true, true, 1.0 FROM unified_logs
  WHERE user_input IN ('Eco-friendly bamboo toothbrush', 'Plastic water bottle', 'Reusable steel water bottle');"

echo "== 4. the same query again: the examples now count (an LLM's prompt carries them, the local judge votes with them)"
"${PSQL[@]}" -c "$QUERY" 2>&1
"${PSQL[@]}" -c "SELECT * FROM training_stats_by_cascade;"
