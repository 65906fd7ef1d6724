"""The README walkthrough, driven through real psql and psycopg against `meansql serve`."""

from __future__ import annotations

import psycopg

from tests.conftest import PRODUCTS, ServerProcess, collect_notices, create_products, psql
from tests.fake_provider import FakeProvider

QUERY = "SELECT id, description, description MEANS 'eco-friendly' AS is_eco FROM products ORDER BY id"


def system_prompts(provider: FakeProvider) -> list[str]:
    return [m["content"] for r in provider.requests for m in r["body"]["messages"] if m["role"] == "system"]


def test_walkthrough_psql(server: ServerProcess, fresh_provider: FakeProvider) -> None:
    setup = psql(server.url,
                 "CREATE TABLE products (id INT, description VARCHAR)",
                 "INSERT INTO products VALUES " + ", ".join(f"({i}, '{d}')" for i, d in PRODUCTS))
    assert "INSERT 0 5" in setup.stdout

    first = psql(server.url, QUERY)
    assert "NOTICE:  No training examples available yet for evaluate" in first.stderr
    lines = [line.split("|") for line in first.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [(int(r[0]), r[2].strip()) for r in lines] == [(1, "t"), (2, "t"), (3, "f"), (4, "t"), (5, "f")]
    assert len(fresh_provider.requests) == 5

    with server.connect() as conn:
        rows = conn.execute(
            "SELECT trace_id, user_input, assistant_output, session_id, model, cascade_id, cell_name, role, "
            "JSONExtractString(full_request_json, '$.messages[-1].content') AS prompt, "
            "JSONExtractString(content_json, '$.content') AS output "
            "FROM unified_logs WHERE cascade_id = 'semantic_matches' AND role = 'assistant' "
            "ORDER BY timestamp DESC"
        ).fetchall()
    assert len(rows) == 5
    by_input = {r[1]: r for r in rows}
    assert by_input["Plastic water bottle"][2] == "false"
    assert by_input["Plastic water bottle"][9] == "false"
    assert "Text: Plastic water bottle" in by_input["Plastic water bottle"][8]
    assert rows[0][3].startswith("sql-") and rows[0][4] == "openai/stand-in"
    assert {(r[5], r[6], r[7]) for r in rows} == {("semantic_matches", "evaluate", "assistant")}

    chosen = [by_input[t][0] for t in ("Eco-friendly bamboo toothbrush", "Sustainable cotton t-shirt",
                                       "Plastic water bottle")]
    psql(server.url, "INSERT INTO training_annotations (trace_id, trainable, verified, confidence) VALUES "
         f"('{chosen[0]}', true, true, 1.0), ('{chosen[1]}', true, true, 1.0), ('{chosen[2]}', true, false, 0.9)")

    fresh_provider.reset()
    again = psql(server.url, QUERY)
    assert "NOTICE:  Injected 3 training examples (recent strategy)" in again.stderr
    prompts = system_prompts(fresh_provider)
    assert len(prompts) == 5
    for p in prompts:
        assert "<input>Eco-friendly bamboo toothbrush</input>" in p
        assert "<input>Plastic water bottle</input>" in p
        assert p.count("<example>") == 3

    stats = psql(server.url, "SELECT cascade_id, trainable_count, verified_count FROM training_stats_by_cascade")
    assert "semantic_matches |               3 |              2" in stats.stdout


def test_psycopg_parameters_and_notices(server: ServerProcess, fresh_provider: FakeProvider) -> None:
    with server.connect() as conn:
        notices = collect_notices(conn)
        create_products(conn)
        rows = conn.execute(
            "SELECT id FROM products WHERE description MEANS %s AND id > %s ORDER BY id", ("eco-friendly", 1)
        ).fetchall()
        assert rows == [(2,), (4,)]
        # A slow machine may add progress NOTICEs ("... distinct values judged"); they are not the point here.
        assert [n for n in notices if "distinct values judged" not in n] == ["No training examples available yet for evaluate"]
        # a column called means still works, and NOT MEANS in WHERE
        conn.execute("CREATE TABLE t (means VARCHAR)")
        conn.execute("INSERT INTO t VALUES ('organic apples'), ('steel pipes')")
        assert conn.execute("SELECT means FROM t WHERE NOT means MEANS 'eco-friendly'").fetchall() == [("steel pipes",)]
        count = conn.execute("SELECT count(*) FROM products").fetchone()
        assert count == (5,)


def test_annotating_again_updates_last_write_wins(server: ServerProcess) -> None:
    with server.connect() as conn:
        create_products(conn)
        conn.execute("SELECT description MEANS 'eco-friendly' FROM products")
        trace = conn.execute("SELECT trace_id FROM unified_logs LIMIT 1").fetchone()[0]
        conn.execute("INSERT INTO training_annotations (trace_id, trainable, confidence) VALUES (%s, true, 0.5)", (trace,))
        conn.execute("INSERT INTO training_annotations (trace_id, trainable, confidence, notes) VALUES (%s, false, 0.7, 'no')",
                     (trace,))
        rows = conn.execute("SELECT trainable, confidence, notes FROM training_annotations").fetchall()
        assert rows == [(False, 0.7, "no")]
        view = conn.execute("SELECT trainable FROM training_examples_with_annotations WHERE trace_id = %s", (trace,)).fetchall()
        assert view == [(False,)]
        with psycopg.connect(server.url) as other:
            n = other.execute("SELECT count(*) FROM training_examples_with_annotations WHERE NOT trainable").fetchone()
            assert n == (5,)


def test_retroactive_annotation_by_insert_select(server: ServerProcess, fresh_provider: FakeProvider) -> None:
    with server.connect() as conn:
        notices = collect_notices(conn)
        create_products(conn)
        conn.execute("SELECT description MEANS 'eco-friendly' FROM products")
        conn.execute(
            "INSERT INTO training_annotations (trace_id, trainable, confidence) "
            "SELECT trace_id, true, 1.0 FROM training_examples_mv "
            "WHERE cascade_id = 'semantic_matches' AND timestamp > now() - INTERVAL 1 DAY LIMIT 10"
        )
        fresh_provider.reset()
        notices.clear()
        conn.execute("SELECT 'Organic cotton bag' MEANS 'eco-friendly'")
        assert notices == ["Injected 5 training examples (recent strategy)"]
        assert system_prompts(fresh_provider)[0].count("<example>") == 5

