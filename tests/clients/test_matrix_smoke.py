"""The matrix itself: both targets answer the same simple query the same way."""

from __future__ import annotations

from tests.clients.conftest import Target


def test_both_targets_answer(target: Target) -> None:
    with target.connect() as conn:
        row = conn.execute("SELECT 1 + 1 AS two, 'x' || 'y' AS xy").fetchone()
    assert row == (2, "xy")
