"""The training store's HTTP API end to end against `meansql serve`, and its SQL door beside it."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import ServerProcess

MODAL = {
    "execution_id": "exec-12345", "task_id": "task-67890", "agent_id": "550e8400-e29b-41d4-a716-446655440000",
    "source_type": "execution_trace", "source_trace_hash": "sha256:abc123",
    "input_text": "Implement a React component for a modal dialog", "input_structured": {"framework": "react"},
    "output_text": "I will create a modal component with...", "expected_actions": [{"tool": "Read"}],
    "final_answer": "Modal component implemented successfully", "quality_score": 85.5, "confidence": 0.92,
    "labels": ["react", "component", "modal"], "domain": "frontend", "task_type": "code_generation", "difficulty": 0.6,
}
LEAK = {
    "source_type": "human_annotated", "input_text": "How do I fix a memory leak in my React app?",
    "output_text": "Memory leaks in React commonly occur from...", "quality_score": 95.0, "confidence": 1.0,
    "labels": ["debugging", "react", "memory"], "domain": "troubleshooting", "task_type": "reasoning", "difficulty": 0.7,
}


def http_url(server: ServerProcess) -> str:
    """The HTTP address the server printed after its pg-wire line."""
    assert server.proc is not None and server.proc.stdout is not None
    for line in itertools.chain(list(server.output), iter(server.proc.stdout.readline, "")):
        if line not in server.output:
            server.output.append(line)
        m = re.search(r"http listening on ([\d.]+):(\d+)", line)
        if m:
            return f"http://{m.group(1)}:{m.group(2)}"
    raise AssertionError("no http line:\n" + "".join(server.output))


@pytest.fixture()
def api(start_server: Callable[..., ServerProcess]) -> tuple[ServerProcess, httpx.Client]:
    server = start_server(provider=False)
    return server, httpx.Client(base_url=http_url(server), timeout=30)


def test_crud_over_http(api: tuple[ServerProcess, httpx.Client]) -> None:
    _, http = api
    r = http.post("/training-examples/", json=MODAL)
    assert r.status_code == 201, r.text
    example = r.json()
    assert {k: example[k] for k in MODAL} == MODAL
    eid = example["id"]
    assert http.get(f"/training-examples/{eid}").json() == example
    r = http.patch(f"/training-examples/{eid}", json={"quality_score": 92.0, "confidence": 0.95, "labels": ["verified"]})
    assert r.status_code == 200 and (r.json()["quality_score"], r.json()["labels"]) == (92.0, ["verified"])
    assert http.delete(f"/training-examples/{eid}").status_code == 204
    assert http.get(f"/training-examples/{eid}").status_code == 404
    assert http.delete(f"/training-examples/{eid}").status_code == 404
    assert http.patch("/training-examples/nope", json={"domain": "x"}).status_code == 404


def test_bad_bodies_are_422_naming_the_field(api: tuple[ServerProcess, httpx.Client]) -> None:
    _, http = api
    for body, field in [({**LEAK, "quality_score": 120}, "quality_score"), ({**LEAK, "task_type": "juggling"}, "task_type"),
                        ({"output_text": "x"}, "input_text"), ({**LEAK, "confidence": 2}, "confidence")]:
        r = http.post("/training-examples/", json=body)
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"][-1] == field
    eid = http.post("/training-examples/", json=LEAK).json()["id"]
    r = http.patch(f"/training-examples/{eid}", json={"difficulty": 3})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "difficulty"


def test_dedup_filters_stats_labels_search(api: tuple[ServerProcess, httpx.Client]) -> None:
    _, http = api
    first = http.post("/training-examples/", json=MODAL).json()
    r = http.post("/training-examples/", json=MODAL)
    assert r.status_code == 409 and r.json()["existing_id"] == first["id"]
    r = http.post("/training-examples/", params={"on_conflict": "skip"}, json={**MODAL, "quality_score": 1})
    assert r.status_code == 200 and r.json()["quality_score"] == 85.5
    r = http.post("/training-examples/", params={"on_conflict": "update"}, json={**MODAL, "quality_score": 88})
    assert r.status_code == 200 and (r.json()["id"], r.json()["quality_score"]) == (first["id"], 88)
    http.post("/training-examples/", json=LEAK)
    page = http.get("/training-examples/", params={"min_quality": 80, "order_by": "quality_score"}).json()
    assert page["total"] == 2 and [e["domain"] for e in page["items"]] == ["troubleshooting", "frontend"]
    assert http.get("/training-examples/", params={"domain": "frontend"}).json()["total"] == 1
    assert http.get("/training-examples/", params={"labels": "memory,modal"}).json()["total"] == 2
    assert http.get("/training-examples/", params={"labels": "memory,modal", "labels_mode": "all"}).json()["total"] == 0
    assert http.get("/training-examples/", params={"created_after": "2100-01-01T00:00:00"}).json()["total"] == 0
    found = http.get("/training-examples/", params={"q": "memory leak"}).json()
    assert [e["domain"] for e in found["items"]] == ["troubleshooting"]
    stats = http.get("/training-examples/stats").json()
    assert stats["total_examples"] == 2 and stats["unique_agents"] == 1 and stats["avg_quality_score"] == pytest.approx(91.5)
    assert stats["domain_distribution"] == {"frontend": 1, "troubleshooting": 1}
    assert stats["source_type_distribution"] == {"execution_trace": 1, "human_annotated": 1}
    assert http.get("/training-examples/stats", params={"domain": "frontend"}).json()["total_examples"] == 1
    assert http.get("/training-examples/labels").json()[0] == {"label": "react", "count": 2}
    assert http.get("/docs").status_code == 200 and "/training-examples/" in http.get("/openapi.json").json()["paths"]


def test_bulk_jsonl_export_and_import_back(start_server: Callable[..., ServerProcess]) -> None:
    source = start_server(provider=False)
    http = httpx.Client(base_url=http_url(source), timeout=30)
    lines = "\n".join([json.dumps(MODAL), json.dumps({**LEAK, "quality_score": 500}), "{not json", json.dumps(LEAK)])
    r = http.post("/training-examples/bulk", content=lines, headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["status"] for x in body["results"]] == ["created", "invalid", "invalid", "created"]
    assert body["results"][1]["field"] == "quality_score" and "line 3" in body["results"][2]["error"]
    r = http.post("/training-examples/bulk", json=[MODAL], params={"on_conflict": "skip"})
    assert r.json()["skipped"] == 1
    r = http.post("/training-examples/bulk", files={"file": ("x.jsonl", json.dumps({**MODAL, "source_trace_hash": "h9"}))})
    assert r.json()["created"] == 1
    exported = http.get("/training-examples/export", params={"format": "jsonl"})
    assert exported.status_code == 200 and len(exported.text.splitlines()) == 3
    chat = http.get("/training-examples/export", params={"format": "openai", "domain": "troubleshooting"}).text.splitlines()
    assert [m["role"] for m in json.loads(chat[0])["messages"]] == ["system", "user", "assistant"] and len(chat) == 1
    assert http.get("/training-examples/export", params={"format": "csv"}).text.startswith("id,")
    assert http.get("/training-examples/export", params={"format": "parquet"}).content[:4] == b"PAR1"

    target = start_server(provider=False, db=source.db.with_name("copy.duckdb"))
    http2 = httpx.Client(base_url=http_url(target), timeout=30)
    r = http2.post("/training-examples/bulk", content=exported.content, headers={"content-type": "application/x-ndjson"})
    assert r.json()["created"] == 3
    again = http2.get("/training-examples/export", params={"format": "jsonl"})
    assert [json.loads(x) for x in again.text.splitlines()] == [json.loads(x) for x in exported.text.splitlines()]


def test_studio_endpoints_and_promotion(api: tuple[ServerProcess, httpx.Client]) -> None:
    server, http = api
    with server.connect() as conn:
        conn.execute("INSERT INTO unified_logs (trace_id, session_id, query_id, cascade_id, cell_name, role, user_input, "
                     "criterion, assistant_output, \"timestamp\") VALUES ('t-1', 'sql-calm-fox-1a2b', 'q-1', "
                     "'semantic_matches', 'evaluate', 'assistant', 'bamboo toothbrush', 'eco-friendly', 'true', now())")
    logs = http.get("/api/training/session-logs", params={"session_id": "sql-calm-fox-1a2b"}).json()["logs"]
    assert [(x["trace_id"], x["trainable"]) for x in logs] == [("t-1", False)]
    r = http.post("/api/training/mark-trainable", json={"trace_ids": ["t-1"], "trainable": True, "verified": True,
                                                        "confidence": 1.0, "notes": "right", "tags": ["eco"]})
    assert r.json()["marked"] == 1
    ex = http.get("/api/training/examples", params={"cascade_id": "semantic_matches"}).json()
    assert [(e["trace_id"], e["verified"], e["tags"]) for e in ex["examples"]] == [("t-1", True, ["eco"])]
    stats = http.get("/api/training/stats", params={"cascade_id": "semantic_matches"}).json()["stats"]
    assert (stats[0]["trainable_count"], stats[0]["verified_count"]) == (1, 1)
    r = http.post("/training-examples/from-trace/t-1")
    assert r.status_code == 201 and (r.json()["source_trace_id"], r.json()["cell_name"]) == ("t-1", "evaluate")
    assert http.post("/training-examples/from-trace/t-1").status_code == 409
    assert http.post("/training-examples/from-trace/nope").status_code == 404
    assert http.get("/api/training/examples", params={"cascade_id": "semantic_matches"}).json()["curated_total"] == 1


def test_no_http_turns_it_off(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--no-http", provider=False)
    with server.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert "http listening" not in server.stop()


def test_sql_and_http_see_each_other(api: tuple[ServerProcess, httpx.Client]) -> None:
    server, http = api
    eid = http.post("/training-examples/", json=MODAL).json()["id"]
    with server.connect() as conn:
        row = conn.execute("SELECT input_text, quality_score, labels FROM training_examples WHERE id = %s", (eid,)).fetchone()
        assert row == (MODAL["input_text"], 85.5, ["react", "component", "modal"])
        conn.execute("UPDATE training_examples SET quality_score = 70 WHERE id = %s", (eid,))
        assert http.get(f"/training-examples/{eid}").json()["quality_score"] == 70
        conn.execute("INSERT INTO training_examples (input_text, domain, quality_score) VALUES ('Sort an array', 'coding', 80)")
        page = http.get("/training-examples/", params={"domain": "coding"}).json()
        assert [e["input_text"] for e in page["items"]] == ["Sort an array"]
        conn.execute("DELETE FROM training_examples WHERE domain = 'coding'")
        assert http.get("/training-examples/", params={"domain": "coding"}).json()["total"] == 0


def _sql_error(conn: psycopg.Connection[Any], sql: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as info:
        conn.execute(sql)
    return info.value


def test_sql_door_validates_like_http(api: tuple[ServerProcess, httpx.Client]) -> None:
    server, _ = api
    with server.connect() as conn:
        e = _sql_error(conn, "INSERT INTO training_examples (input_text, quality_score) VALUES ('x', 101)")
        assert e.sqlstate == "22023" and "field 'quality_score'" in str(e)
        e = _sql_error(conn, "INSERT INTO training_examples (input_text, task_type) VALUES ('x', 'juggling')")
        assert e.sqlstate == "22023" and "field 'task_type'" in str(e)
        # Values that are not literals meet the table's CHECK constraints instead.
        e = _sql_error(conn, "INSERT INTO training_examples (input_text, quality_score) SELECT 'x', 100 + 1")
        assert e.sqlstate == "23514" and "quality_score" in str(e)
        conn.execute("INSERT INTO training_examples (input_text, quality_score) VALUES ('fine', 50)")
        e = _sql_error(conn, "UPDATE training_examples SET confidence = 3")
        assert e.sqlstate == "22023" and "field 'confidence'" in str(e)
        assert conn.execute("SELECT count(*), max(confidence) FROM training_examples").fetchone() == (1, 1.0)
