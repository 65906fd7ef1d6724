"""The adaptive limiter's arithmetic (pure)."""

from __future__ import annotations

import asyncio

from semantic_ops.judges.limiter import AdaptiveLimiter


def test_one_decrease_per_round() -> None:
    lim = AdaptiveLimiter(64)
    for _ in range(10):  # a burst of 429s from calls of one round
        lim.record(0, throttled=True)
    assert lim.current == 44
    lim.record(1, throttled=True)
    assert lim.current == 31


def test_additive_increase_back_to_the_maximum() -> None:
    lim = AdaptiveLimiter(8)
    lim.record(0, throttled=True)
    assert lim.current == 5
    for _ in range(5):
        lim.record(1, throttled=False)
    assert lim.current == 6
    for _ in range(100):
        lim.record(1, throttled=False)
    assert lim.limit == 8.0


def test_never_below_one_and_waits_for_a_slot() -> None:
    lim = AdaptiveLimiter(2)
    for r in range(10):
        lim.record(r, throttled=True)
    assert lim.current == 1

    async def run() -> list[str]:
        order: list[str] = []
        first = await lim.acquire()

        async def second() -> None:
            await lim.acquire()
            order.append("second")

        task = asyncio.create_task(second())
        await asyncio.sleep(0.05)
        order.append("first done")
        await lim.release(first, throttled=False)
        await task
        return order

    assert asyncio.run(run()) == ["first done", "second"]
