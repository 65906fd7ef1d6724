"""What a storm of short or malformed connections costs: sessions set up lazily, connection threads reused and
ended, new connections' work taking turns."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from server.pgwire.connection import Lane, Workers
from server.session import Session
from server.statements import split_tokens
from tests import fix_wire as w
from tests.conftest import ServerProcess
from training.store import Store


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_a_session_sets_up_duckdb_on_its_first_statement(tmp_path: Path) -> None:
    store = Store(tmp_path / "lazy.duckdb")
    made: list[Any] = []
    cursor = store.cursor

    def counted() -> Any:
        made.append(cursor())
        return made[-1]

    store.cursor = counted  # type: ignore[method-assign]
    try:
        idle = Session(store, executor=None, setups=threading.BoundedSemaphore(1))  # type: ignore[arg-type]
        idle.assign("application_name", "only logs in")
        idle.close()
        assert made == []  # a client that only logs in costs no DuckDB connection

        used = Session(store, executor=None)  # type: ignore[arg-type]
        assert used.cursor is used.cursor and len(made) == 1
        assert used.cursor.execute("SELECT 7 / 2").fetchall() == [(3,)]  # set up as every session is
        used.close()
    finally:
        store.close()


def test_workers_reuse_a_thread_and_end_it_when_idle() -> None:
    workers = Workers("test-worker", idle_timeout=0.3)
    seen: list[int] = []
    done = threading.Event()

    def job() -> None:
        seen.append(threading.get_ident())
        done.set()

    workers.submit(job)
    assert done.wait(5)
    done.clear()
    deadline = time.monotonic() + 5
    while workers._idle == 0 and time.monotonic() < deadline:  # the first job's thread is back and waiting
        time.sleep(0.01)
    workers.submit(job)
    assert done.wait(5)
    assert seen[0] == seen[1]  # the same thread took the second connection
    deadline = time.monotonic() + 5
    while any(t.name == "test-worker" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "test-worker" for t in threading.enumerate())


def test_the_lane_holds_one_turn_and_a_waiter_goes_ahead_after_its_patience() -> None:
    lane = Lane(share=0.5, max_pause=0.05, long_turn=1.0)
    assert lane.take(0.01)
    started = time.monotonic()
    assert not lane.take(0.1)  # held: no turn within the patience
    assert time.monotonic() - started >= 0.09
    lane.give()


def test_a_long_turn_is_not_waited_for() -> None:
    lane = Lane(share=0.5, max_pause=0.05, long_turn=0.05)
    assert lane.take(1)
    assert not lane.take(0.01)  # a short turn so far: waited for, up to the patience
    time.sleep(0.06)
    started = time.monotonic()
    assert not lane.take(5)  # a statement at work: the next one goes ahead at once
    assert time.monotonic() - started < 0.01
    lane.give()
    assert lane.take(0.01)
    lane.give()


def test_the_lane_rests_in_proportion_to_each_turn_while_others_wait() -> None:
    lane = Lane(share=0.25, max_pause=0.05, long_turn=1.0)
    assert lane.take(1)  # an idle lane: no wait
    time.sleep(0.01)
    lane.give()
    started = time.monotonic()
    assert lane.take(1)  # nobody else wanted a turn: no rest
    assert time.monotonic() - started < 0.005

    got: list[float] = []
    waiter = threading.Thread(target=lambda: (lane.take(5), got.append(time.monotonic()), lane.give()))
    waiter.start()
    time.sleep(0.01)  # the waiter is queued behind this 10+ ms turn
    released = time.monotonic()
    lane.give()  # a quarter share: the waiter starts after a rest of three times the turn
    waiter.join(5)
    assert 0.025 <= got[0] - released < 0.06

    assert lane.take(1)
    waiter = threading.Thread(target=lambda: (lane.take(5), got.append(time.monotonic()), lane.give()))
    waiter.start()
    time.sleep(0.2)
    released = time.monotonic()
    lane.give()  # a long turn: the rest stops at max_pause
    waiter.join(5)
    assert 0.045 <= got[1] - released < 0.1


def test_a_storm_of_short_connections_leaves_no_threads_behind(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(provider=False)
    assert server.proc is not None
    with server.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    time.sleep(3)  # the worker that served it ends after 2 s idle
    before = _threads(server.proc.pid)

    def one(i: int) -> bool:
        conn = w.RawConnection("127.0.0.1", server.port)
        try:
            login = conn.login(database="default")
            if i % 2:
                conn.send(w.query("SELECT 1"))
                return w.summary(conn.until_ready())[-1] == ("Z", "I")
            return login[-1].kind == "Z"
        finally:
            conn.sock.close()

    with ThreadPoolExecutor(50) as pool:
        assert all(pool.map(one, range(400)))
    with server.connect() as conn:  # a real client is served all along
        assert conn.execute("SELECT 2").fetchone() == (2,)
    deadline = time.monotonic() + 15
    while _threads(server.proc.pid) > before + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _threads(server.proc.pid) <= before + 2


def test_connections_tokenize_at_once_without_reading_each_others_text() -> None:
    texts = [f"COPY (SELECT n, d FROM soak_{i} LIMIT 500) TO STDOUT" for i in range(8)]
    want = {t: [tok.text for tok in split_tokens(t)] for t in texts}
    wrong: list[str] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.00005)  # threads take turns often, as 50 busy connections make them
    try:

        def run(text: str) -> None:
            for _ in range(500):
                if [tok.text for tok in split_tokens(text)] != want[text]:
                    wrong.append(text)

        threads = [threading.Thread(target=run, args=(t,)) for t in texts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []


class _Connection:
    """Holds its session, and the session's callbacks hold it: the shape of a pg-wire connection."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.sent: list[str] = []
        session.notice = lambda severity, message: self.sent.append(message)
        session.notify = lambda channel, payload: self.sent.append(payload)
        session.find_portal = lambda name: None if self.session is None else None


def test_a_closed_session_and_its_connection_are_freed_without_a_garbage_collection(tmp_path: Path) -> None:
    import gc
    import types
    import weakref

    from semantic_ops.operators import Registry

    store = Store(tmp_path / "cycles.duckdb")
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # what reference counting frees alone
    try:
        executor = types.SimpleNamespace(registry=Registry([]))  # no operators: plain SQL only
        session = Session(store, executor=executor)  # type: ignore[arg-type]
        conn = _Connection(session)
        # A catalog statement (rewritten for meansql's catalog) and one that sends a notice.
        for stmt in session.split("SELECT current_user, current_database(); COMMIT"):
            result = session.run(stmt)
            if result.rows is not None:
                assert list(result.rows) == [("postgres", "default")]
        assert conn.sent == ["there is no transaction in progress"]
        session.close()
        gone_session, gone_conn = weakref.ref(session), weakref.ref(conn)
        del session, conn, result, stmt
        assert gone_session() is None and gone_conn() is None
    finally:
        if enabled:
            gc.enable()
        store.close()


def test_notifications_for_a_session_closed_meanwhile_go_nowhere(tmp_path: Path) -> None:
    store = Store(tmp_path / "closed.duckdb")
    try:
        session = Session(store, executor=None)  # type: ignore[arg-type]
        conn = _Connection(session)
        session.close()
        session._waiting.append(("training_events", "{}"))
        session.deliver_notifications()  # no callback left: nothing is sent, nothing raises
        session.notice("WARNING", "after close")
        assert conn.sent == [] and session.find_portal("p") is None
    finally:
        store.close()
