"""Adaptive concurrency for model calls: AIMD, like TCP's congestion window.

The limit is a float that starts at the configured maximum. A throttled call
(429, or any answer carrying Retry-After) sent after the latest cut starts a new
round and cuts the limit to ``decrease`` (0.7) x min(limit, in flight), where
"in flight" counts our calls out when the 429 came back, itself included (TCP's
"half the flight size": a 429 while 9 calls are out says the provider takes
fewer than 9, whatever the limit was). 429s from calls sent before that cut are
the same wave: they never compound it, they can only bring the limit down to
0.7 x the calls in flight when they came back. Every successful call sent while
the limit was in full use adds ``1 / limit``, i.e. +1 per ``limit`` successes,
back up to the maximum (calls sent with room to spare say nothing about whether
more would pass, so the tail of a batch does not inflate the limit).
``acquire()`` waits while the calls in flight are at least ``floor(limit)``.

Used from one asyncio event loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import enum
import math
from collections import deque
from dataclasses import dataclass

# Additive steps accumulate float error; 7.9999999 must still count as 8.
_EPSILON = 1e-9


class Result(enum.Enum):
    """How a call that held a slot ended, as far as the limit is concerned."""

    OK = "ok"                # grows the limit
    THROTTLED = "throttled"  # shrinks it (once per round)
    NEUTRAL = "neutral"      # other failures, cancellation: no signal either way


@dataclass(frozen=True)
class Slot:
    """A permission to have one call in flight.

    ``epoch``: how many cuts had been made when the call started; ``load``: calls in flight then, itself included.
    """

    epoch: int
    load: int


class AdaptiveLimiter:
    """An asyncio limiter whose limit follows additive-increase / multiplicative-decrease."""

    def __init__(self, max_limit: int, *, decrease: float = 0.7, min_limit: float = 1.0) -> None:
        if max_limit < 1:
            raise ValueError("max_limit must be at least 1")
        if not 0.0 < decrease < 1.0:
            raise ValueError("decrease must be between 0 and 1")
        self.max_limit = max_limit
        self.decrease = decrease
        self.min_limit = max(1.0, min_limit)
        self.limit = float(max_limit)
        self.in_flight = 0
        self.epoch = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def current(self) -> int:
        """Calls allowed in flight now: floor(limit), at least 1."""
        return max(1, math.floor(self.limit + _EPSILON))

    async def acquire(self) -> Slot:
        """Wait for room under the limit and take a slot; release() it when the call ends."""
        if not self._waiters and self.in_flight < self.current:
            self.in_flight += 1
            return Slot(self.epoch, self.in_flight)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._grant()  # the queue may have held only cancelled waiters
        try:
            await waiter
        except BaseException:
            # A cancelled waiter stays queued (removing it is O(n)); _grant() skips it.
            if not waiter.cancelled():
                # Granted a slot in the same tick we were cancelled: hand it on.
                self.in_flight -= 1
                self._grant()
            raise
        # Read on resumption: the call starts now, not when the slot was granted.
        return Slot(self.epoch, self.in_flight)

    def release(self, slot: Slot, result: Result) -> None:
        """Give the slot back and adjust the limit by how the call ended."""
        if result is Result.THROTTLED:
            self.on_throttled(slot, self.in_flight)
        elif result is Result.OK:
            self.on_success(slot)
        self.in_flight -= 1
        self._grant()

    def on_throttled(self, slot: Slot, in_flight: int) -> bool:
        """Multiplicative decrease, once per round; True if the limit dropped.

        ``in_flight``: our calls out when the 429 came back, the throttled one included.
        """
        if slot.epoch == self.epoch:
            # The first 429 of a round: cut, and start a new round.
            self.limit = max(self.min_limit, self.decrease * min(self.limit, float(in_flight)))
            self.epoch += 1
            return True
        # The same wave (or an older one) as a cut already made: it can only show that the provider
        # still said no with fewer calls out than the cut assumed. Lower the limit to 0.7 x that,
        # which never compounds the cut.
        target = max(self.min_limit, self.decrease * in_flight)
        if target < self.limit:
            self.limit = target
            return True
        return False

    def on_success(self, slot: Slot) -> bool:
        """Additive increase (+1 per ``limit`` successes, capped at the maximum) if the call used the whole limit."""
        if self.limit >= self.max_limit or slot.load < self.current:
            return False
        self.limit = min(float(self.max_limit), self.limit + 1.0 / self.limit)
        return True

    def _grant(self) -> None:
        while self._waiters and self.in_flight < self.current:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)
