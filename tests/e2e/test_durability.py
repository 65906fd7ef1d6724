"""Logs and annotations survive a normal stop and a kill -9 after the query returned."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from tests.conftest import ServerProcess, create_products


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "kill-9"])
def test_rows_survive_restart(start_server: Callable[..., ServerProcess], sig: int) -> None:
    server = start_server()
    with server.connect() as conn:
        create_products(conn)
        answers = conn.execute("SELECT id, description MEANS 'eco-friendly' FROM products ORDER BY id").fetchall()
        traces = [r[0] for r in conn.execute("SELECT trace_id FROM unified_logs ORDER BY trace_id").fetchall()]
        conn.execute("INSERT INTO training_annotations (trace_id, trainable, verified, confidence, notes, tags) "
                     "VALUES (%s, true, true, 0.9, 'good', ['a', 'b'])", (traces[0],))
    assert len(traces) == 5
    server.stop(sig)

    again = start_server(db=server.db)
    with again.connect() as conn:
        after = [r[0] for r in conn.execute("SELECT trace_id FROM unified_logs ORDER BY trace_id").fetchall()]
        note = conn.execute("SELECT trace_id, trainable, verified, confidence, notes, tags FROM training_annotations").fetchall()
        # the products table and the same answers (no duplicate log rows)
        assert conn.execute("SELECT count(*) FROM products").fetchone() == (5,)
    assert after == traces
    assert note == [(traces[0], True, True, 0.9, "good", ["a", "b"])]
    assert [a[1] for a in answers] == [True, True, False, True, False]
