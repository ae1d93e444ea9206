"""A global limit on callbacks: at most N in any sliding window of ``period`` seconds.

The original limited callbacks to 200 a minute so that a burst of finished
jobs (e.g. after an outage of the portal) does not flood the client. A sliding
log of send times gives exactly "at most N in any minute" (a token bucket would
allow up to 2N across a minute boundary), counted as the receiver sees them.
The limiter is consulted *before* callbacks are claimed from the database, so a
claimed callback is sent at once and its lease never expires while it waits for
a slot.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class SlidingWindowLimiter:
    """``available()`` slots now; ``take()`` uses one, ``finish()`` ends its send.

    A send holds its slot from its start until ``period`` after it ended: the
    receiver sees the request somewhere in between, so counting from the end
    makes "at most N in any window" hold at the receiver as well. Counting
    starts only let through about rate x latency more (3,020 arrivals in one
    minute at 3,000 a minute in the many-jobs benchmark, issue 12).
    """

    def __init__(
        self, limit: int, period: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.period = period
        self._clock = clock
        self._ended: deque[float] = deque()  # end times, oldest first
        self._in_flight = 0

    def _expire(self, now: float) -> None:
        while self._ended and self._ended[0] <= now - self.period:
            self._ended.popleft()

    def available(self) -> int:
        self._expire(self._clock())
        return self.limit - self._in_flight - len(self._ended)

    def take(self) -> None:
        if self.available() <= 0:
            raise RuntimeError("no slot available: call available() first")
        self._in_flight += 1

    def finish(self) -> None:
        """A send taken earlier has ended (answered, failed or cancelled)."""
        self._in_flight = max(0, self._in_flight - 1)
        self._ended.append(self._clock())

    def wait_seconds(self) -> float:
        """0 when a slot is free, else seconds until one is (a send ending wakes callers too)."""
        now = self._clock()
        self._expire(now)
        if self.limit - self._in_flight - len(self._ended) > 0:
            return 0.0
        if self._ended:
            return max(0.0, self._ended[0] + self.period - now)
        return self.period  # every slot in flight: the first to end frees nothing before period


class Pacer:
    """At most ``rate`` events a second, evenly spaced, for every caller of :meth:`wait`.

    The restage passes' file-status queries go through one of these (setting
    ``scout_status_rate_per_second``): the archive is shared with every other
    client, so a 100,000-file pass must trickle, not burst, however many passes
    run at once. Slots are handed out in call order (``next`` moves forward by
    ``1/rate`` per call), so the bound holds across all concurrent passes; an
    idle pacer does not bank slots for a later burst.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self._gap = 1.0 / rate
        self._clock = clock
        self._next = 0.0

    def delay(self) -> float:
        """Take the next slot; seconds to wait until it (0 when it is now)."""
        now = self._clock()
        slot = max(now, self._next)
        self._next = slot + self._gap
        return slot - now

    async def wait(self) -> None:
        """Wait for this caller's slot."""
        pause = self.delay()
        if pause > 0:
            await asyncio.sleep(pause)
