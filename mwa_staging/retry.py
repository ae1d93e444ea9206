"""The one retry policy: exponential backoff, capped, optionally jittered.

Every place that waits before trying again uses :class:`Backoff`: the Scout
client (within its per-call budget), the data_files lookup, the callback's
next attempt, the bridge's batch transactions, database reconnects and the
operator's LISTEN connection. The n-th pause (1-based) is
``initial * factor ** (n - 1)``, capped at ``maximum``, then multiplied by a
random factor in ``[1 - jitter, 1 + jitter]``.

Why our own twenty lines and not tenacity or backoff: those libraries wrap a
function call in a retry loop, and only some of our retries are loops. The
callback's pause is computed from the attempt number stored in the database
(the "loop" spans process restarts), the bridge's transaction loop picks a
different action per error class (retry now, reconnect, bisect the batch) and
waits on a ``threading.Event`` so that SIGTERM interrupts the pause, and the
Scout client stops at a time budget rather than a count. A decorator would
fit none of these without bending, and a pure policy object fits all of
them, with no dependency to keep up.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """The pauses between attempts: ``initial``, doubling (``factor``), capped at ``maximum``."""

    initial: float
    maximum: float
    factor: float = 2.0
    jitter: float = 0.0  # fraction: 0.2 spreads each pause over +-20 %

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt number ``attempt`` (1-based; below 1 counts as 1)."""
        pause = self.initial
        for _ in range(max(attempt, 1) - 1):
            if pause >= self.maximum:
                break
            pause *= self.factor
        pause = min(pause, self.maximum)
        if self.jitter:
            pause *= random.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return float(pause)

    def delays(self) -> Delays:
        """A fresh sequence of pauses for one run of retries."""
        return Delays(self)


class Delays:
    """The pauses of one run of retries; :meth:`reset` once an attempt succeeded.

    An iterator (``next(delays)``), for loops that keep their own state across
    successes too (a reconnecting thread, the bridge's transaction loop).
    """

    def __init__(self, policy: Backoff) -> None:
        self.policy = policy
        self.failures = 0

    def __iter__(self) -> Delays:
        return self

    def __next__(self) -> float:
        self.failures += 1
        return self.policy.delay(self.failures)

    def reset(self) -> None:
        self.failures = 0
