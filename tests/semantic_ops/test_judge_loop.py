"""The judge loop's selector: answers that arrive close together are handled in one turn of the loop."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from semantic_ops.judges.litellm import _CoalescingSelector


@pytest.fixture()
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made = [socket.socketpair() for _ in range(10)]
    yield made
    for a, b in made:
        a.close()
        b.close()


def _register(selector: _CoalescingSelector, pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    for reader, _ in pairs:
        selector.register(reader, selectors.EVENT_READ)


def _ready(events: list[tuple[selectors.SelectorKey, int]]) -> set[int]:
    return {key.fd for key, _ in events}


def test_a_lone_event_among_many_sockets_waits_for_the_next_one(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    selector = _CoalescingSelector(pause=0.2, min_open=8, few=8)
    _register(selector, pairs)
    pairs[0][1].send(b"x")
    later = threading.Timer(0.02, lambda: pairs[5][1].send(b"y"))
    later.start()
    started = time.monotonic()
    events = selector.select(1.0)
    later.join()
    assert _ready(events) == {pairs[0][0].fileno(), pairs[5][0].fileno()}
    assert 0.15 <= time.monotonic() - started < 1.0
    selector.close()


def test_each_ready_socket_is_reported_once(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    selector = _CoalescingSelector(pause=0.05, min_open=8, few=8)
    _register(selector, pairs)
    pairs[3][1].send(b"x")
    events = selector.select(1.0)
    assert [key.fd for key, _ in events] == [pairs[3][0].fileno()]
    selector.close()


def test_with_few_sockets_open_nothing_waits(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    selector = _CoalescingSelector(pause=0.5, min_open=8, few=8)
    _register(selector, pairs[:3])
    pairs[1][1].send(b"x")
    started = time.monotonic()
    events = selector.select(1.0)
    assert _ready(events) == {pairs[1][0].fileno()}
    assert time.monotonic() - started < 0.25
    selector.close()


def test_enough_events_at_once_are_handled_without_waiting(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    selector = _CoalescingSelector(pause=0.5, min_open=8, few=3)
    _register(selector, pairs)
    for _, writer in pairs[:4]:
        writer.send(b"x")
    started = time.monotonic()
    events = selector.select(1.0)
    assert _ready(events) == {r.fileno() for r, _ in pairs[:4]}
    assert time.monotonic() - started < 0.25
    selector.close()


def test_the_defaults_coalesce_for_at_most_a_few_milliseconds() -> None:
    selector = _CoalescingSelector()
    assert 0 < selector.pause <= 0.005 and selector.min_open == 8 and selector.few == 8
    selector.close()
