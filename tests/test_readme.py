"""The README is the runnable tour: it names every setting, flag and operator field, and its main command runs."""

from __future__ import annotations

import os
import re
import socket
import subprocess

import click
import typer.main

from semantic_ops.operators import Cell, Operator, SqlFunction
from server.cli import app
from server.config import Settings
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    for name in Settings.model_fields:
        assert f"`{name}`" in README and Settings.env_name(name) in README, name


def _commands(cmd: click.Command, prefix: str) -> list[tuple[str, click.Command]]:
    if isinstance(cmd, click.Group):
        return [c for name, sub in cmd.commands.items() for c in _commands(sub, f"{prefix} {name}")]
    return [(prefix, cmd)]


def test_every_cli_command_and_option_is_documented() -> None:
    for path, cmd in _commands(typer.main.get_command(app), "meansql"):
        line = next((row for row in README.splitlines() if f"`{path} " in row or f"`{path}`" in row), None)
        assert line is not None, path
        for param in cmd.params:
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help":
                    assert opt in line, (path, opt)


def test_every_operator_field_is_documented() -> None:
    for model in (Operator, Cell, SqlFunction):
        for name in model.model_fields:
            if name == "source":
                continue
            assert re.search(rf"\b{name}\b", README), (model.__name__, name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_quickstart_runs_the_main_job() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEANSQL_")}
    env.update(MEANSQL_PORT=str(_free_port()))
    out = subprocess.run(["bash", "scripts/quickstart.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "model: the local judge (local/all-MiniLM-L6-v2, offline)" in text
    assert "NOTICE:  No training examples available yet for evaluate" in text
    assert "NOTICE:  semantic_matches: 5 value(s) answered by the local judge (local/all-MiniLM-L6-v2, no LLM call)" in text
    assert "NOTICE:  Injected 3 training examples (recent strategy)" in text
    assert re.search(r"1 \| Eco-friendly bamboo toothbrush\s+\| t", text)
    assert re.search(r"3 \| Plastic water bottle\s+\| f", text)
    assert re.search(r"semantic_matches \| evaluate\s+\|\s+10 \|\s+3 \|\s+3", text)
