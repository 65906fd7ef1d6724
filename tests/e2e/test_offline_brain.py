"""The offline brain over the wire: EMBED, SIMILAR_TO, VECTOR_SEARCH and the local judge, with no provider."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import ServerProcess, collect_notices, create_products

DOCS = [
    (1, "The cat sat on the warm windowsill"),
    (2, "Stock markets fell sharply after the announcement"),
    (3, "A kitten curled up asleep by the fire"),
    (4, "The central bank raised interest rates again"),
    (5, None),
]


def _docs(conn: Any) -> None:
    conn.execute("CREATE TABLE docs (id INT, body VARCHAR)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO docs VALUES (%s, %s)", DOCS)


def test_embed_similar_to_and_vector_search(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(provider=False)
    with server.connect() as conn:
        _docs(conn)
        vec = conn.execute("SELECT EMBED('The cat sat on the warm windowsill')").fetchone()[0]
        assert len(vec) == 384 and math.isclose(math.fsum(x * x for x in vec), 1.0, rel_tol=1e-4)
        assert conn.execute("SELECT EMBED(NULL::VARCHAR) IS NULL").fetchone() == (True,)
        # SIMILAR_TO is the cosine of the two vectors
        same, cosine = conn.execute(
            "SELECT SIMILAR_TO('a kitten', 'a kitten'), "
            "list_dot_product(EMBED('a kitten')::FLOAT[], EMBED('a cat')::FLOAT[]) - SIMILAR_TO('a kitten', 'a cat')"
        ).fetchone()
        assert math.isclose(same, 1.0, rel_tol=1e-5) and abs(cosine) < 1e-5
        rows = conn.execute("SELECT id, round(SIMILAR_TO(body, 'cats'), 3) > 0.3 FROM docs ORDER BY id").fetchall()
        assert rows == [(1, True), (2, False), (3, True), (4, False), (5, None)]
        # VECTOR_SEARCH: the k nearest rows, best first, with their scores
        found = conn.execute("SELECT id, body, score FROM VECTOR_SEARCH('pets sleeping', 'docs', 'body', 2)").fetchall()
        assert [r[0] for r in found] == [3, 1] and found[0][2] >= found[1][2] > 0.2
        direct = conn.execute("SELECT SIMILAR_TO(body, 'pets sleeping') FROM docs WHERE id = 3").fetchone()[0]
        assert math.isclose(found[0][2], direct, rel_tol=1e-6)
        money = conn.execute(
            "SELECT v.id FROM VECTOR_SEARCH('finance and the economy', 'docs', 'body', 2) AS v ORDER BY v.id").fetchall()
        assert money == [(2,), (4,)]
        # in a transaction the search sees its rows, as every other statement of the session does
        with conn.transaction(force_rollback=True):
            conn.execute("INSERT INTO docs VALUES (6, 'Puppies asleep in a basket'), (7, NULL)")
            assert conn.execute("SELECT id FROM VECTOR_SEARCH('pets sleeping', 'docs', 'body', 1)").fetchall() == [(6,)]
        assert conn.execute("SELECT id FROM VECTOR_SEARCH('pets sleeping', 'docs', 'body', 1)").fetchall() == [(3,)]
        # a view has no rowid: its rows are scored in SQL, with the same answer
        conn.execute("CREATE VIEW docs_view AS SELECT * FROM docs")
        assert conn.execute("SELECT id, score FROM VECTOR_SEARCH('pets sleeping', 'docs_view', 'body', 2)").fetchall() == [
            (r[0], r[2]) for r in found]
        assert conn.execute("SELECT count(*) FROM embedding_cache").fetchone()[0] >= 4


def test_a_fresh_install_answers_means_with_the_local_judge(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(provider=False)  # no model, no key, no provider, HF_HUB_OFFLINE=1
    assert "the local judge (local/all-MiniLM-L6-v2" in "".join(server.output)
    with server.connect() as conn:
        notices = collect_notices(conn)
        create_products(conn)
        rows = conn.execute("SELECT id, description MEANS 'eco-friendly' FROM products ORDER BY id").fetchall()
        assert rows == [(1, True), (2, True), (3, False), (4, False), (5, False)]
        assert "semantic_matches: 5 value(s) answered by the local judge (local/all-MiniLM-L6-v2, no LLM call)" in notices
        logs = conn.execute("SELECT DISTINCT model, cost, latency_ms >= 0, error IS NULL FROM unified_logs").fetchall()
        assert logs == [("local/all-MiniLM-L6-v2", 0.0, True, True)]
        # its answers follow the annotations, so they are never cached
        assert conn.execute("SELECT count(*) FROM semantic_cache").fetchone() == (0,)


def test_annotations_change_the_local_judges_answer(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    db = tmp_path / "shared.duckdb"
    query = "SELECT id, description MEANS 'eco-friendly' FROM products ORDER BY id"
    llm = start_server(db=db)  # the stand-in provider says "Reusable steel water bottle" is eco-friendly
    with llm.connect() as conn:
        create_products(conn)
        assert conn.execute(query).fetchall()[3] == (4, True)
        conn.execute("INSERT INTO training_annotations (trace_id, trainable, verified, confidence) "
                     "SELECT trace_id, true, true, 1.0 FROM unified_logs WHERE user_input = 'Reusable steel water bottle'")
    llm.stop()
    local = start_server(db=db, provider=False)
    with local.connect() as conn:
        rows = conn.execute(query).fetchall()
        assert rows == [(1, True), (2, True), (3, False), (4, True), (5, False)]  # alone it said false for 4
        assert conn.execute("SELECT model FROM unified_logs WHERE user_input = 'Reusable steel water bottle' "
                            "ORDER BY timestamp DESC LIMIT 1").fetchone() == ("local/all-MiniLM-L6-v2",)


def _operator(tmp_path: Path, **cell: str) -> Path:
    """The built-in MEANS operator with some cell fields changed, in an operators directory."""
    import yaml

    from semantic_ops.operators import BUILTIN_DIR

    data = yaml.safe_load((BUILTIN_DIR / "semantic_matches.yaml").read_text())
    data["cells"][0].update({k: yaml.safe_load(v) for k, v in cell.items()})
    ops = tmp_path / "ops"
    ops.mkdir(exist_ok=True)
    (ops / "semantic_matches.yaml").write_text(yaml.safe_dump(data))
    return ops


KNOWN = ["Recycled paper notebook", "Organic cotton tote bag", "Plastic wrap roll", "Styrofoam cup", "Diesel generator",
         "Compostable plates"]  # the stand-in says true for the first two and the last, false for the others


def _nearest_examples_prompt(conn: Any, provider: Any, notices: list[str], text: str, known: list[str] = KNOWN) -> str:
    """With the semantic strategy (training_limit 2): the stand-in judges the known texts, every answer is made
    trainable, then ``text`` (eco-friendly) is judged; the prompt of that call, after checking its NOTICE."""
    conn.execute("CREATE TABLE things (t VARCHAR)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO things VALUES (%s)", [(t,) for t in known])
    conn.execute("SELECT t MEANS 'eco-friendly' FROM things").fetchall()
    conn.execute("INSERT INTO training_annotations (trace_id, trainable) SELECT trace_id, true FROM unified_logs")
    provider.requests.clear()
    assert conn.execute(f"SELECT '{text}' MEANS 'eco-friendly'").fetchone() == (True,)
    assert "Injected 2 training examples (semantic strategy)" in notices
    prompt: str = provider.requests[-1]["body"]["messages"][0]["content"]
    assert "<input>Recycled paper notebook</input>" in prompt and prompt.count("<input>") == 2, prompt
    return prompt


def test_semantic_strategy_injects_the_nearest_examples(start_server: Callable[..., ServerProcess], tmp_path: Path,
                                                        fresh_provider: Any) -> None:
    ops = _operator(tmp_path, training_strategy="semantic", training_limit="2")
    server = start_server("--operators-dir", str(ops))
    with server.connect() as conn:
        prompt = _nearest_examples_prompt(conn, fresh_provider, collect_notices(conn), "Recycled cardboard notebook")
    # the nearest true example and the nearest false one (the stand-in said false for plastic, styrofoam, diesel)
    falses = [t for t in ("Plastic wrap roll", "Styrofoam cup", "Diesel generator") if f"<input>{t}</input>" in prompt]
    assert len(falses) == 1, prompt


def test_cascade_sends_only_unsure_rows_to_the_llm(start_server: Callable[..., ServerProcess], tmp_path: Path,
                                                   fresh_provider: Any) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT, server_env

    ops = _operator(tmp_path, cascade="{proxy: local, min_confidence: 0.8}")
    db = tmp_path / "cascade.duckdb"
    server = start_server("--operators-dir", str(ops), db=db)
    with server.connect() as conn:
        notices = collect_notices(conn)
        create_products(conn)
        # with no annotated example the local judge is never sure enough: the LLM answers every row
        rows = conn.execute("SELECT id, description MEANS 'eco-friendly' FROM products ORDER BY id").fetchall()
        assert rows == [(1, True), (2, True), (3, False), (4, True), (5, False)]
        assert fresh_provider.attempts == 5
        conn.execute("INSERT INTO training_annotations (trace_id, trainable, verified) "
                     "SELECT trace_id, true, true FROM unified_logs WHERE role = 'assistant'")
        fresh_provider.reset()
        conn.execute("CREATE TABLE more (id INT, description VARCHAR)")
        conn.execute("INSERT INTO more VALUES (1, 'Bamboo cutting board'), (2, 'Plastic shopping bag'), "
                     "(3, 'Organic cotton socks'), (4, 'Solar powered lamp'), (5, 'Leather office chair')")
        rows = conn.execute("SELECT id, description MEANS 'eco-friendly' FROM more ORDER BY id").fetchall()
        assert rows == [(1, True), (2, False), (3, True), (4, False), (5, False)]
        # near the annotated examples, the local judge is sure; the other two went to the LLM
        assert fresh_provider.attempts == 2
        by = dict(conn.execute("SELECT user_input, model FROM unified_logs WHERE role = 'assistant' "
                               "AND user_input IN (SELECT description FROM more)").fetchall())
        assert by == {"Bamboo cutting board": "local/all-MiniLM-L6-v2", "Plastic shopping bag": "local/all-MiniLM-L6-v2",
                      "Organic cotton socks": "local/all-MiniLM-L6-v2", "Solar powered lamp": "openai/stand-in",
                      "Leather office chair": "openai/stand-in"}
        assert "semantic_matches: cascade: 3 value(s) answered by the local judge, 2 by the model" in notices
    server.stop()
    out = subprocess.run([sys.executable, "-m", "server.cli", "training", "calibrate", "semantic_matches", "--db", str(db),
                          "--precision", "0.95"],
                         cwd=ROOT, env=server_env(None), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "(all)" in out.stdout and "min_confidence" in out.stdout
    again = start_server("--operators-dir", str(ops), db=db)
    with again.connect() as conn:
        row = conn.execute("SELECT criterion, target_precision, examples FROM judge_calibration").fetchall()
        assert row == [(None, 0.95, 5)]


def test_works_with_networking_off(tmp_path: Path) -> None:
    """In a network namespace of its own (no interface up, not even loopback), MEANS and the SQL functions still answer."""
    import shutil
    import subprocess
    import sys

    import pytest

    from tests.conftest import ROOT, server_env

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -rn (a network namespace) is not available here")
    sql = ("SELECT 'Eco-friendly bamboo toothbrush' MEANS 'eco-friendly' AS eco, 'Disposable plastic fork' MEANS 'eco-friendly' AS fork, "
           "round(SIMILAR_TO('a kitten', 'a kitten'), 3) AS same, len(EMBED('x')) AS dims")
    env = server_env(None)
    env.pop("HF_HUB_OFFLINE")  # the server sets it itself
    out = subprocess.run(["unshare", "-rn", sys.executable, "-m", "server.cli", "sql", "query", sql, "--db", str(tmp_path / "off.duckdb"),
                          "--format", "json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"eco": True, "fork": False, "same": 1.0, "dims": 384}]
    assert "answered by the local judge" in out.stderr


def test_calibrate_through_a_running_server(start_server: Callable[..., ServerProcess]) -> None:
    """`meansql training calibrate --url` measures the thresholds in the server, which holds the file and the model."""
    import subprocess
    import sys

    from tests.conftest import ROOT, server_env

    server = start_server(provider=False)
    with server.connect() as conn:
        create_products(conn)
        conn.execute("SELECT id, description MEANS 'eco-friendly' FROM products ORDER BY id").fetchall()
        conn.execute("INSERT INTO training_annotations (trace_id, trainable, verified) "
                     "SELECT trace_id, true, true FROM unified_logs WHERE role = 'assistant'")
    out = subprocess.run([sys.executable, "-m", "server.cli", "training", "calibrate", "semantic_matches",
                          "--url", server.url, "--precision", "0.9"],
                         cwd=ROOT, env=server_env(None), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "(all)" in out.stdout and "min_confidence" in out.stdout and "5" in out.stdout
    with server.connect() as conn:
        assert conn.execute("SELECT criterion, target_precision, examples FROM judge_calibration").fetchall() == [
            (None, 0.9, 5)]
    wrong = subprocess.run([sys.executable, "-m", "server.cli", "training", "calibrate", "no_such_operator",
                            "--url", server.url], cwd=ROOT, env=server_env(None), capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 1 and "no operator 'no_such_operator'" in wrong.stderr


def test_a_litellm_embedding_model_from_the_config(start_server: Callable[..., ServerProcess], tmp_path: Path,
                                                   fresh_provider: Any) -> None:
    """embedding_model names a litellm model: vectors come from the provider's /v1/embeddings, at its width."""
    from tests.fake_provider import vector

    fresh_provider.behaviour.embedding_dim = 48
    ops = _operator(tmp_path, training_strategy="semantic", training_limit="2")
    server = start_server("--operators-dir", str(ops), MEANSQL_EMBEDDING_MODEL="openai/stand-in-embedding")
    with server.connect() as conn:
        notices = collect_notices(conn)
        vec = conn.execute("SELECT EMBED('The cat sat on the mat')").fetchone()[0]
        assert len(vec) == 48
        assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(vec, vector("The cat sat on the mat", 48)))
        assert fresh_provider.embedding_calls == 1 and fresh_provider.embedding_inputs == [["The cat sat on the mat"]]
        # cached: the same text again costs no call
        again = conn.execute("SELECT EMBED('The cat sat on the mat')").fetchone()[0]
        assert again == vec and fresh_provider.embedding_calls == 1
        # SIMILAR_TO and VECTOR_SEARCH at the model's width
        assert math.isclose(conn.execute("SELECT SIMILAR_TO('red apple pie', 'red apple pie')").fetchone()[0], 1.0,
                            rel_tol=1e-5)
        conn.execute("CREATE TABLE docs (id INT, body VARCHAR)")
        conn.execute("INSERT INTO docs VALUES (1, 'red apple pie'), (2, 'stock market crash'), (3, 'green apple tart'), "
                     "(4, 'bond market rally')")
        found = conn.execute("SELECT id FROM VECTOR_SEARCH('apple pie recipe', 'docs', 'body', 2)").fetchall()
        assert found == [(1,), (3,)]
        # the semantic strategy picks examples with the same vectors
        _nearest_examples_prompt(conn, fresh_provider, notices, "Recycled paper folder", KNOWN[:4])
        cached = conn.execute("SELECT DISTINCT model, len(vector) FROM embedding_vectors").fetchall()
        assert cached == [("openai/stand-in-embedding", 48)]
        assert conn.execute("SELECT count(*) FROM embedding_cache").fetchone() == (0,)
    # each distinct text went to the provider once: 2 + 3 docs + the search + 4 examples + the new input
    sent = [t for batch in fresh_provider.embedding_inputs for t in batch]
    assert fresh_provider.stats()["embedded_texts"] == len(sent) == len(set(sent)) == 11


