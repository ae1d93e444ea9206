"""The self-healing pass: files still without news are checked in the archive.

Kafka messages can be lost, and a file already on disk when staged may never
get one (docs/contracts.md, "Kafka notifications"). Every
``restageIntervalSeconds`` a staging job's pending files are looked up with
Scout's file status: those on disk are recorded as ready (which may complete
the job, by the same rule as the bridge: ``mwa_staging.db.completion``), the
others are staged again.
Staging twice is harmless, so the worst a needless pass costs is Scout calls.
Those calls are bounded: at most ``scout_status_concurrency`` in flight and
``scout_status_rate_per_second`` a second, all passes of the process together
(the archive is shared), and a pass runs as its own task in the scheduler's
restage lane, so it never holds up other jobs' work.

A pass stops at the first Scout failure (the archive is probably down and every
further query would wait out the retry budget); the next pass is already
scheduled by the claim.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from mwa_staging.db import jobs_queries, status_queries
from mwa_staging.scout import ScoutClient, ScoutError
from mwa_staging.vocabulary import JobState, Reason
from mwa_staging_operator import metrics
from mwa_staging_operator.events import ObjectRef
from mwa_staging_operator.ratelimit import Pacer
from mwa_staging_operator.services import Services

log = logging.getLogger(__name__)


async def split_on_disk(
    scout: ScoutClient, paths: Sequence[str], concurrency: int, pacer: Pacer | None = None
) -> tuple[list[str], list[str]]:
    """(on disk, not on disk or unknown) for ``paths``, ``concurrency`` queries at a time.

    A fixed set of workers walks the list, so 100,000 paths never become
    100,000 tasks; each query first waits for its slot of ``pacer`` (the
    process-wide rate of file-status queries). Raises ScoutError (the first
    one) and stops the others.
    """
    on_disk: list[str] = []
    offline: list[str] = []
    items = iter(paths)

    async def worker() -> None:
        for path in items:
            if pacer is not None:
                await pacer.wait()
            status = await scout.file_status(path)
            if status is not None and status.on_disk:
                on_disk.append(path)
            else:
                offline.append(path)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, concurrency))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    return on_disk, offline


async def restage(app: Services, claim: jobs_queries.Claim) -> None:
    """One restage pass over one job; the next one is due an interval after it ends."""
    try:
        await _pass(app, claim)
    finally:
        await app.db.run(lambda cur: jobs_queries.reschedule_restage(cur, claim.job_pk))


async def _pass(app: Services, claim: jobs_queries.Claim) -> None:
    ref = ObjectRef(claim.namespace, claim.name, claim.uid)
    paths = await app.db.run(lambda cur: jobs_queries.pending_paths(cur, claim.job_pk))
    if not paths:
        return
    try:
        on_disk, offline = await split_on_disk(
            app.scout, paths, app.settings.scout_status_concurrency, app.status_pacer
        )
    except ScoutError as exc:
        log.warning("restage pass of job %s stopped: %s", claim.job_id, exc)
        app.events.warning(ref, Reason.RESTAGE_FAILED, f"restage pass stopped: {exc}")
        return
    marked, completed = await app.db.run(
        lambda cur: jobs_queries.mark_files_ready(cur, claim.job_pk, on_disk)
    )
    metrics.RESTAGED_FILES.labels("on_disk").inc(marked)
    restaged = 0
    if not completed and offline:
        job = await app.db.run(lambda cur: status_queries.get_job(cur, claim.job_pk))
        if job is not None and job.state == JobState.STAGING:
            try:
                await app.scout.stage(offline, str(claim.job_id), app.settings.kafka_topic)
                restaged = len(offline)
            except ScoutError as exc:
                app.events.warning(ref, Reason.RESTAGE_FAILED, f"staging again failed: {exc}")
    metrics.RESTAGED_FILES.labels("restaged").inc(restaged)
    app.events.normal(
        ref,
        Reason.RESTAGED,
        f"{marked} file(s) found on disk without a message, {restaged} staged again",
    )
    if marked:
        await app.update_status(claim.job_pk)
    if completed:
        app.wake()
