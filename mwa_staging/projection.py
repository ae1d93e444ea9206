"""Writing the database's view of a job onto its StagingJob status.

Both the operator and the bridge project: the operator right after its own
steps, the bridge for jobs its batches touched. Each projection of a job runs in
a transaction holding that job's advisory lock: it reads the row, patches the
status, and records the row version it showed. Because projectors of one job
take turns and each reads the newest committed row under the lock, a later
patch always shows a row at least as new as an earlier one; a change committed
while a patch is in flight leaves ``version > projected_version`` and is
projected again. The lock does not block the bridge's row updates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from psycopg2.extensions import connection as Connection

from mwa_staging import status
from mwa_staging.db import status_queries
from mwa_staging.kube import StagingJobs

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What :func:`write_status` did."""

    patched: bool = False
    gone: bool = False  # the StagingJob or its row no longer exists
    busy: bool = False  # another projector holds the job


def write_status(conn: Connection, jobs: StagingJobs, job_pk: int) -> Outcome:
    """Write one job's status now (one short transaction; raises on API errors other than 404).

    The body is :func:`mwa_staging.status.status_for` of the row read under the lock.
    """
    try:
        with conn.cursor() as cur:
            if not status_queries.try_lock_job(cur, job_pk):
                conn.rollback()
                return Outcome(busy=True)
            row = status_queries.get_job(cur, job_pk)
            if row is None:
                conn.rollback()
                return Outcome(gone=True)
            sample = status_queries.failed_sample(cur, job_pk) if row.error_files else []
            body = status.status_for(row, sample)
            exists = jobs.patch_status(row.namespace, row.name, body, uid=row.uid)
            status_queries.mark_projected(cur, job_pk, row.version)
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    return Outcome(patched=exists, gone=not exists)


def write_dirty_statuses(
    conn: Connection,
    jobs: StagingJobs,
    *,
    min_interval_s: float,
    limit: int = 200,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> int:
    """Write every status that is behind its row (coalesced); return how many were patched.

    ``on_outcome`` sees each job's :class:`Outcome` (the bridge counts them as metrics).
    """
    with conn.cursor() as cur:
        dirty = status_queries.dirty_jobs(cur, min_interval_s=min_interval_s, limit=limit)
    conn.commit()
    patched = 0
    for job_pk in dirty:
        outcome = write_status(conn, jobs, job_pk)
        if on_outcome is not None:
            on_outcome(outcome)
        if outcome.patched:
            patched += 1
    return patched
