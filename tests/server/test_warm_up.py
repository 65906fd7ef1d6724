"""Start-up warm-up: what the first semantic query would otherwise pay for is paid before it arrives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: this test process has imported pyarrow.dataset long ago.
SCRIPT = """
import sys
from pathlib import Path
from server.app import App
from server.config import Settings

app = App(Settings(db=Path(sys.argv[1]), model="openai/stand-in", api_base="http://127.0.0.1:9/v1"))
try:
    print("before", "pyarrow.dataset" in sys.modules)
    warmed = []
    app.judge.warm_up = warmed.append  # litellm's own warm-up has its tests; this one is about the store
    app._warm_up()
    print("after", "pyarrow.dataset" in sys.modules)
    print("judge", warmed)
    print("cached", app.store.database.execute("SELECT count(*) FROM semantic_cache").fetchone()[0])
finally:
    app.close()
"""


def test_warm_up_does_the_answer_caches_first_lookup_and_writes_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "meansql.duckdb")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == ["before False", "after True", "judge ['openai/stand-in']", "cached 0"], done.stdout + done.stderr
