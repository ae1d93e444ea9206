"""The archive's disk cache state (Scout ``/v1/fscache``): polled, exported, served.

The gateway reads it every ``fscache_poll_seconds`` and exports it as
Prometheus gauges; ``/get_stats`` reads it afresh (the original asked Scout on
each call), so its figures are current. When Scout does not answer, the gauges
say so (``..._fscache_up`` 0, health 0 "unknown") and ``/get_stats`` keeps the
cache fields at their defaults, as the original did.
"""

from __future__ import annotations

import asyncio
import logging
import time

from mwa_staging.observability import RateLimitedLog
from mwa_staging.scout import CacheState, ScoutClient, ScoutError
from mwa_staging_gateway import metrics

log = logging.getLogger(__name__)
_quiet = RateLimitedLog(log, interval=300.0)


class CacheWatcher:
    """Reads the cache state and keeps the gauges up to date."""

    def __init__(self, scout: ScoutClient, *, interval: float, timeout: float) -> None:
        self.scout = scout
        self.interval = interval
        self.timeout = timeout
        self.last: CacheState | None = None

    async def read(self) -> CacheState | None:
        """The cache state now, or None when Scout does not answer in time."""
        try:
            state = await asyncio.wait_for(self.scout.fscache(), self.timeout)
        except (ScoutError, TimeoutError) as exc:
            metrics.FSCACHE_UP.set(0)
            metrics.FSCACHE_HEALTH.set(0)
            _quiet.warning("fscache", "reading the archive's cache state failed: %s", exc)
            return None
        self.last = state
        for kind, value in (
            ("available", state.available),
            ("total", state.total),
            ("releaseable", state.releasable),
            ("nonreleaseable", state.non_releasable),
            ("pending", state.pending),
        ):
            metrics.FSCACHE_BYTES.labels(kind).set(value)
        metrics.FSCACHE_HEALTH.set(state.health)
        metrics.FSCACHE_UP.set(1)
        metrics.FSCACHE_LAST_SUCCESS.set(time.time())
        return state

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await self.read()
            await asyncio.sleep(self.interval)
