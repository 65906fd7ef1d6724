"""The AIMD limiter: its arithmetic, and acquire/release on a real event loop."""

from __future__ import annotations

import asyncio

import pytest

from semantic_ops.judges.limiter import AdaptiveLimiter, Result, Slot


def test_starts_at_the_maximum() -> None:
    lim = AdaptiveLimiter(16)
    assert (lim.limit, lim.current, lim.in_flight, lim.epoch) == (16.0, 16, 0, 0)


def test_throttle_multiplies_by_point_seven_once_per_round() -> None:
    lim = AdaptiveLimiter(10)
    first_round = Slot(lim.epoch, 10)
    assert lim.on_throttled(first_round, 10) is True
    assert lim.limit == pytest.approx(7.0) and lim.current == 7 and lim.epoch == 1
    # More 429s from calls sent in the same wave, with as many out: already counted, no compounding.
    assert lim.on_throttled(first_round, 10) is False
    assert lim.on_throttled(Slot(0, 3), 10) is False
    assert lim.on_throttled(Slot(0, 10), 12) is False
    assert lim.limit == pytest.approx(7.0)
    # A call sent after the cut and still throttled: the next round, cut again.
    assert lim.on_throttled(Slot(lim.epoch, 7), 7) is True
    assert lim.limit == pytest.approx(4.9) and lim.current == 4 and lim.epoch == 2


def test_the_cut_follows_the_calls_out_not_the_limit() -> None:
    lim = AdaptiveLimiter(64)
    # A burst of 64: the first 429 comes back with all 64 still out...
    assert lim.on_throttled(Slot(0, 1), 64) is True
    assert lim.limit == pytest.approx(44.8) and lim.epoch == 1
    # ...the rest of that wave as the others finish; the last ones with 9 out (8 answered slowly).
    for in_flight in range(63, 8, -1):
        lim.on_throttled(Slot(0, 1), in_flight)
    assert lim.limit == pytest.approx(6.3) and lim.current == 6 and lim.epoch == 1
    # A cut from a high limit with few calls out (the tail of a batch) follows the calls out too.
    lim = AdaptiveLimiter(64)
    assert lim.on_throttled(Slot(0, 5), 5) is True
    assert lim.limit == pytest.approx(3.5)


def test_never_below_one() -> None:
    lim = AdaptiveLimiter(64)
    for _ in range(50):
        lim.on_throttled(Slot(lim.epoch, lim.current), lim.current)
    assert lim.limit == 1.0 and lim.current == 1
    lim.on_throttled(Slot(0, 1), 1)
    assert lim.limit == 1.0


def test_success_adds_one_per_limit_successes_up_to_the_maximum() -> None:
    lim = AdaptiveLimiter(10)
    lim.on_throttled(Slot(0, 10), 10)  # 7.0
    for _ in range(7):
        assert lim.on_success(Slot(1, lim.current)) is True
    # 7 successes at ~7 add ~1 (slightly less: each step is 1/limit of a growing limit).
    assert 7.9 < lim.limit < 8.0 and lim.current == 7
    lim.on_success(Slot(1, lim.current))
    assert lim.current == 8
    for _ in range(1000):
        lim.on_success(Slot(1, lim.current))
    assert lim.limit == 10.0 and lim.current == 10
    assert lim.on_success(Slot(1, 10)) is False


def test_success_with_room_to_spare_does_not_grow_the_limit() -> None:
    lim = AdaptiveLimiter(10)
    lim.on_throttled(Slot(0, 10), 10)  # 7.0
    for load in range(1, 7):  # sent while fewer than 7 were in flight
        assert lim.on_success(Slot(1, load)) is False
    assert lim.limit == pytest.approx(7.0)
    assert lim.on_success(Slot(1, 7)) is True


def test_floor_tolerates_float_error() -> None:
    lim = AdaptiveLimiter(10)
    lim.limit = 7.9999999999
    assert lim.current == 8


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        AdaptiveLimiter(0)
    with pytest.raises(ValueError):
        AdaptiveLimiter(4, decrease=1.5)


