"""Taking on a new StagingJob: record, resolve, record the files, stage.

The create handler must be idempotent: the intake runs it again for every
object at each start (and after a database error), and a 100,000-file job
killed anywhere in here must end with exact counts and one callback. Each step
is a database transaction that moves the row forward, and the handler resumes
from the state it finds:

=====================================  =========================================
row state found                        what runs
=====================================  =========================================
none                                   insert (duplicate check), then all below
``resolving``                          resolve, then COPY files + ``staging`` in
                                       one transaction (all or nothing)
``staging``, stage not yet recorded    stage the pending files beyond the stage
                                       cursor, record it
anything else                          nothing
=====================================  =========================================

Each step is its own function: :func:`handle_create` inserts, then
``_advance`` runs the callback allow-list check, the lookup (bounded by the
deadline), the COPY of the files, and the stage calls (``_stage`` re-reads the
row, ``_request_stage`` makes the calls and moves the cursor).

Stage calls go in code-point order of the paths and, after each call Scout
accepted, the last path of the call is recorded as ``jobs.stage_cursor``. So
the database always knows which paths were requested: a resumed handler
stages only the rest, and a job that ends part way (102 after some calls were
accepted, an unexpected error, its deadline) has exactly the requested paths
that no other live job holds cancelled, by the scheduler, as for a timeout.

The deadline (``activeDeadlineSeconds``) runs from the job's start in every
state: the scheduler times out a job stuck resolving too, and this handler
stops waiting for the lookup once the deadline has passed.

The files are in the database *before* Scout is asked, because the archive's
Kafka message for a file can arrive before the stage call returns and the
bridge only matches files it finds there.

Failures end the job with the contract's codes (100 and 101 from the lookup,
102 when Scout still refuses after the retry budget, 199 for anything
unexpected) and make the callback due. Database errors are not a reason to
fail a job: they raise :class:`RetryLater` and the intake runs the handler again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg2

from mwa_staging.callback_policy import CallbackRefused, check_target
from mwa_staging.db import jobs_queries, status_queries
from mwa_staging.db.rows import JobRow
from mwa_staging.resolve import ResolveError, resolve_observation
from mwa_staging.scout import ScoutError
from mwa_staging.settings import Settings
from mwa_staging.vocabulary import FAILURE_REASONS, JobState, Reason, ReturnCode
from mwa_staging_operator import filelists, metrics
from mwa_staging_operator.events import ObjectRef
from mwa_staging_operator.services import Services

log = logging.getLogger(__name__)

#: The create handler stops waiting for the file lookup this long after the
#: job's deadline (the scheduler has timed the job out by then).
DEADLINE_GRACE_SECONDS = 1.0
#: A step (the lookup, the stage calls) that takes longer than this gets its
#: phase shown while it runs; a quicker one is shown by the next status write.
SHOW_PHASE_AFTER_SECONDS = 0.5

T = TypeVar("T")


async def _show_if_slow(app: Services, job_pk: int, work: Awaitable[T]) -> T:
    """Await ``work``; once it has taken SHOW_PHASE_AFTER_SECONDS, write the job's status.

    Each status write is a request to the API server and an event to every
    watcher, so a small job's quick steps share one write (the one after its
    stage call) instead of one each; a person still sees a slow step's phase
    (Resolving during a long lookup, Staging while a stage call is slow) within
    half a second. A job of several stage calls shows Staging before them.
    """
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=SHOW_PHASE_AFTER_SECONDS)
        if not done:
            await app.update_status(job_pk)
        return await task
    except BaseException:
        task.cancel()
        raise


class JobEnded(Exception):
    """The job left ``staging`` (deadline, deletion) while its stage calls were under way."""

    def __init__(self, state: str | None) -> None:
        super().__init__(f"the job is {state or 'gone'}")
        self.state = state


@dataclass(frozen=True)
class _Found:
    """The lookup's answer: the job's paths, and how long finding them took."""

    paths: list[str]
    seconds: float


class RetryLater(Exception):
    """A temporary problem (the database): run the handler again after ``delay`` seconds."""

    def __init__(self, message: str, delay: float = 10.0) -> None:
        super().__init__(message)
        self.delay = delay


def generation_of(body: Mapping[str, Any]) -> int:
    """``metadata.generation`` (1 when absent)."""
    return int(body["metadata"].get("generation") or 1)


def ttl_of(body: Mapping[str, Any]) -> int | None:
    """``spec.ttlSecondsAfterFinished``, the one field that may change after creation."""
    ttl = body["spec"].get("ttlSecondsAfterFinished")
    return None if ttl is None else int(ttl)


def new_job(body: Mapping[str, Any], settings: Settings) -> jobs_queries.NewJob:
    """What is recorded for a StagingJob object, with the operator's defaults applied."""
    meta = body["metadata"]
    spec = body["spec"]
    callback = spec.get("callback") or {}
    secret = (callback.get("secretRef") or {}).get("name")
    return jobs_queries.NewJob(
        uid=meta["uid"],
        namespace=meta["namespace"],
        name=meta["name"],
        job_id=int(spec["jobId"]),
        generation=generation_of(body),
        notify_url=str(callback.get("url", "")),
        callback_secret=secret or None,
        active_deadline_s=int(spec.get("activeDeadlineSeconds") or settings.job_expiry_time),
        restage_interval_s=int(
            spec.get("restageIntervalSeconds") or settings.file_restage_interval
        ),
        ttl_after_finished_s=ttl_of(body),
    )


