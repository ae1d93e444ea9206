"""The one scheduler task: all delayed work of every job, with near-zero idle cost.

Instead of a kopf timer or daemon per StagingJob (a task each, and API traffic
for each), one loop reads the earliest due time of each kind of work from the
database -- deadlines, restage passes, callbacks, cancels, TTL deletions, each
the head of a partial index -- does what is due, and sleeps until the next due
time. It wakes early when:

* a handler changed something (``Services.wake``, e.g. a job failed: callback due);
* a job completed (PostgreSQL ``NOTIFY mwa_staging_jobs``, see ``mwa_staging.db.completion``);
* a task it started finished (a free slot may let more work start);

and in any case after ``scheduler_max_sleep_seconds`` (a safety net: a missed
wake-up costs at most that much latency). An idle operator with thousands of
live jobs therefore makes one small query per max-sleep period.

Work is claimed in the database (see ``jobs_queries``) and run as tasks in
bounded lanes (callbacks, restages, cancels, deletions), so a slow receiver or
a long restage pass never delays other jobs' deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mwa_staging.db import jobs_queries
from mwa_staging.db.rows import JobRow
from mwa_staging.observability import RateLimitedLog
from mwa_staging.projection import write_dirty_statuses
from mwa_staging_operator import callback_delivery, deadline, delete, metrics, restage
from mwa_staging_operator.services import Services

log = logging.getLogger(__name__)

#: Shortest sleep, so that a due item that cannot be claimed yet never spins the loop.
MIN_SLEEP_SECONDS = 0.05
#: A status behind its row for this long is projected by the sweep.
SWEEP_AFTER_SECONDS = 5.0


def sleep_seconds(
    due: jobs_queries.DueTimes,
    max_sleep: float,
    *,
    callbacks_blocked: bool = False,
    callback_wait: float = 0.0,
    restage_blocked: bool = False,
    cancel_blocked: bool = False,
    delete_blocked: bool = False,
) -> float:
    """How long to sleep: until the earliest due work that could start, within bounds.

    A kind of work whose lane is full is ignored (a finishing task wakes the
    loop); due callbacks wait at least ``callback_wait`` (the rate limit).
    """
    now = due.now
    candidates: list[float] = []

    def add(when: Any, extra: float = 0.0) -> None:
        if when is not None:
            candidates.append(max((when - now).total_seconds(), extra))

    add(due.deadline)
    if not restage_blocked:
        add(due.restage)
    if not callbacks_blocked:
        add(due.callback, callback_wait)
    if not cancel_blocked:
        add(due.cancel)
    if not delete_blocked:
        add(due.delete)
    if not candidates:
        return max_sleep
    return min(max(min(candidates), MIN_SLEEP_SECONDS), max_sleep)


async def _limited(app: Services, job: JobRow) -> None:
    """One callback attempt; its rate-limit slot counts from when it ended."""
    try:
        await callback_delivery.attempt(app, job)
    finally:
        app.limiter.finish()


class Lane:
    """A bounded set of running tasks of one kind."""

    def __init__(self, name: str, capacity: int, on_done: Callable[[], None]) -> None:
        self.name = name
        self.capacity = capacity
        self._on_done = on_done
        self.tasks: dict[int, asyncio.Task[None]] = {}

    @property
    def free(self) -> int:
        return max(0, self.capacity - len(self.tasks))

    def start(self, key: int, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s task for job %s failed", self.name, key)

        task = asyncio.create_task(guarded(), name=f"{self.name}-{key}")
        self.tasks[key] = task

        def done(_: asyncio.Task[None]) -> None:
            if self.tasks.get(key) is task:
                del self.tasks[key]
            self._on_done()

        task.add_done_callback(done)

    def cancel(self, key: int) -> None:
        task = self.tasks.pop(key, None)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Scheduler:
    """Runs :meth:`run` as one task from the operator's start-up to its cleanup."""

    def __init__(self, app: Services) -> None:
        self.app = app
        s = app.settings
        self.callbacks = Lane("callback", s.callback_concurrency, app.wake)
        self.restages = Lane("restage", s.restage_concurrency, app.wake)
        self.cancels = Lane("cancel", 4, app.wake)
        self.deletions = Lane("ttl-delete", 4, app.wake)
        self._counts_at = 0.0
        # A database or API server outage fails every pass: warn once a minute, not every 5 s.
        self._rlog = RateLimitedLog(log, 60.0)

    def forget_callback(self, job_pk: int) -> None:
        """The job is being deleted: stop an attempt in flight (no callback for it)."""
        self.callbacks.cancel(job_pk)

    async def stop(self) -> None:
        for lane in (self.callbacks, self.restages, self.cancels, self.deletions):
            await lane.stop()

    async def run(self) -> None:
        wake = self.app.wake_event
        max_sleep = self.app.settings.scheduler_max_sleep_seconds
        while True:
            wake.clear()
            try:
                sleep = await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._rlog.warning("pass", "scheduler pass failed (%s); retrying soon", exc)
                sleep = min(5.0, max_sleep)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=sleep)

    async def pass_once(self) -> float:
        """Start everything due now; return how long to sleep."""
        app = self.app
        s = app.settings
        metrics.SCHEDULER_PASSES.inc()
        await deadline.time_out_due(app)

        if self.cancels.free:
            for claim in await app.db.run(
                lambda cur: jobs_queries.claim_cancels(
                    cur, self.cancels.free, s.cancel_retry_seconds
                )
            ):
                self.cancels.start(claim.job_pk, deadline.cancel_pending(app, claim))

        if self.restages.free:
            for claim in await app.db.run(
                lambda cur: jobs_queries.claim_restages(
                    cur, self.restages.free, list(self.restages.tasks)
                )
            ):
                self.restages.start(claim.job_pk, restage.restage(app, claim))

        budget = min(self.callbacks.free, app.limiter.available(), s.scheduler_batch)
        if budget:
            lease = callback_delivery.lease_seconds(app)
            rows: list[JobRow] = await app.db.run(
                lambda cur: jobs_queries.claim_callbacks(cur, budget, lease)
            )
            for job in rows:
                app.limiter.take()
                self.callbacks.start(job.id, _limited(app, job))

        if self.deletions.free:
            for claim in await app.db.run(
                lambda cur: jobs_queries.claim_ttl_deletes(cur, self.deletions.free, 300.0)
            ):
                self.deletions.start(claim.job_pk, delete.delete_expired(app, claim))

        retry_soon = await self._sweep()
        await self._refresh_counts()

        due = await app.db.run(jobs_queries.due_times)
        sleep = sleep_seconds(
            due,
            s.scheduler_max_sleep_seconds,
            callbacks_blocked=self.callbacks.free == 0,
            callback_wait=app.limiter.wait_seconds(),
            restage_blocked=self.restages.free == 0,
            cancel_blocked=self.cancels.free == 0,
            delete_blocked=self.deletions.free == 0,
        )
        return min(sleep, 1.0) if retry_soon else sleep

    async def _sweep(self) -> bool:
        """Project statuses left behind (a busy lock or an API error at the time).

        Returns True when a projection was just refused, so the next pass comes
        soon instead of after a full sleep.
        """
        app = self.app
        busy = app.projection_busy
        app.projection_busy = False
        interval = 0.0 if busy else SWEEP_AFTER_SECONDS
        try:
            await app.status_db.run_conn(
                lambda conn: write_dirty_statuses(
                    conn, app.jobs, min_interval_s=interval, limit=100
                )
            )
        except Exception as exc:
            self._rlog.warning("sweep", "status sweep failed: %s", type(exc).__name__)
            return False
        return busy

    async def _refresh_counts(self) -> None:
        now = time.monotonic()
        if now - self._counts_at < metrics.JOBS_REFRESH_SECONDS:
            return
        self._counts_at = now
        counts = await self.app.db.run(jobs_queries.counts_by_state)
        metrics.set_job_counts(counts)
