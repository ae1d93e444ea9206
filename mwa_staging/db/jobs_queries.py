"""Every SQL statement of the operator, by step of a job's life.

Conventions (see migrations/0001_init.sql and 0003_operator_schedule.sql):

* Functions take a cursor and never commit: the caller decides what one
  transaction holds (e.g. the files and the move to ``staging`` go together, so
  the Kafka bridge, which matches only ``staging`` jobs, never sees half a job).
* Every change the status shows bumps ``jobs.version`` so the projection
  (``mwa_staging.projection``) knows the status is behind.
* Delayed work is *claimed*: the statement that picks due rows also pushes their
  due time forward (a lease) under ``FOR UPDATE SKIP LOCKED``. A restart then
  finds the work still due (lease expired) instead of lost, and two passes never
  pick the same row.
* Liveness (``jobs.live``) is what the unique partial index ``jobs_live_job_id``
  guards: a job id is taken from creation until its callback is delivered or
  given up (or, for jobs without a callback, until they end).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from mwa_staging.db.completion import complete_finished
from mwa_staging.db.params import params
from mwa_staging.db.rows import JobRow
from mwa_staging.db.status_queries import get_job, get_job_by_uid
from mwa_staging.vocabulary import FileState, JobState

_COLS = JobRow.columns()
_J_COLS = ", ".join(f"j.{c.strip()}" for c in _COLS.split(","))

# delete_at for a row whose story just ended, from its TTL (NULL keeps the object).
_DELETE_AT_NOW = (
    "CASE WHEN ttl_after_finished_s IS NULL THEN NULL"
    " ELSE now() + make_interval(secs => ttl_after_finished_s) END"
)


# cancel_due_at for a job ending now: due if Scout accepted some of its stage calls.
_CANCEL_STAGED = (
    "CASE WHEN stage_cursor IS NOT NULL AND ready_files + error_files < total_files THEN now() END"
)

# --- creation ---------------------------------------------------------------


@dataclass(frozen=True)
class NewJob:
    """What the operator records about a new StagingJob before any work."""

    uid: str
    namespace: str
    name: str
    job_id: int
    generation: int
    notify_url: str
    callback_secret: str | None
    active_deadline_s: int
    restage_interval_s: int
    ttl_after_finished_s: int | None


@dataclass(frozen=True)
class Created:
    """Outcome of :func:`create_job`."""

    job: JobRow
    #: False when the row already existed (the create handler is being retried).
    created: bool
    #: The name of the live job holding the same job id, for a refused duplicate.
    duplicate_of: str | None = None


def _fields(new: NewJob) -> dict[str, object]:
    return {f.name: getattr(new, f.name) for f in fields(new)}


def create_job(cur: Cursor, new: NewJob) -> Created:
    """Record a StagingJob (idempotent by uid), refusing a second live use of its job id.

    A refused duplicate is still recorded, as a finished, non-live row with
    reason ``DuplicateJobId`` and no callback due, so that its status can be
    projected and a retry of the handler finds it.
    """
    existing = get_job_by_uid(cur, new.uid)
    if existing is not None:
        return Created(existing, created=False)
    cur.execute(
        "INSERT INTO jobs (uid, namespace, name, job_id, generation, notify_url,"
        " callback_secret, state, start_time, deadline, restage_interval_s,"
        " ttl_after_finished_s)"
        " VALUES (%(uid)s, %(namespace)s, %(name)s, %(job_id)s, %(generation)s,"
        " %(notify_url)s, %(callback_secret)s, %(resolving)s, now(),"
        " now() + make_interval(secs => %(active_deadline_s)s), %(restage_interval_s)s,"
        " %(ttl_after_finished_s)s)"
        " ON CONFLICT (namespace, job_id) WHERE live DO NOTHING"
        f" RETURNING {_COLS}",
        params(**_fields(new)),
    )
    row = cur.fetchone()
    if row is not None:
        return Created(JobRow.from_row(row), created=True)
    cur.execute(
        "SELECT name FROM jobs WHERE namespace = %s AND job_id = %s AND live",
        (new.namespace, new.job_id),
    )
    holder = cur.fetchone()
    other = holder[0] if holder else "another StagingJob"
    message = (
        f"jobId {new.job_id} is already used by StagingJob {other} in namespace"
        f" {new.namespace}, which has not finished; delete it or use another jobId"
    )
    cur.execute(
        "INSERT INTO jobs (uid, namespace, name, job_id, generation, notify_url,"
        " callback_secret, live, state, reason, message, start_time, completion_time,"
        " callback_state, restage_interval_s, ttl_after_finished_s, delete_at)"
        " VALUES (%(uid)s, %(namespace)s, %(name)s, %(job_id)s, %(generation)s,"
        " %(notify_url)s, %(callback_secret)s, false, %(failed)s, %(reason_duplicate)s,"
        " %(message)s, now(), now(), %(cb_none)s, %(restage_interval_s)s,"
        " %(ttl_after_finished_s)s,"
        " CASE WHEN %(ttl_after_finished_s)s::integer IS NULL THEN NULL"
        "      ELSE now() + make_interval(secs => %(ttl_after_finished_s)s::integer) END)"
        f" RETURNING {_COLS}",
        params(**_fields(new), message=message),
    )
    dup = cur.fetchone()
    assert dup is not None
    return Created(JobRow.from_row(dup), created=True, duplicate_of=other)


def _csv_rows(job_pk: int, paths: Iterable[str]) -> io.StringIO:
    """The files as CSV for COPY (every path quoted: commas, quotes, backslashes are safe)."""
    buf = io.StringIO()
    prefix = f"{job_pk},"
    write = buf.write
    for path in paths:
        write(prefix)
        write('"')
        write(path.replace('"', '""'))
        write('"\n')
    buf.seek(0)
    return buf


def record_files(cur: Cursor, job_pk: int, paths: Sequence[str]) -> bool:
    """Insert the job's files with COPY and move it to ``staging``; False if it had moved on.

    ``paths`` must be free of duplicates (the primary key is (job, path)). One
    COPY of 100,000 rows takes about a second; row-by-row inserts take minutes.
    """
    cur.execute("SELECT state FROM jobs WHERE id = %s FOR UPDATE", (job_pk,))
    row = cur.fetchone()
    if row is None or row[0] != JobState.RESOLVING:
        return False
    cur.copy_expert(
        "COPY job_files (job, path) FROM STDIN WITH (FORMAT csv)", _csv_rows(job_pk, paths)
    )
    cur.execute(
        "UPDATE jobs SET state = %(staging)s, total_files = %(total)s, resolved_at = now(),"
        " version = version + 1 WHERE id = %(id)s",
        params(total=len(paths), id=job_pk),
    )
    return True


def mark_stage_requested(cur: Cursor, job_pk: int) -> None:
    """Scout accepted every stage call: record it and schedule the first restage pass."""
    cur.execute(
        "UPDATE jobs SET stage_requested_at = now(),"
        " next_restage_at = now() + make_interval(secs => restage_interval_s),"
        " version = version + 1 WHERE id = %s AND stage_requested_at IS NULL",
        (job_pk,),
    )


def _pending_paths(cur: Cursor, job_pk: int, condition: str = "", order: str = "") -> list[str]:
    """Paths of the job's pending files; ``condition`` and ``order`` are SQL on ``f``/``j``.

    ``f`` is the file row (``job_files``), ``j`` its job's row.
    """
    cur.execute(
        "SELECT f.path FROM job_files f JOIN jobs j ON j.id = f.job"
        f" WHERE f.job = %(id)s AND f.state = %(file_pending)s {condition} {order}",
        params(id=job_pk),
    )
    return [row[0] for row in cur.fetchall()]


def pending_paths(cur: Cursor, job_pk: int) -> list[str]:
    """Paths of the job still without news (neither ready nor failed)."""
    return _pending_paths(cur, job_pk)


def unrequested_paths(cur: Cursor, job_pk: int) -> list[str]:
    """Pending paths beyond the stage cursor, in stage order (code-point order).

    What a resumed create handler still has to stage: Scout accepted every
    path up to ``stage_cursor`` before the restart.
    """
    return _pending_paths(
        cur,
        job_pk,
        'AND (j.stage_cursor IS NULL OR f.path COLLATE "C" > j.stage_cursor COLLATE "C")',
        'ORDER BY f.path COLLATE "C"',
    )


def record_stage_progress(cur: Cursor, job_pk: int, last_path: str) -> str | None:
    """Scout accepted a stage call ending at ``last_path``: move the stage cursor.

    Returns the job's state (None if its row is gone). A job that ended while
    its stage calls were under way (deadline) gets its cancel scheduled again,
    so the paths of this call are cancelled too.
    """
    cur.execute(
        "UPDATE jobs SET stage_cursor = CASE WHEN stage_cursor IS NULL"
        '   OR stage_cursor COLLATE "C" < %(p)s COLLATE "C" THEN %(p)s ELSE stage_cursor END,'
        " cancel_due_at = CASE WHEN state IN %(finished)s THEN now()"
        "   ELSE cancel_due_at END"
        " WHERE id = %(id)s RETURNING state",
        params(p=last_path, id=job_pk),
    )
    row = cur.fetchone()
    return str(row[0]) if row else None


def fail_job(
    cur: Cursor,
    job_pk: int,
    code: int,
    reason: str,
    message: str,
    *,
    callback: bool = True,
) -> bool:
    """End an unfinished job with a return code; False if it had already ended.

    With ``callback`` the callback becomes due now; without it (nowhere allowed
    to send it) the job also stops holding its job id. If Scout had already
    accepted some of the job's stage calls (a 102 after the first call, an
    unexpected error mid-way), the cancel of those paths becomes due in the
    same transaction, as for a timeout.
    """
    values = params(code=code, reason=reason, message=message, id=job_pk)
    if callback:
        cur.execute(
            "UPDATE jobs SET state = %(failed)s, return_code = %(code)s, reason = %(reason)s,"
            " message = %(message)s, completion_time = now(), callback_state = %(cb_pending)s,"
            " callback_next_attempt = now(), next_restage_at = NULL,"
            f" cancel_due_at = {_CANCEL_STAGED}, version = version + 1"
            " WHERE id = %(id)s AND state IN %(unfinished)s RETURNING id",
            values,
        )
    else:
        cur.execute(
            "UPDATE jobs SET state = %(failed)s, return_code = %(code)s, reason = %(reason)s,"
            " message = %(message)s, completion_time = now(), callback_state = %(cb_none)s,"
            f" live = false, next_restage_at = NULL, delete_at = {_DELETE_AT_NOW},"
            f" cancel_due_at = {_CANCEL_STAGED}, version = version + 1"
            " WHERE id = %(id)s AND state IN %(unfinished)s RETURNING id",
            values,
        )
    return cur.fetchone() is not None


# --- progress found by the restage pass -------------------------------------


def mark_files_ready(cur: Cursor, job_pk: int, paths: Sequence[str]) -> tuple[int, bool]:
    """Record files found on disk, completing the job if they were its last.

    Returns (files marked, whether the job completed). Completion is the one
    rule of :mod:`mwa_staging.db.completion`, the bridge's too. Safe against the bridge
    doing the same at the same time: the job row is locked first (the bridge's
    lock order: jobs, then job_files), a file moves from pending only once, and
    counters are incremented, never recomputed.
    """
    if not paths:
        return 0, False
    cur.execute("SELECT state FROM jobs WHERE id = %s FOR UPDATE", (job_pk,))
    locked = cur.fetchone()
    if locked is None or locked[0] != JobState.STAGING:
        return 0, False
    cur.execute(
        "WITH marked AS (UPDATE job_files SET state = %(file_ready)s, updated_at = now()"
        " WHERE job = %(id)s AND path = ANY(%(paths)s) AND state = %(file_pending)s"
        " RETURNING 1)"
        " SELECT count(*) FROM marked",
        params(id=job_pk, paths=list(paths)),
    )
    row = cur.fetchone()
    marked = int(row[0]) if row else 0
    if marked == 0:
        return 0, False
    cur.execute(
        "UPDATE jobs SET ready_files = ready_files + %s, last_file_time = now(),"
        " version = version + 1 WHERE id = %s",
        (marked, job_pk),
    )
    return marked, bool(complete_finished(cur, [job_pk]))


# --- the scheduler's due work ------------------------------------------------


@dataclass(frozen=True)
class DueTimes:
    """The earliest due time of each kind of delayed work (None: nothing of that kind)."""

    now: datetime
    deadline: datetime | None
    restage: datetime | None
    callback: datetime | None
    cancel: datetime | None
    delete: datetime | None


def due_times(cur: Cursor) -> DueTimes:
    """One cheap statement: each minimum is read from the head of a partial index."""
    cur.execute(
        "SELECT now(),"
        " (SELECT min(deadline) FROM jobs WHERE state IN %(unfinished)s AND live),"
        " (SELECT min(next_restage_at) FROM jobs WHERE state = %(staging)s AND live),"
        " (SELECT min(callback_next_attempt) FROM jobs WHERE callback_state = %(cb_pending)s),"
        " (SELECT min(cancel_due_at) FROM jobs WHERE cancel_due_at IS NOT NULL),"
        " (SELECT min(delete_at) FROM jobs WHERE delete_at IS NOT NULL)",
        params(),
    )
    row = cur.fetchone()
    assert row is not None
    return DueTimes(*row)


def claim_deadlines(cur: Cursor, limit: int) -> list[JobRow]:
    """Time out the unfinished jobs past their deadline (code 10); schedule their cancels.

    The deadline runs from the job's start whatever its state: a job whose
    file lookup hangs (``resolving``) times out like one whose files do not
    arrive, with a message that says which. The create handler, if still at
    work on it, finds the job ended at its next database step and stops.
    """
    cur.execute(
        "UPDATE jobs j SET state = %(failed)s, return_code = %(code_timed_out)s,"
        " reason = %(reason_deadline)s,"
        " message = 'timed out after ' || round(extract(epoch FROM j.deadline - j.start_time))"
        "   || CASE WHEN j.state = %(staging)s THEN"
        "   ' s: ' || j.ready_files || ' of ' || j.total_files || ' files staged, '"
        "   || j.error_files || ' failed, '"
        "   || (j.total_files - j.ready_files - j.error_files) || ' outstanding'"
        "   ELSE ' s while resolving the files to stage (the file lookup had not answered)'"
        "   END,"
        " completion_time = now(), callback_state = %(cb_pending)s,"
        " callback_next_attempt = now(), next_restage_at = NULL,"
        " cancel_due_at = CASE WHEN j.ready_files + j.error_files < j.total_files"
        "   THEN now() END,"
        " version = j.version + 1"
        " FROM (SELECT id FROM jobs WHERE state IN %(unfinished)s"
        "       AND live AND deadline <= now()"
        "       ORDER BY deadline LIMIT %(limit)s FOR UPDATE SKIP LOCKED) due"
        f" WHERE j.id = due.id RETURNING {_J_COLS}",
        params(limit=limit),
    )
    return [JobRow.from_row(r) for r in cur.fetchall()]


@dataclass(frozen=True)
class Claim:
    """A job picked for some delayed work."""

    job_pk: int
    job_id: int
    namespace: str
    name: str
    uid: str


def _claims(cur: Cursor) -> list[Claim]:
    return [Claim(*row) for row in cur.fetchall()]


def claim_restages(cur: Cursor, limit: int, running: Sequence[int] = ()) -> list[Claim]:
    """Staging jobs whose restage pass is due; the next pass is scheduled at once.

    ``running``: jobs whose pass is still under way (a 100,000-file pass at a
    bounded rate can outlast a short restage interval); they are not claimed
    again, so one job never has two passes at once. :func:`reschedule_restage`
    counts the interval from the end of the pass.
    """
    cur.execute(
        "UPDATE jobs j SET next_restage_at = now() + make_interval(secs => j.restage_interval_s)"
        " FROM (SELECT id FROM jobs WHERE state = %(staging)s AND live"
        "       AND next_restage_at <= now() AND id <> ALL(%(running)s)"
        "       ORDER BY next_restage_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) due"
        " WHERE j.id = due.id RETURNING j.id, j.job_id, j.namespace, j.name, j.uid",
        params(limit=limit, running=list(running)),
    )
    return _claims(cur)


def reschedule_restage(cur: Cursor, job_pk: int) -> None:
    """A pass ended: the next one is due one interval from now (if the job still stages)."""
    cur.execute(
        "UPDATE jobs SET next_restage_at = now() + make_interval(secs => restage_interval_s)"
        " WHERE id = %(job)s AND state = %(staging)s AND next_restage_at IS NOT NULL",
        params(job=job_pk),
    )


def claim_cancels(cur: Cursor, limit: int, retry_s: float) -> list[Claim]:
    """Timed-out jobs whose Scout cancel is due; retried after ``retry_s`` unless cleared."""
    cur.execute(
        "UPDATE jobs j SET cancel_due_at = now() + make_interval(secs => %s)"
        " FROM (SELECT id FROM jobs WHERE cancel_due_at <= now()"
        "       ORDER BY cancel_due_at LIMIT %s FOR UPDATE SKIP LOCKED) due"
        " WHERE j.id = due.id RETURNING j.id, j.job_id, j.namespace, j.name, j.uid",
        (retry_s, limit),
    )
    return _claims(cur)


def clear_cancel(cur: Cursor, job_pk: int) -> None:
    """Scout accepted the cancel."""
    cur.execute("UPDATE jobs SET cancel_due_at = NULL WHERE id = %s", (job_pk,))


def cancel_candidates(cur: Cursor, job_pk: int) -> list[str]:
    """Pending paths the job had requested that no other unfinished live job holds.

    Requested: every path once the stage was recorded, else those up to the
    stage cursor (a job that ended part way through its stage calls). Only
    these are safe to cancel: the other jobs' requests must stand.
    """
    return _pending_paths(
        cur,
        job_pk,
        "AND (j.stage_requested_at IS NOT NULL"
        '   OR f.path COLLATE "C" <= j.stage_cursor COLLATE "C")'
        " AND NOT EXISTS (SELECT 1 FROM job_files g JOIN jobs o ON o.id = g.job"
        "   WHERE g.path = f.path AND g.job <> f.job AND o.live"
        "   AND o.state IN %(unfinished)s)",
    )


def claim_ttl_deletes(cur: Cursor, limit: int, lease_s: float) -> list[Claim]:
    """Jobs whose StagingJob is due for deletion; retried after ``lease_s`` unless deleted."""
    cur.execute(
        "UPDATE jobs j SET delete_at = now() + make_interval(secs => %s)"
        " FROM (SELECT id FROM jobs WHERE delete_at <= now()"
        "       ORDER BY delete_at LIMIT %s FOR UPDATE SKIP LOCKED) due"
        " WHERE j.id = due.id RETURNING j.id, j.job_id, j.namespace, j.name, j.uid",
        (lease_s, limit),
    )
    return _claims(cur)


def set_ttl(cur: Cursor, uid: str, ttl_s: int | None, generation: int) -> int | None:
    """spec.ttlSecondsAfterFinished changed: store it and recompute the deletion time."""
    cur.execute(
        "UPDATE jobs SET ttl_after_finished_s = %(ttl)s,"
        " generation = greatest(generation, %(gen)s), version = version + 1,"
        " delete_at = CASE"
        "   WHEN %(ttl)s::integer IS NULL THEN NULL"
        "   WHEN callback_state = %(cb_delivered)s"
        "     THEN callback_delivered_at + make_interval(secs => %(ttl)s::integer)"
        "   WHEN callback_state = %(cb_gave_up)s"
        "     THEN callback_last_attempt + make_interval(secs => %(ttl)s::integer)"
        "   WHEN callback_state = %(cb_none)s AND state IN %(finished)s"
        "     THEN completion_time + make_interval(secs => %(ttl)s::integer)"
        "   ELSE NULL END"
        " WHERE uid = %(uid)s RETURNING id",
        params(ttl=ttl_s, gen=generation, uid=uid),
    )
    row = cur.fetchone()
    return int(row[0]) if row else None


# --- callbacks ---------------------------------------------------------------

IN_FLIGHT = "no outcome recorded (in flight, or the operator stopped during it)"


def claim_callbacks(cur: Cursor, limit: int, lease_s: float) -> list[JobRow]:
    """Due callbacks: count the attempt, record it as in flight, lease the job for ``lease_s``.

    The attempt is recorded *before* the POST, so an attempt cut short by a
    crash is still visible; the lease makes the job due again if no outcome is
    recorded (at-least-once delivery). The claim does not mark the status dirty
    (``version``): an attempt in flight is shown with its outcome, one status
    patch per attempt instead of two.
    """
    if limit <= 0:
        return []
    cur.execute(
        "UPDATE jobs j SET callback_attempts = j.callback_attempts + 1,"
        " callback_last_attempt = now(),"
        " callback_next_attempt = now() + make_interval(secs => %(lease)s)"
        " FROM (SELECT id FROM jobs WHERE callback_state = %(cb_pending)s"
        "       AND callback_next_attempt <= now()"
        "       ORDER BY callback_next_attempt LIMIT %(limit)s FOR UPDATE SKIP LOCKED) due"
        f" WHERE j.id = due.id RETURNING {_J_COLS}",
        params(lease=lease_s, limit=limit),
    )
    rows = [JobRow.from_row(r) for r in cur.fetchall()]
    if rows:
        cur.execute(
            "INSERT INTO callback_attempts (job, attempt, error)"
            " SELECT unnest(%s::bigint[]), unnest(%s::integer[]), %s"
            " ON CONFLICT (job, attempt) DO NOTHING",
            ([r.id for r in rows], [r.callback_attempts for r in rows], IN_FLIGHT),
        )
    return rows


def record_callback_result(
    cur: Cursor,
    job_pk: int,
    attempt: int,
    *,
    delivered: bool,
    http_status: int | None,
    error: str | None,
    give_up: bool = False,
    next_attempt: datetime | None = None,
) -> bool:
    """Record the outcome of attempt ``attempt``; False if the row had moved on.

    A delivery is recorded whatever happened meanwhile (it did happen); a
    failure only while this attempt is still the job's latest.
    """
    cur.execute(
        "UPDATE callback_attempts SET http_status = %s, error = %s WHERE job = %s AND attempt = %s",
        (http_status, error, job_pk, attempt),
    )
    values = params(error=error, next=next_attempt, id=job_pk, attempt=attempt)
    if delivered:
        cur.execute(
            "UPDATE jobs SET callback_state = %(cb_delivered)s, callback_delivered_at = now(),"
            " callback_last_error = NULL, callback_next_attempt = NULL, live = false,"
            f" delete_at = {_DELETE_AT_NOW}, version = version + 1"
            " WHERE id = %(id)s AND callback_state = %(cb_pending)s RETURNING id",
            values,
        )
    elif give_up:
        cur.execute(
            "UPDATE jobs SET callback_state = %(cb_gave_up)s, callback_last_error = %(error)s,"
            " callback_next_attempt = NULL, live = false,"
            f" delete_at = {_DELETE_AT_NOW}, version = version + 1"
            " WHERE id = %(id)s AND callback_state = %(cb_pending)s"
            " AND callback_attempts = %(attempt)s RETURNING id",
            values,
        )
    else:
        cur.execute(
            "UPDATE jobs SET callback_last_error = %(error)s, callback_next_attempt = %(next)s,"
            " version = version + 1"
            " WHERE id = %(id)s AND callback_state = %(cb_pending)s"
            " AND callback_attempts = %(attempt)s RETURNING id",
            values,
        )
    return cur.fetchone() is not None


# --- deletion ------------------------------------------------------------------


def retire_job(cur: Cursor, job_pk: int) -> JobRow | None:
    """The StagingJob is being deleted: stop all delayed work on it first (no callback).

    Returns the row as it was, so the caller knows whether it was unfinished.
    """
    before = get_job(cur, job_pk)
    if before is None:
        return None
    cur.execute(
        "UPDATE jobs SET live = false, callback_next_attempt = NULL, next_restage_at = NULL,"
        " cancel_due_at = NULL, delete_at = NULL,"
        " callback_state = CASE WHEN callback_state = %(cb_pending)s THEN %(cb_none)s"
        "   ELSE callback_state END"
        " WHERE id = %(id)s",
        params(id=job_pk),
    )
    return before


def delete_job(cur: Cursor, job_pk: int) -> None:
    """Remove the job and (cascading) its files and callback attempts."""
    cur.execute("DELETE FROM jobs WHERE id = %s", (job_pk,))


# --- reporting -----------------------------------------------------------------


def counts_by_state(cur: Cursor) -> dict[str, int]:
    """Number of jobs in each state (for the jobs-by-phase gauge)."""
    cur.execute("SELECT state, count(*) FROM jobs GROUP BY state")
    return {state: int(n) for state, n in cur.fetchall()}


def iter_files(
    conn: Connection, job_pk: int, state: FileState | None = None, batch: int = 5000
) -> Iterator[tuple[str, int, datetime | None, str | None]]:
    """(path, state, updated_at, error) of a job's files, streamed with a server-side cursor."""
    with conn.cursor(name="job_files_listing") as cur:
        cur.itersize = batch
        if state is None:
            cur.execute(
                "SELECT path, state, updated_at, error FROM job_files WHERE job = %s ORDER BY path",
                (job_pk,),
            )
        else:
            cur.execute(
                "SELECT path, state, updated_at, error FROM job_files"
                " WHERE job = %s AND state = %s ORDER BY path",
                (job_pk, state),
            )
        yield from cur
