"""Queries behind the status projection (used by both the operator and the bridge)."""

from __future__ import annotations

from psycopg2.extensions import cursor as Cursor

from mwa_staging.db.params import params
from mwa_staging.db.rows import FailedFile, JobRow

FAILED_SAMPLE_SIZE = 20


def get_job(cur: Cursor, job_pk: int) -> JobRow | None:
    """The job's row, or None if it was deleted."""
    cur.execute(f"SELECT {JobRow.columns()} FROM jobs WHERE id = %s", (job_pk,))
    row = cur.fetchone()
    return JobRow.from_row(row) if row else None


def get_job_by_uid(cur: Cursor, uid: str) -> JobRow | None:
    """The row of the StagingJob with this metadata.uid, if recorded."""
    cur.execute(f"SELECT {JobRow.columns()} FROM jobs WHERE uid = %s", (uid,))
    row = cur.fetchone()
    return JobRow.from_row(row) if row else None


def failed_sample(cur: Cursor, job_pk: int, limit: int = FAILED_SAMPLE_SIZE) -> list[FailedFile]:
    """Up to ``limit`` failed files of a job (ordered by path, so the sample is stable)."""
    cur.execute(
        "SELECT path, error FROM job_files WHERE job = %s AND error IS NOT NULL"
        " ORDER BY path LIMIT %s",
        (job_pk, limit),
    )
    return [FailedFile(path, error) for path, error in cur.fetchall()]


def try_lock_job(cur: Cursor, job_pk: int) -> bool:
    """Take the job's projection lock for this transaction; False if another holds it.

    Projectors (the operator and every bridge replica) serialise on this lock so
    that a projection read earlier can never be written after a newer one.
    """
    cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (job_pk,))
    row = cur.fetchone()
    return bool(row and row[0])


def mark_projected(cur: Cursor, job_pk: int, version: int) -> None:
    """Record that the status now shows ``version`` of the row."""
    cur.execute(
        "UPDATE jobs SET projected_version = greatest(projected_version, %s), projected_at = now()"
        " WHERE id = %s",
        (version, job_pk),
    )


def still_dirty(cur: Cursor, job_pks: list[int]) -> list[int]:
    """Those of ``job_pks`` whose status is still behind their row, in id order."""
    cur.execute(
        "SELECT id FROM jobs WHERE id = ANY(%s) AND version > projected_version ORDER BY id",
        (job_pks,),
    )
    return [row[0] for row in cur.fetchall()]


def dirty_jobs(cur: Cursor, *, min_interval_s: float, limit: int) -> list[int]:
    """Jobs whose status is behind their row: finished ones first, then oldest projection first.

    A job projected less than ``min_interval_s`` ago waits (coalescing a burst of
    arrivals into few patches), unless it has reached a final state: the end of a
    job is shown at once, ahead of progress updates.
    """
    cur.execute(
        "SELECT id FROM jobs WHERE version > projected_version"
        " AND (projected_at IS NULL OR state IN %(finished)s"
        "      OR projected_at <= now() - make_interval(secs => %(interval)s))"
        " ORDER BY state IN %(finished)s DESC, projected_at NULLS FIRST LIMIT %(limit)s",
        params(interval=min_interval_s, limit=limit),
    )
    return [row[0] for row in cur.fetchall()]


def dirty_summary(cur: Cursor, *, min_interval_s: float) -> tuple[int, float | None]:
    """How many jobs are dirty, and seconds until the next coalesced projection is due.

    The seconds are None when nothing is dirty, and never negative.
    """
    cur.execute(
        "SELECT count(*), extract(epoch FROM min(coalesce(projected_at, now())"
        " + make_interval(secs => %s)) - now()) FROM jobs WHERE version > projected_version",
        (min_interval_s,),
    )
    row = cur.fetchone()
    if not row:
        return 0, None
    return int(row[0]), None if row[1] is None else max(0.0, float(row[1]))
