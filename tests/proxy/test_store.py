"""The store in PostgreSQL: several meansql processes in front of one database share its log, cache and examples."""

from __future__ import annotations

import json
import re
import signal
import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

import training
from tests.clients.conftest import PostgresServer
from tests.conftest import ServerProcess, collect_notices, wait_for
from tests.fake_provider import FakeProvider
from tests.proxy.conftest import WORDS

CLIENTS = 16


def connect(server: ServerProcess) -> psycopg.Connection[Any]:
    return server.connect(prepare_threshold=None)  # semantic statements go as simple queries


def test_a_second_process_answers_from_the_shared_cache_and_annotations_are_injected_everywhere(
    start_proxy: Callable[..., ServerProcess], provider: FakeProvider, items: tuple[str, str]
) -> None:
    table, tag = items
    first, second = start_proxy(), start_proxy()
    query = f"SELECT id FROM {table} WHERE label MEANS 'bamboo' ORDER BY id"
    with connect(first) as a, connect(second) as b:
        assert a.execute(query).fetchall() == [(1,), (3,)]
        assert provider.stats()["requests"] == 4
        # The log is in PostgreSQL: a relayed plain query reads it, unqualified.
        logged = a.execute(
            "SELECT user_input, answer, role, cache_hit FROM unified_logs WHERE user_input LIKE %s ORDER BY user_input",
            [f"%{tag}"],
        ).fetchall()
        assert logged == [
            (f"bamboo brush {tag}", True, "assistant", False),
            (f"bamboo mat {tag}", True, "assistant", False),
            (f"plastic fork {tag}", False, "assistant", False),
            (f"steel pan {tag}", False, "assistant", False),
        ]
        notices = collect_notices(b)
        assert b.execute(query).fetchall() == [(1,), (3,)]
        assert provider.stats()["requests"] == 4  # no call: the first process's answers
        assert "semantic_matches: 4 answer(s) from cache, 0 judged by the model" in notices
        # An annotation through the second process, as plain SQL relayed to PostgreSQL ...
        b.execute(
            "INSERT INTO training_annotations (trace_id, trainable, verified, confidence) "
            "SELECT trace_id, true, true, 1.0 FROM unified_logs WHERE user_input = %s",
            [f"bamboo mat {tag}"],
        )
        assert b.execute(
            "SELECT count(*) FROM training_examples_with_annotations WHERE user_input = %s AND trainable", [f"bamboo mat {tag}"]
        ).fetchone() == (1,)
        # ... is injected by the first at its next query (the prompts change, so they are judged again).
        notices = collect_notices(a)
        assert a.execute(f"SELECT id FROM {table} WHERE label MEANS 'bamboo' AND id < 3 ORDER BY id").fetchall() == [(1,)]
    # Other tests' annotations in the shared database may be injected too (other criteria fill up): at least this one.
    assert any(
        n == "Injected 1 training examples (recent strategy)"
        or re.fullmatch(r"Injected \d+ training examples \(recent strategy\): 1 for 'bamboo', \d+ from other criteria", n)
        for n in notices
    ), notices
    sent = provider.requests[-1]["body"]["messages"]
    assert any(f"bamboo mat {tag}" in m["content"] for m in sent[:-1])


def test_processes_needing_the_same_values_at_once_judge_each_once(
    start_proxy: Callable[..., ServerProcess], provider: FakeProvider, items: tuple[str, str]
) -> None:
    table, _ = items
    proxies = [start_proxy() for _ in range(3)]
    provider.behaviour.delay = 0.5
    results: list[list[tuple[Any, ...]]] = []
    failures: list[BaseException] = []
    go = threading.Barrier(CLIENTS)

    def client(server: ServerProcess) -> None:
        try:
            with connect(server) as conn:
                go.wait(timeout=30)
                results.append(conn.execute(f"SELECT id FROM {table} WHERE label MEANS 'bamboo' ORDER BY id").fetchall())
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=client, args=(proxies[i % len(proxies)],)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    assert results == [[(1,), (3,)]] * CLIENTS
    assert provider.stats()["requests"] == len(WORDS)  # each value once, whichever process judged it


