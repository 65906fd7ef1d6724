"""Training events: Redis pub/sub from the outbox (surviving a Redis outage) and LISTEN/NOTIFY over pg-wire."""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import ServerProcess, wait_for
from tests.e2e.test_store_api import MODAL, http_url

REDIS_SERVER = "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A real redis-server on a free port, without persistence."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, listening: bool = True) -> RedisProcess:
        """Start redis-server; with listening=False only its unix socket answers until listen() (Redis 7)."""
        self.socket = tempfile.mktemp(prefix="meansql-redis-", suffix=".sock")
        port = self.port if listening else 0
        self.proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--unixsocket", self.socket],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(unix_socket_path=self.socket)
        wait_for(lambda: _pings(client), what="redis-server to answer PING")
        return self

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket}"

    def listen(self) -> None:
        redis.Redis(unix_socket_path=self.socket).config_set("port", self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture()
def redis_server() -> Iterator[RedisProcess]:
    r = RedisProcess().start()
    yield r
    r.stop()


class Subscriber:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe("training_events")
        wait_for(lambda: self.pubsub.get_message(timeout=0.1), what="the subscription")
        self.received: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        while (msg := self.pubsub.get_message(timeout=0.05)) is not None:
            if msg["type"] == "message":
                self.received.append(json.loads(msg["data"]))
        return self.received


def test_redis_subscriber_receives_each_event(start_server: Callable[..., ServerProcess], redis_server: RedisProcess) -> None:
    sub = Subscriber(redis_server.url)
    server = start_server(provider=False, MEANSQL_REDIS_URL=redis_server.url)
    http = httpx.Client(base_url=http_url(server), timeout=30)
    eid = http.post("/training-examples/", json=MODAL).json()["id"]
    http.patch(f"/training-examples/{eid}", json={"quality_score": 92.0, "labels": ["verified"]})
    http.delete(f"/training-examples/{eid}")
    http.post("/api/training/mark-trainable", json={"trace_ids": ["t-1"], "verified": True})
    with server.connect() as conn:
        conn.execute("INSERT INTO training_examples (input_text, domain) VALUES ('from sql', 'coding')")
    events = wait_for(lambda: len(sub.poll()) >= 5 and sub.received, what="five events")
    assert [e["event_type"] for e in events] == ["training_example.created", "training_example.updated",
                                                 "training_example.deleted", "training_annotation.upserted",
                                                 "training_example.created"]
    assert events[0] == {"event_type": "training_example.created", "aggregate_type": "training_example",
                         "aggregate_id": eid, "payload": {"execution_id": "exec-12345", "agent_id": MODAL["agent_id"],
                                                          "source_type": "execution_trace", "quality_score": 85.5,
                                                          "domain": "frontend", "cascade_id": None, "cell_name": None}}
    assert events[1]["payload"] == {"updated_fields": ["labels", "quality_score"]}
    assert events[2] == {"event_type": "training_example.deleted", "aggregate_type": "training_example",
                         "aggregate_id": eid, "payload": {}}
    assert (events[3]["aggregate_type"], events[3]["aggregate_id"]) == ("training_annotation", "t-1")
    assert events[4]["payload"]["domain"] == "coding"


def test_redis_outage_never_fails_or_loses_a_write(start_server: Callable[..., ServerProcess],
                                                   redis_server: RedisProcess) -> None:
    server = start_server(provider=False, MEANSQL_REDIS_URL=redis_server.url)
    http = httpx.Client(base_url=http_url(server), timeout=30)
    redis_server.stop()
    r = http.post("/training-examples/", json=MODAL)
    assert r.status_code == 201
    with server.connect() as conn:
        conn.execute("UPDATE training_examples SET quality_score = 50")
        assert conn.execute("SELECT count(*) FROM training_events").fetchone() == (2,)  # waiting in the outbox
    assert "unreachable" in _read_until(server, "will be retried")  # the gap is logged
    # Back, but reachable only over its unix socket until our subscriber listens: pub/sub keeps nothing.
    redis_server.start(listening=False)
    sub = Subscriber(redis_server.unix_url)
    redis_server.listen()
    events = wait_for(lambda: len(sub.poll()) >= 2 and sub.received, what="the events that waited")
    assert [e["event_type"] for e in events] == ["training_example.created", "training_example.updated"]
    assert events[0]["aggregate_id"] == r.json()["id"]
    with server.connect() as conn:
        wait_for(lambda: conn.execute("SELECT count(*) FROM training_events").fetchone() == (0,), what="an empty outbox")
    assert "redis is back" in " ".join(server.stop().split())


def _read_until(server: ServerProcess, text: str) -> str:
    """Server output up to the line that holds text (the server logs it within a few seconds)."""
    assert server.proc is not None and server.proc.stdout is not None
    seen = []
    for line in iter(server.proc.stdout.readline, ""):
        seen.append(line)
        if text in " ".join(" ".join(seen).split()):
            return " ".join(" ".join(seen).split())
    raise AssertionError("".join(seen))


def test_listen_notify_over_pg_wire(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(provider=False)
    http = httpx.Client(base_url=http_url(server), timeout=30)
    with server.connect() as listener, server.connect() as writer:
        listener.execute("LISTEN training_events")
        eid = http.post("/training-examples/", json=MODAL).json()["id"]
        writer.execute("UPDATE training_examples SET domain = 'ui' WHERE id = %s", (eid,))
        writer.execute("BEGIN")
        writer.execute("DELETE FROM training_examples WHERE id = %s", (eid,))
        writer.execute("COMMIT")
        writer.execute("BEGIN")
        writer.execute("INSERT INTO training_examples (input_text) VALUES ('rolled back')")
        writer.execute("ROLLBACK")
        writer.execute("INSERT INTO training_annotations (trace_id, trainable) VALUES ('t-9', true)")
        got = []
        for note in listener.notifies(timeout=10, stop_after=4):
            got.append((note.channel, json.loads(note.payload)))
        assert [c for c, _ in got] == ["training_events"] * 4
        assert [(e["event_type"], e["aggregate_id"]) for _, e in got] == [
            ("training_example.created", eid), ("training_example.updated", eid), ("training_example.deleted", eid),
            ("training_annotation.upserted", "t-9")]
        assert got[1][1]["payload"] == {"updated_fields": ["domain"]}
        listener.execute("UNLISTEN *")
        http.post("/training-examples/", json={"input_text": "unheard"})
        assert list(listener.notifies(timeout=0.5)) == []