def test_release_results() -> None:
    async def scenario() -> None:
        lim = AdaptiveLimiter(10)
        slots = [await lim.acquire() for _ in range(10)]
        assert [s.load for s in slots] == list(range(1, 11)) and lim.in_flight == 10
        lim.release(slots.pop(), Result.THROTTLED)  # came back with 10 out
        assert lim.limit == pytest.approx(7.0) and lim.in_flight == 9
        lim.release(slots.pop(), Result.THROTTLED)  # same wave, came back with 9 out
        assert lim.limit == pytest.approx(6.3) and lim.in_flight == 8
        lim.release(slots.pop(), Result.NEUTRAL)
        assert lim.limit == pytest.approx(6.3)
        lim.release(slots.pop(), Result.OK)  # sent with 7 in flight, the limit fully used
        assert lim.limit == pytest.approx(6.3 + 1 / 6.3)
        lim.release(slots.pop(0), Result.OK)  # sent alone: says nothing about more
        assert lim.limit == pytest.approx(6.3 + 1 / 6.3)
        while slots:
            lim.release(slots.pop(), Result.NEUTRAL)
        assert lim.in_flight == 0

    asyncio.run(scenario())


def test_acquire_waits_at_the_limit_and_grants_in_order() -> None:
    async def scenario() -> None:
        lim = AdaptiveLimiter(2)
        s1, s2 = await lim.acquire(), await lim.acquire()
        order: list[str] = []

        async def take(name: str) -> Slot:
            slot = await lim.acquire()
            order.append(name)
            return slot

        t3 = asyncio.ensure_future(take("third"))
        t4 = asyncio.ensure_future(take("fourth"))
        await asyncio.sleep(0.01)
        assert order == [] and lim.in_flight == 2
        lim.release(s1, Result.OK)
        await asyncio.sleep(0.01)
        assert order == ["third"] and lim.in_flight == 2
        lim.release(s2, Result.OK)
        s4 = await t4
        assert order == ["third", "fourth"]
        lim.release(await t3, Result.OK)
        lim.release(s4, Result.OK)
        assert lim.in_flight == 0

    asyncio.run(scenario())


def test_a_decrease_below_the_calls_in_flight_holds_new_calls_back() -> None:
    async def scenario() -> None:
        lim = AdaptiveLimiter(10)
        slots = [await lim.acquire() for _ in range(10)]
        lim.release(slots.pop(), Result.THROTTLED)  # limit 7, 9 in flight
        waiter = asyncio.ensure_future(lim.acquire())
        for _ in range(2):
            lim.release(slots.pop(), Result.NEUTRAL)  # 7 in flight: still no room under floor(7)
        await asyncio.sleep(0.01)
        assert not waiter.done() and lim.in_flight == 7
        lim.release(slots.pop(), Result.NEUTRAL)  # 6 in flight: room for one
        slot = await asyncio.wait_for(waiter, 1)
        assert lim.in_flight == 7
        lim.release(slot, Result.NEUTRAL)

    asyncio.run(scenario())


def test_cancelled_waiters_do_not_leak_slots() -> None:
    async def scenario() -> None:
        lim = AdaptiveLimiter(1)
        held = await lim.acquire()
        waiters = [asyncio.ensure_future(lim.acquire()) for _ in range(100)]
        await asyncio.sleep(0)
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        lim.release(held, Result.OK)
        assert lim.in_flight == 0
        # The queue held only cancelled waiters; a newcomer must not wait behind them.
        slot = await asyncio.wait_for(lim.acquire(), 1)
        assert lim.in_flight == 1
        lim.release(slot, Result.OK)

    asyncio.run(scenario())


def test_granted_then_cancelled_hands_the_slot_on() -> None:
    async def scenario() -> None:
        lim = AdaptiveLimiter(1)
        held = await lim.acquire()
        first = asyncio.ensure_future(lim.acquire())
        second = asyncio.ensure_future(lim.acquire())
        await asyncio.sleep(0)
        lim.release(held, Result.OK)  # grants `first`, which has not resumed yet...
        first.cancel()                # ...and is cancelled before it does
        slot = await asyncio.wait_for(second, 1)
        assert first.cancelled() and lim.in_flight == 1
        lim.release(slot, Result.OK)
        assert lim.in_flight == 0

    asyncio.run(scenario())