def test_a_process_killed_mid_call_blocks_its_values_for_one_claim_ttl_only(
    start_proxy: Callable[..., ServerProcess], provider: FakeProvider, items: tuple[str, str], upstream_pg: PostgresServer
) -> None:
    table, tag = items
    doomed, survivor = start_proxy(MEANSQL_CLAIM_TTL="2"), start_proxy(MEANSQL_CLAIM_TTL="2")
    provider.behaviour.delay = 30  # the doomed process's calls never come back
    query = f"SELECT id FROM {table} WHERE label MEANS 'bamboo' ORDER BY id"

    def doomed_query() -> None:
        try:
            with connect(doomed) as conn:
                conn.execute(query)
        except psycopg.Error:
            pass  # its server is killed below

    threading.Thread(target=doomed_query, daemon=True).start()
    # Its values are claimed before its first call starts.
    wait_for(lambda: provider.stats()["inflight"] >= 1, 60, "the doomed process's calls")
    assert doomed.proc is not None
    doomed.proc.send_signal(signal.SIGKILL)
    doomed.stop()
    provider.behaviour.delay = 0
    before = provider.stats()["requests"]
    direct = f"postgresql://postgres@127.0.0.1:{upstream_pg.port}/postgres"
    with psycopg.connect(direct, autocommit=True) as pg:
        assert pg.execute("SELECT count(*) FROM meansql.semantic_claims").fetchone() == (len(WORDS),)
    with connect(survivor) as conn:
        assert conn.execute(query).fetchall() == [(1,), (3,)]
        # Only completed calls are logged: none of the killed process's.
        assert conn.execute(
            "SELECT count(*), count(DISTINCT user_input) FROM unified_logs WHERE user_input LIKE %s", [f"%{tag}"]
        ).fetchone() == (4, 4)
    assert provider.stats()["requests"] - before == len(WORDS)
    with psycopg.connect(direct, autocommit=True) as pg:
        assert pg.execute("SELECT count(*) FROM meansql.semantic_claims").fetchone() == (0,)


def test_mark_as_trainable_over_the_wire_of_a_proxy_writes_the_postgresql_store(
    start_proxy: Callable[..., ServerProcess], provider: FakeProvider, items: tuple[str, str]
) -> None:
    table, tag = items
    proxy = start_proxy()
    with connect(proxy) as conn:
        conn.execute(f"SELECT id FROM {table} WHERE label MEANS 'bamboo'").fetchall()
        traces = [r[0] for r in conn.execute("SELECT trace_id FROM unified_logs WHERE user_input LIKE %s", [f"%{tag}"])]
    assert training.mark_as_trainable(traces[:2], verified=True, notes="checked", tags=["a", "b"], url=proxy.url) == 2
    assert training.mark_as_trainable(traces[2:3], tags=[], url=proxy.url) == 1
    with connect(proxy) as conn:
        rows = conn.execute(
            "SELECT verified, notes, tags FROM training_annotations WHERE trace_id = ANY(%s) ORDER BY verified", [traces[:3]]
        ).fetchall()
    assert rows == [(False, None, []), (True, "checked", ["a", "b"]), (True, "checked", ["a", "b"])]


