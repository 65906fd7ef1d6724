"""Settings precedence: flag, environment, meansql.yaml, default."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ConfigError, Settings


def test_precedence(tmp_path: Path) -> None:
    (tmp_path / "meansql.yaml").write_text("model: from-yaml\nport: 1111\nmax_concurrency: 8\n")
    db = tmp_path / "x.duckdb"
    s = Settings.load(overrides={"db": db, "port": 2222}, environ={"MEANSQL_MODEL": "from-env"})
    assert (s.model, s.port, s.max_concurrency, s.host) == ("from-env", 2222, 8, "127.0.0.1")


def test_bad_value_names_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="setting 'max_concurrency' \\(MEANSQL_MAX_CONCURRENCY"):
        Settings.load(overrides={"db": tmp_path / "x.duckdb"}, environ={"MEANSQL_MAX_CONCURRENCY": "0"})
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(config=tmp_path / "missing.yaml", environ={})