def unique_paths(files: Sequence[str]) -> list[str]:
    """The spec's files in order, each once (the same path twice is one file)."""
    return list(dict.fromkeys(files))


def past_create_steps(job: JobRow) -> bool:
    """Nothing of this module is left to do for the row (the scheduler has the rest)."""
    if job.state == JobState.RESOLVING:
        return False
    return not (job.state == JobState.STAGING and job.stage_requested_at is None)


async def handle_create(app: Services, body: Mapping[str, Any]) -> JobRow:
    """Take the job as far as it goes now (see the module's table); return its row as found.

    Called for every object the operator sees for the first time, also at each
    start-up (``intake``): a row already past the create steps costs one query
    and no write (a status behind its row is the sweep's).
    """
    settings = app.settings
    new = new_job(body, settings)
    ref = ObjectRef(new.namespace, new.name, new.uid)
    try:
        created = await app.db.run(lambda cur: jobs_queries.create_job(cur, new))
    except psycopg2.Error as exc:
        raise RetryLater(f"database unavailable: {type(exc).__name__}") from exc
    job = created.job
    if created.duplicate_of is not None:
        metrics.JOBS_CREATED.labels("duplicate").inc()
        app.events.warning(ref, Reason.DUPLICATE_JOB_ID, job.message or "")
        await app.update_status(job.id)
        return job
    if created.created:
        metrics.JOBS_CREATED.labels("accepted").inc()
    elif past_create_steps(job):
        return job
    try:
        await _advance(app, job, body, ref)
    except RetryLater:
        raise
    except psycopg2.Error as exc:
        raise RetryLater(f"database error: {type(exc).__name__}") from exc
    except Exception as exc:
        log.exception("unexpected error creating StagingJob %s/%s", ref.namespace, ref.name)
        message = f"unexpected error while creating the job: {type(exc).__name__}: {exc}"
        await _fail(app, job, ref, ReturnCode.UNEXPECTED, message[:1000])
    return job


async def _fail(
    app: Services,
    job: JobRow,
    ref: ObjectRef,
    code: ReturnCode,
    message: str,
    *,
    callback: bool = True,
) -> None:
    reason = FAILURE_REASONS[code]
    changed = await app.db.run(
        lambda cur: jobs_queries.fail_job(
            cur, job.id, int(code), reason, message, callback=callback
        )
    )
    if changed:
        metrics.JOBS_CREATED.labels(f"failed_{int(code)}").inc()
        app.events.warning(ref, reason, f"return code {int(code)}: {message}")
    await app.update_status(job.id)
    app.wake()


async def _advance(app: Services, job: JobRow, body: Mapping[str, Any], ref: ObjectRef) -> None:
    """Run the steps the row's state still needs (the module's table), in order."""
    paths: list[str] | None = None
    if job.state == JobState.RESOLVING:
        if not await _callback_host_allowed(app, job, ref):
            return
        # Resolving is shown if the lookup takes a while (see _show_if_slow).
        found = await _show_if_slow(app, job.id, _lookup(app, job, body["spec"], ref))
        if found is None:
            return
        paths = await _record_files(app, job, ref, found)
    await _stage(app, job, ref, paths)


async def _callback_host_allowed(app: Services, job: JobRow, ref: ObjectRef) -> bool:
    """The callback target rules: a job whose callback may not be sent fails at once (199)."""
    settings = app.settings
    try:
        await check_target(
            job.notify_url, settings.callback_allowed_hosts, settings.callback_networks()
        )
    except CallbackRefused as exc:
        await _fail(
            app, job, ref, ReturnCode.UNEXPECTED, f"callback refused: {exc}", callback=False
        )
        return False
    return True


async def _lookup(
    app: Services, job: JobRow, spec: Mapping[str, Any], ref: ObjectRef
) -> _Found | None:
    """The job's paths, waiting no longer than its deadline; None when the job ended."""
    started = time.monotonic()
    try:
        paths = await asyncio.wait_for(_resolve(app, job, spec), _until_deadline(job))
    except ResolveError as exc:
        await _fail(app, job, ref, exc.code, exc.message)
        return None
    except TimeoutError:
        # The deadline passed during the lookup: the scheduler times the job
        # out (code 10, callback); the handler has nothing left to do.
        log.info("job %s (%s/%s): deadline passed while resolving", *_ids(job, ref))
        app.wake()
        return None
    return _Found(paths, time.monotonic() - started)


