"""`meansql training import|export|promote`, on the file and through a running server's HTTP API."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ServerProcess, server_env
from tests.e2e.test_cli import meansql
from tests.e2e.test_store_api import LEAK, MODAL, http_url


def test_import_export_promote_on_the_file(tmp_path: Path) -> None:
    env = server_env(None)
    db = str(tmp_path / "t.duckdb")
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([json.dumps(MODAL), json.dumps(LEAK), json.dumps({**LEAK, "difficulty": 7})]) + "\n")
    r = meansql("training", "import", str(src), "--db", db, env=env, check=False)
    assert r.returncode == 1 and "2 created, 1 invalid" in r.stdout and "line 3: invalid: field 'difficulty'" in r.stderr
    r = meansql("training", "import", str(src), "--db", db, "--on-conflict", "skip", env=env, check=False)
    assert "1 created, 1 invalid, 1 skipped" in r.stdout  # LEAK has no hash, so it is new again
    out = tmp_path / "chat.jsonl"
    r = meansql("training", "export", "--format", "openai", "-o", str(out), "--domain", "frontend", "--db", db, env=env)
    assert "(1 examples)" in r.stdout
    (line,) = out.read_text().splitlines()
    assert json.loads(line)["messages"][1] == {"role": "user", "content": MODAL["input_text"]}
    meansql("sql", "query", "INSERT INTO unified_logs (trace_id, cascade_id, cell_name, role, user_input, assistant_output) "
            "VALUES ('t-7', 'semantic_matches', 'evaluate', 'assistant', 'bamboo', 'true')", "--db", db, env=env)
    r = meansql("training", "promote", "t-7", "--db", db, env=env)
    assert r.stdout.startswith("t-7 -> ") and "(created)" in r.stdout
    r = meansql("training", "promote", "t-7", "--db", db, env=env, check=False)
    assert r.returncode == 1 and "23505" in r.stderr


def test_import_and_export_through_the_api(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = start_server(provider=False)
    api = http_url(server)
    env = server_env(None)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(MODAL) + "\n" + json.dumps(LEAK) + "\n")
    assert "2 created" in meansql("training", "import", str(src), "--api", api, env=env).stdout
    out = tmp_path / "out.jsonl"
    meansql("training", "export", "-o", str(out), "--api", api, env=env)
    back = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(b["input_text"] for b in back) == sorted([MODAL["input_text"], LEAK["input_text"]])
    with server.connect() as conn:
        assert conn.execute("SELECT count(*) FROM training_examples").fetchone() == (2,)
