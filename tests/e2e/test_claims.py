"""Sessions of one server that need the same uncached value at once judge it once (the DuckDB file's claims)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tests.conftest import PRODUCTS, ServerProcess, create_products
from tests.fake_provider import FakeProvider

CLIENTS = 6


def test_concurrent_sessions_judge_each_value_once(start_server: Callable[..., ServerProcess], fresh_provider: FakeProvider) -> None:
    server = start_server()
    with server.connect() as conn:
        create_products(conn)
    fresh_provider.behaviour.delay = 0.5
    results: list[list[tuple[Any, ...]]] = []
    failures: list[BaseException] = []
    go = threading.Barrier(CLIENTS)

    def client() -> None:
        try:
            with server.connect() as conn:
                go.wait(timeout=30)
                results.append(conn.execute("SELECT id FROM products WHERE description MEANS 'eco-friendly' ORDER BY id").fetchall())
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == []
    assert results == [[(1,), (2,), (4,)]] * CLIENTS
    assert fresh_provider.stats()["requests"] == len(PRODUCTS)
    with server.connect() as conn:
        assert conn.execute("SELECT count(*) FROM unified_logs WHERE role = 'assistant'").fetchone() == (len(PRODUCTS),)
        assert conn.execute("SELECT count(*) FROM semantic_cache").fetchone() == (len(PRODUCTS),)
