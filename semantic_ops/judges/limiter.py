"""Adaptive concurrency: additive increase, multiplicative decrease on throttling.

The limit starts at the configured maximum. A 429 (or any answer carrying
Retry-After) multiplies it by ``decrease``, once per round: calls that started
before the last decrease cannot lower it again. Each success adds 1/limit, so
the limit grows by about one per round of successful calls, back to the maximum.
"""

from __future__ import annotations

import asyncio


class AdaptiveLimiter:
    """An asyncio semaphore whose size follows the provider's rate limit."""

    def __init__(self, maximum: int, decrease: float = 0.7) -> None:
        self.maximum = maximum
        self.decrease = decrease
        self.limit = float(maximum)
        self.inflight = 0
        self._round = 0  # bumped by each decrease
        self._cond: asyncio.Condition | None = None

    @property
    def current(self) -> int:
        return max(1, int(self.limit))

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def acquire(self) -> int:
        """Wait for a slot; returns the round the call starts in (give it back to release)."""
        cond = self._condition()
        async with cond:
            await cond.wait_for(lambda: self.inflight < self.current)
            self.inflight += 1
            return self._round

    async def release(self, started_round: int, *, throttled: bool) -> None:
        cond = self._condition()
        async with cond:
            self.inflight -= 1
            self.record(started_round, throttled=throttled)
            cond.notify_all()

    def record(self, started_round: int, *, throttled: bool) -> None:
        """The arithmetic alone (pure, for tests)."""
        if throttled:
            if started_round == self._round:
                self.limit = max(1.0, self.limit * self.decrease)
                self._round += 1
        else:
            self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)