def test_large_searches_go_through_an_hnsw_index(start_server: Callable[..., ServerProcess], tmp_path: Path,
                                                 fresh_provider: Any) -> None:
    """Above vector_index_threshold, VECTOR_SEARCH and the semantic strategy read an HNSW index: same answers."""
    ops = _operator(tmp_path, training_strategy="semantic", training_limit="2")
    server = start_server("--operators-dir", str(ops), MEANSQL_VECTOR_INDEX_THRESHOLD="4")
    with server.connect() as conn:
        notices = collect_notices(conn)
        _docs(conn)
        exact = conn.execute("SELECT id, SIMILAR_TO(body, 'pets sleeping') AS s FROM docs WHERE body IS NOT NULL "
                             "ORDER BY s DESC LIMIT 3").fetchall()
        found = conn.execute("SELECT id, body, score FROM VECTOR_SEARCH('pets sleeping', 'docs', 'body', 3)").fetchall()
        assert [r[0] for r in found] == [r[0] for r in exact] and found[0][0] == 3
        assert all(math.isclose(f[2], e[1], abs_tol=1e-4) for f, e in zip(found, exact))
        assert found[0][1] == "A kitten curled up asleep by the fire"
        # that search was answered exactly while the index is built in the background; once it is ready the
        # same search reads it, with the same answer
        built = "SELECT count(*) FROM duckdb_indexes() WHERE database_name = 'meansql_vectors'"
        deadline = time.monotonic() + 60
        while conn.execute(built).fetchone() != (1,):
            assert time.monotonic() < deadline, "no HNSW index built within 60 s"
            time.sleep(0.2)
        indexed = conn.execute("SELECT id, body, score FROM VECTOR_SEARCH('pets sleeping', 'docs', 'body', 3)").fetchall()
        assert [r[:2] for r in indexed] == [r[:2] for r in found]
        assert all(math.isclose(i[2], f[2], abs_tol=1e-5) for i, f in zip(indexed, found))
        # a new row changes the table: it goes into the index, which finds it
        conn.execute("INSERT INTO docs VALUES (6, 'Puppies asleep in a basket')")
        again = conn.execute("SELECT v.id FROM VECTOR_SEARCH('pets sleeping', 'docs', 'body', 2) AS v").fetchall()
        assert 6 in [r[0] for r in again]
        _nearest_examples_prompt(conn, fresh_provider, notices, "Recycled cardboard notebook")
    log = " ".join(server.stop().split())  # as one line, however the console wrapped it
    # the new row went into the index in place; the examples' index was built
    assert "HNSW index of 4 vectors built" in log and "HNSW index of 5 vectors updated" in log
    assert "HNSW index of 6 vectors built" in log
    # vss was loaded before DuckDB was locked, and the builder stopped with the server
    assert "stays exact" not in log and "Traceback" not in log