def test_three_proxies_sixteen_clients_one_killed_mid_query(
    start_proxy: Callable[..., ServerProcess], provider: FakeProvider, upstream_pg: PostgresServer
) -> None:
    """The scale-out drill: 16 clients on 3 processes, one SIGKILLed while its calls are in flight.

    The survivors' clients all get their rows; the store holds one log row and one cached answer per call that
    came back to a live process, none twice; the killed process's clients, retrying through a survivor, pay
    only for the values it had not finished.
    """
    tag = uuid.uuid4().hex[:8]
    table, per_client = f"drill_{tag}", 6
    direct = f"postgresql://postgres@127.0.0.1:{upstream_pg.port}/postgres"
    labels = {i: f"{WORDS[i % len(WORDS)]} {i} {tag}" for i in range(1, CLIENTS * per_client + 1)}
    with psycopg.connect(direct, autocommit=True) as pg:
        pg.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, label text)")
        with pg.cursor().copy(f"COPY {table} FROM STDIN") as cp:
            for i, label in labels.items():
                cp.write_row((i, label))
    doomed, *survivors = [start_proxy(MEANSQL_CLAIM_TTL="2") for _ in range(3)]
    provider.behaviour.delay = 2.0

    def query(client: int) -> str:
        low = client * per_client + 1
        return f"SELECT id FROM {table} WHERE id BETWEEN {low} AND {low + per_client - 1} AND label MEANS 'bamboo' ORDER BY id"

    def expected(client: int) -> list[tuple[int]]:
        low = client * per_client + 1
        return [(i,) for i in range(low, low + per_client) if "bamboo" in labels[i]]

    doomed_clients = [c for c in range(CLIENTS) if c % 4 == 0]  # 4 clients on the process that dies
    results: dict[int, list[tuple[Any, ...]]] = {}
    failures: dict[int, BaseException] = {}

    def client(c: int) -> None:
        server = doomed if c in doomed_clients else survivors[c % 2]
        try:
            with connect(server) as conn:
                results[c] = conn.execute(query(c)).fetchall()
        except BaseException as exc:  # reported below
            failures[c] = exc

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    doomed_values = {labels[i] for c in doomed_clients for i in range(c * per_client + 1, (c + 1) * per_client + 1)}

    def doomed_calls_sent() -> bool:
        sent = " ".join(json.dumps(r["body"]) for r in list(provider.requests))
        return all(value in sent for value in doomed_values)

    # Every call of the doomed process is in flight (each takes 2 s): now it dies.
    wait_for(doomed_calls_sent, 60, "the doomed process's calls")
    assert doomed.proc is not None
    doomed.proc.send_signal(signal.SIGKILL)
    doomed.stop()
    for t in threads:
        t.join(timeout=120)
    # The survivors' clients were served in full; the killed process's lost their connections.
    assert {c: results.get(c) for c in range(CLIENTS) if c not in doomed_clients} == {
        c: expected(c) for c in range(CLIENTS) if c not in doomed_clients
    }
    assert set(failures) == set(doomed_clients)
    assert all(isinstance(exc, psycopg.OperationalError) for exc in failures.values())

    def stored() -> tuple[int, int, int]:
        with psycopg.connect(direct, autocommit=True) as pg:
            row = pg.execute(
                "SELECT count(*), count(DISTINCT user_input), count(*) FILTER (WHERE NOT cache_hit) FROM meansql.unified_logs "
                "WHERE user_input LIKE %s AND role = 'assistant'",
                [f"%{tag}"],
            ).fetchone()
        assert row is not None
        return row

    logged, distinct, judged = stored()
    # Exactly the completed calls: no value logged twice, none logged that the provider did not answer.
    assert logged == distinct == judged
    assert judged <= provider.stats()["requests"]
    with psycopg.connect(direct, autocommit=True) as pg:
        done_before = {r[0] for r in pg.execute(
            "SELECT user_input FROM meansql.unified_logs WHERE user_input LIKE %s AND role = 'assistant'", [f"%{tag}"]
        ).fetchall()}
    assert done_before >= set(labels.values()) - doomed_values  # every survivor's value is there
    # The killed process's clients retry through a survivor: only the values it had not finished are judged.
    provider.behaviour.delay = 0
    before = provider.stats()["requests"]
    with connect(survivors[0]) as conn:
        for c in doomed_clients:
            assert conn.execute(query(c)).fetchall() == expected(c)
    assert provider.stats()["requests"] - before == len(doomed_values - done_before)
    logged, distinct, judged = stored()
    assert logged == distinct == judged == len(labels)