async def _record_files(
    app: Services, job: JobRow, ref: ObjectRef, found: _Found
) -> list[str] | None:
    """COPY the files and move the job to ``staging``; None if an earlier run had done it."""
    paths = found.paths
    started = time.monotonic()
    recorded = await app.db.run(lambda cur: jobs_queries.record_files(cur, job.id, paths))
    log.info(
        "job %s (%s/%s): %d files resolved in %.2f s, recorded in %.2f s",
        *_ids(job, ref),
        len(paths),
        found.seconds,
        time.monotonic() - started,
    )
    if not recorded:
        return None
    metrics.FILES_RESOLVED.inc(len(paths))
    # No Event of its own: the Resolved condition shows it, and the StageRequested
    # Event follows (each Event is an object the API server stores).
    return paths  # Staging is shown during the stage calls, or after them (_request_stage)


async def _stage(app: Services, job: JobRow, ref: ObjectRef, paths: list[str] | None) -> None:
    """Stage what Scout has not accepted yet, if the job (re-read now) still needs it.

    ``paths`` are the files this run recorded; None means a resumed run, which
    stages the pending paths beyond the stage cursor.
    """
    current = await app.db.run(lambda cur: status_queries.get_job(cur, job.id))
    if (
        current is None
        or current.state != JobState.STAGING
        or current.stage_requested_at is not None
    ):
        await app.update_status(job.id)
        return
    if paths is None:  # resumed after a restart: what Scout has not accepted yet
        paths = await app.db.run(lambda cur: jobs_queries.unrequested_paths(cur, job.id))
    else:  # stage order is code-point order, so that the stage cursor means something
        paths = sorted(paths)
    await _request_stage(app, current, ref, paths)


async def _request_stage(app: Services, job: JobRow, ref: ObjectRef, paths: list[str]) -> None:
    """The stage calls, moving the stage cursor after each; then record the stage."""
    accepted = 0

    async def on_accepted(part: Sequence[str]) -> None:
        nonlocal accepted
        last = part[-1]
        state = await app.db.run(lambda cur: jobs_queries.record_stage_progress(cur, job.id, last))
        accepted += len(part)
        if state != JobState.STAGING:
            raise JobEnded(state)

    started = time.monotonic()
    calls_made = app.scout.stage(
        paths, str(job.job_id), app.settings.kafka_topic, on_accepted=on_accepted
    )
    try:
        if len(paths) > app.settings.scout_max_paths_per_call:
            await app.update_status(job.id)  # several stage calls: show Staging now
            calls = await calls_made
        else:
            calls = await _show_if_slow(app, job.id, calls_made)
    except JobEnded as ended:
        # Timed out (or deleted) while staging: what was staged is cancelled by
        # the scheduler (record_stage_progress scheduled it); nothing more to do.
        log.info(
            "job %s (%s/%s) ended (%s) while staging; %d of %d files had been requested",
            *_ids(job, ref),
            ended.state or "deleted",
            accepted,
            len(paths),
        )
        await app.update_status(job.id)
        app.wake()
        return
    except ScoutError as exc:
        message = str(exc)
        if accepted:
            message += (
                f"; {accepted} of {len(paths)} files had been requested from the archive"
                " and are being cancelled"
            )
        await _fail(app, job, ref, ReturnCode.STAGE_FAILED, message)
        return
    log.info(
        "job %s (%s/%s): %d files staged in %d call(s) in %.2f s",
        *_ids(job, ref),
        len(paths),
        calls,
        time.monotonic() - started,
    )
    await app.db.run(lambda cur: jobs_queries.mark_stage_requested(cur, job.id))
    if calls > 1:
        # A big job's staging is worth an Event; a small job's one call is in its
        # StageRequested condition, and its Complete Event follows (each Event is an
        # object the API server stores: with thousands of jobs, a write per job).
        app.events.normal(
            ref,
            Reason.STAGE_REQUESTED,
            f"asked the archive to stage {len(paths)} files in {calls} call(s)",
        )
    await app.update_status(job.id)
    app.wake()  # the first restage pass is now scheduled


def _until_deadline(job: JobRow) -> float:
    """Seconds left until the job's deadline (a little more, so the scheduler is first)."""
    if job.deadline is None:
        return 365 * 86400.0
    left = (job.deadline - datetime.now(UTC)).total_seconds()
    return max(left, 0.0) + DEADLINE_GRACE_SECONDS


def _ids(job: JobRow, ref: ObjectRef) -> tuple[int, str, str]:
    return job.job_id, ref.namespace, ref.name


async def _resolve(app: Services, job: JobRow, spec: Mapping[str, Any]) -> list[str]:
    if spec.get("filesFrom"):
        return await filelists.load(app, job.namespace, spec["filesFrom"], job.created_at)
    files = spec.get("files")
    if files is not None:
        paths = unique_paths([str(f) for f in files])
        if not paths:
            raise ResolveError(ReturnCode.NO_FILES, "spec.files is empty")
        return paths
    obs = spec.get("observation") or {}
    return await resolve_observation(
        app.http,
        app.settings,
        int(obs["obsId"]),
        obs.get("startTime"),
        obs.get("duration"),
        slots=app.data_files_slots,
    )
