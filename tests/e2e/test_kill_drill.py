"""kill -9 at random instants while 16 clients run MEANS queries and annotate: nothing acknowledged is lost.

Each round starts `meansql serve` on the same DuckDB file, lets 16 clients work for a random fraction of a
second to two seconds, and SIGKILLs the process. The next start must open the file (no WAL replay error), and
from then on every query that returned rows to a client has a log row for each value it judged, every
acknowledged annotation exists, and no call is logged twice.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from tests.conftest import ServerProcess
from tests.fake_provider import FakeProvider

ROUNDS = int(os.environ.get("MEANSQL_KILL_ROUNDS", "50"))
CLIENTS = 16
ROWS = 400
CRITERIA = ("eco-friendly", "durable", "cheap")


@dataclass
class Acknowledged:
    """What the server told clients it had done, across every round."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    judged: set[tuple[str, str]] = field(default_factory=set)  # (criterion, value) of queries that returned
    annotations: dict[str, set[str]] = field(default_factory=dict)  # trace_id -> acknowledged notes
    attempted: dict[str, set[str]] = field(default_factory=dict)  # trace_id -> every note sent
    queries: int = 0


def _text(i: int) -> str:
    return f"{('bamboo', 'steel', 'plastic', 'cotton')[i % 4]} item {i} {'reusable' if i % 3 == 0 else 'single-use'}"


def _client(server: ServerProcess, seed: int, stop: threading.Event, ack: Acknowledged, working: threading.Event) -> None:
    rnd = random.Random(seed)
    try:
        with server.connect(prepare_threshold=None) as conn:
            while not stop.is_set():
                if rnd.random() < 0.7:
                    criterion = rnd.choice(CRITERIA)
                    ids = rnd.sample(range(ROWS), 6)
                    conn.execute(f"SELECT id FROM drill WHERE id IN ({', '.join(map(str, ids))}) AND d MEANS %s",
                                 [criterion]).fetchall()
                    with ack.lock:
                        ack.judged.update((criterion, _text(i)) for i in ids)
                        ack.queries += 1
                    working.set()
                else:
                    row = conn.execute("SELECT trace_id FROM unified_logs WHERE role = 'assistant' "
                                       "ORDER BY random() LIMIT 1").fetchone()
                    if row is None:
                        continue
                    trace, note = str(row[0]), f"drill {seed} {rnd.random()}"
                    with ack.lock:
                        ack.attempted.setdefault(trace, set()).add(note)
                    conn.execute("INSERT INTO training_annotations (trace_id, trainable, verified, confidence, notes) "
                                 "VALUES (%s, true, true, 0.9, %s)", [trace, note])
                    with ack.lock:
                        ack.annotations.setdefault(trace, set()).add(note)
    except psycopg.OperationalError:
        return  # the server was killed under this client


def _check(conn: psycopg.Connection[object], ack: Acknowledged) -> None:
    judged = {(str(c), str(u)) for c, u in conn.execute(
        "SELECT criterion, user_input FROM unified_logs WHERE role = 'assistant' AND error IS NULL").fetchall()}
    missing = ack.judged - judged
    assert not missing, f"{len(missing)} judged values of acknowledged queries have no log row, e.g. {sorted(missing)[:3]}"
    assert conn.execute("SELECT count(*) - count(DISTINCT trace_id) FROM unified_logs").fetchone() == (0,)
    # A value is judged again when its prompt changed (annotations add examples to it), never for the same prompt.
    twice = conn.execute("SELECT criterion, user_input, count(*) FROM unified_logs WHERE role = 'assistant' "
                         "AND error IS NULL GROUP BY criterion, user_input, full_request_json::VARCHAR "
                         "HAVING count(*) > 1 LIMIT 3").fetchall()
    assert twice == [], f"prompts judged and logged twice: {twice}"
    stored = {str(t): n for t, n in conn.execute("SELECT trace_id, notes FROM training_annotations").fetchall()}
    lost = set(ack.annotations) - set(stored)
    assert not lost, f"{len(lost)} acknowledged annotations are gone"
    # The note kept is one a client sent for that trace (the last committed upsert wins).
    assert all(stored[t] in ack.attempted[t] for t in ack.annotations)


def test_fifty_kills_lose_nothing_acknowledged(start_server: Callable[..., ServerProcess], fresh_provider: FakeProvider) -> None:
    fresh_provider.behaviour.delay = 0.05  # calls are in flight when the kill comes
    ack = Acknowledged()
    server = start_server()
    with server.connect() as conn:
        conn.execute("CREATE TABLE drill (id INTEGER, d VARCHAR)")
        with conn.cursor().copy("COPY drill FROM STDIN") as cp:
            for i in range(ROWS):
                cp.write_row((i, _text(i)))
    rnd = random.Random(20261127)
    for round_ in range(ROUNDS):
        if round_:
            server = start_server(db=server.db)  # fails the test if the file does not open
            with server.connect() as conn:
                _check(conn, ack)
        stop, working = threading.Event(), threading.Event()
        clients = [threading.Thread(target=_client, args=(server, round_ * 100 + c, stop, ack, working)) for c in range(CLIENTS)]
        for t in clients:
            t.start()
        # The kill comes at a random instant once queries are returning (the first waits for the model client).
        assert working.wait(120), "no query returned within 120 s"
        time.sleep(rnd.uniform(0, 1.5))
        server.stop(9)  # SIGKILL
        stop.set()
        for t in clients:
            t.join(timeout=30)
    server = start_server(db=server.db)
    with server.connect() as conn:
        _check(conn, ack)
        assert conn.execute("SELECT count(*) FROM drill").fetchone() == (ROWS,)
    # The drill did work: queries returned and annotations were acknowledged in it.
    assert ack.queries >= ROUNDS and len(ack.annotations) >= ROUNDS // 5
