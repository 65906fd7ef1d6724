"""CancelRequest: only the right key cancels, each cancel hits only its own session, nothing starts after it."""

from __future__ import annotations

import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from tests.conftest import ServerProcess, wait_for
from tests.fake_provider import FakeProvider, decide

CANCEL_REQUEST_CODE = 80877102


def _cancel_request(port: int, pid: int, secret: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(struct.pack("!iiII", 16, CANCEL_REQUEST_CODE, pid, secret))
        s.recv(1)  # the server closes the connection without a word


def _items(conn: psycopg.Connection[Any], table: str, texts: list[str]) -> None:
    conn.execute(f"CREATE TABLE {table} (id INTEGER, d VARCHAR)")
    with conn.cursor().copy(f"COPY {table} FROM STDIN") as cp:
        for i, t in enumerate(texts):
            cp.write_row((i, t))


def test_a_wrong_key_cancels_nothing(server: ServerProcess, fresh_provider: FakeProvider) -> None:
    texts = [f"bamboo cup {i}" if i % 2 else f"plastic cup {i}" for i in range(6)]
    with server.connect() as conn:
        _items(conn, "wrong_key_items", texts)
        conn.execute("SELECT 'warm' MEANS 'up'")  # the first call loads the model client
        fresh_provider.reset()
        fresh_provider.behaviour.delay = 1.5
        result: list[Any] = []
        t = threading.Thread(target=lambda: result.append(
            conn.execute("SELECT id FROM wrong_key_items WHERE d MEANS 'eco-friendly' ORDER BY id").fetchall()))
        t.start()
        wait_for(lambda: fresh_provider.requests, what="the first model request")
        pid = conn.info.backend_pid
        _cancel_request(server.port, pid, secrets.randbits(32))  # the right process, a wrong secret
        _cancel_request(server.port, pid ^ 0x5A5A, secrets.randbits(32))  # a process that does not exist
        t.join(30)
        assert result == [[(i,) for i, text in enumerate(texts) if decide("eco-friendly", text)]]
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_hundred_concurrent_cancels_each_hit_only_their_own_session(
    start_server: Callable[..., ServerProcess], fresh_provider: FakeProvider
) -> None:
    sessions = 140  # 100 cancelled, 40 left to finish
    # Every session's call in flight at once (the judge's in-flight limit is shared by the process's sessions).
    server = start_server(MEANSQL_MAX_CONNECTIONS="200", MEANSQL_MAX_CONCURRENCY="200", MEANSQL_REQUEST_TIMEOUT="60")
    with server.connect() as conn:
        _items(conn, "many_items", [f"bamboo mat {i}" for i in range(sessions)])
        conn.execute("SELECT 'warm' MEANS 'up'")
    fresh_provider.reset()
    # Answers take 25 s: 140 queries starting at once on 2 cores take seconds to all have their call in flight,
    # and none may be answered before the cancels.
    fresh_provider.behaviour.delay = 25.0
    conns = [server.connect() for _ in range(sessions)]
    outcomes: dict[int, Any] = {}
    started = threading.Barrier(sessions + 1)

    def run(i: int) -> None:
        started.wait(30)
        try:
            outcomes[i] = conns[i].execute(f"SELECT id FROM many_items WHERE id = {i} AND d MEANS 'eco-friendly'").fetchall()
        except psycopg.Error as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    started.wait(30)
    wait_for(lambda: fresh_provider.stats()["requests"] >= sessions, 60, "every session's model call")
    cancelled = range(100)
    cancellers = [threading.Thread(target=conns[i].cancel) for i in cancelled]
    t0 = time.monotonic()
    for c in cancellers:
        c.start()
    for c in cancellers:
        c.join(10)
    for t in threads[: len(cancelled)]:
        t.join(10)
    took = time.monotonic() - t0
    assert all(t.is_alive() for t in threads[100:])  # the others still wait for their answers
    for t in threads[100:]:
        t.join(60)
    try:
        assert all(isinstance(outcomes[i], psycopg.errors.QueryCanceled) for i in cancelled), \
            {i: outcomes.get(i) for i in cancelled if not isinstance(outcomes.get(i), psycopg.errors.QueryCanceled)}
        assert {i: outcomes[i] for i in range(100, sessions)} == {i: [(i,)] for i in range(100, sessions)}
        assert took < 5.0
        # Each session goes on.
        assert [c.execute("SELECT 1").fetchone() for c in conns[:5]] == [(1,)] * 5
    finally:
        for c in conns:
            c.close()


def test_no_model_call_starts_after_a_cancel(start_server: Callable[..., ServerProcess], fresh_provider: FakeProvider) -> None:
    server = start_server(MEANSQL_MAX_CONCURRENCY="2")  # 20 values: calls go out two at a time
    with server.connect() as conn:
        _items(conn, "slow_items", [f"cotton bag {i}" for i in range(20)])
        conn.execute("SELECT 'warm' MEANS 'up'")
        fresh_provider.reset()
        fresh_provider.behaviour.delay = 0.4
        failure: list[BaseException] = []

        def run() -> None:
            try:
                conn.execute("SELECT id FROM slow_items WHERE d MEANS 'eco-friendly'").fetchall()
            except BaseException as exc:  # checked below
                failure.append(exc)

        t = threading.Thread(target=run)
        t.start()
        wait_for(lambda: fresh_provider.stats()["requests"] >= 3, 30, "the second wave of calls")
        t0 = time.monotonic()
        conn.cancel()
        t.join(10)
        assert time.monotonic() - t0 < 0.5
        assert len(failure) == 1 and isinstance(failure[0], psycopg.errors.QueryCanceled)
        sent = fresh_provider.stats()["requests"]
        time.sleep(1.0)
        assert fresh_provider.stats()["requests"] == sent < 20
        assert conn.execute("SELECT 1").fetchone() == (1,)


