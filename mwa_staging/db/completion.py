"""The one completion rule, used wherever a job's last file is recorded.

A ``staging`` job is complete once every file is ready or failed: return code
0 (reason ``AllFilesStaged``) when none failed, else 5
(``FinishedWithErrors``), a comment with the counts, the callback due now.
Two paths record files: the Kafka bridge's batch transaction
(:mod:`mwa_staging.db.arrivals`) and the operator's restage pass
(:func:`mwa_staging.db.jobs_queries.mark_files_ready`). Both call
:func:`complete_finished` in the same transaction as the counters it reads, so
a complete job and its counts never disagree and the two paths cannot apply
different rules.

The statement also NOTIFYs :data:`JOB_COMPLETED_CHANNEL` with each completed
job's id (delivered when the transaction commits): the operator LISTENs there
and sends the callback without polling.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg2.extensions import cursor as Cursor

from mwa_staging.db.params import params

#: PostgreSQL notification channel; payload: ``jobs.id`` of a job just completed.
JOB_COMPLETED_CHANNEL = "mwa_staging_jobs"

_COMPLETE = """
WITH done AS (
    UPDATE jobs
    SET state = %(complete)s,
        completion_time = now(),
        return_code = CASE WHEN error_files = 0
                           THEN %(code_all_staged)s ELSE %(code_some_errors)s END,
        reason = CASE WHEN error_files = 0
                      THEN %(reason_all_staged)s ELSE %(reason_some_errors)s END,
        message = CASE WHEN error_files = 0
                       THEN format('%%s of %%s files staged', ready_files, total_files)
                       ELSE format('%%s staged, %%s failed', ready_files, error_files) END,
        callback_state = %(cb_pending)s,
        callback_next_attempt = now(),
        next_restage_at = NULL,
        version = version + 1
    WHERE id = ANY(%(jobs)s) AND state = %(staging)s AND ready_files + error_files >= total_files
    RETURNING id
)
SELECT id, pg_notify(%(channel)s, id::text) FROM done ORDER BY id
"""


def complete_finished(cur: Cursor, job_pks: Sequence[int]) -> list[int]:
    """Complete those of ``job_pks`` whose files are all in; return their ids, in order.

    The caller holds the jobs' row locks (both paths lock a job before its
    files) and commits.
    """
    if not job_pks:
        return []
    cur.execute(_COMPLETE, params(jobs=list(job_pks), channel=JOB_COMPLETED_CHANNEL))
    return [int(row[0]) for row in cur.fetchall()]
