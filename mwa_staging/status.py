"""The StagingJob status model: how a ``jobs`` row is shown on the object.

The database is the source of truth; ``status`` is computed from the row by
:func:`status_for` and nothing else, so whichever process writes it (the operator
after its own steps, the bridge after file arrivals) writes the same thing for
the same row. Conditions follow the Kubernetes API conventions and reuse the
words of the Job API (``Complete``, ``Failed``, ``DeadlineExceeded``).

Field ownership, by who changes the underlying columns:

* operator: phase up to ``Staging``, ``Failed`` (creation errors, deadline),
  ``totalFiles``, ``startTime``, the ``Resolved``/``StageRequested`` conditions,
  the ``callback`` block and ``CallbackDelivered``;
* bridge: ``readyFiles``, ``errorFiles``, ``lastFileTime``, ``failedFiles`` and
  ``phase: Complete`` with ``completionTime`` and return code 0 or 5.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mwa_staging.db.rows import FailedFile, JobRow
from mwa_staging.vocabulary import (
    FINISHED_STATES,
    PHASE_OF_STATE,
    CallbackState,
    JobState,
    Reason,
    ReturnCode,
)


def timestamp(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a Z, as Kubernetes writes times (whole seconds).

    psycopg2 returns ``timestamptz`` values as aware datetimes; a naive one is
    taken to be UTC already.
    """
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    job: JobRow,
    type_: str,
    *,
    status: bool | None,
    reason: str,
    message: str = "",
    since: datetime | None = None,
) -> dict[str, Any]:
    """One condition of ``job``; without ``since`` its transition time is the job's creation."""
    return {
        "type": type_,
        "status": "Unknown" if status is None else ("True" if status else "False"),
        "reason": reason,
        "message": message,
        "lastTransitionTime": timestamp(since or job.created_at),
        "observedGeneration": job.generation,
    }


def conditions(job: JobRow) -> list[dict[str, Any]]:
    """The five conditions of a job, derived from its row."""
    failed = job.state == JobState.FAILED
    complete = job.state == JobState.COMPLETE
    code = job.return_code
    why = job.reason or ""
    said = job.message or ""
    ended = job.completion_time

    if job.resolved_at is not None:
        resolved = _condition(
            job,
            "Resolved",
            status=True,
            reason=Reason.FILES_RESOLVED,
            message=f"{job.total_files} files to stage",
            since=job.resolved_at,
        )
    elif failed and code in (ReturnCode.LOOKUP_FAILED, ReturnCode.NO_FILES):
        resolved = _condition(job, "Resolved", status=False, reason=why, message=said, since=ended)
    else:
        resolved = _condition(job, "Resolved", status=None, reason=Reason.RESOLVING)

    if job.stage_requested_at is not None:
        staged = _condition(
            job,
            "StageRequested",
            status=True,
            reason=Reason.STAGE_REQUESTED,
            message=f"asked the archive to stage {job.total_files} files",
            since=job.stage_requested_at,
        )
    elif failed:
        staged = _condition(
            job, "StageRequested", status=False, reason=why, message=said, since=ended
        )
    else:
        staged = _condition(job, "StageRequested", status=None, reason=Reason.ACCEPTED)

    if complete:
        complete_reason = (
            Reason.ALL_FILES_STAGED if job.error_files == 0 else Reason.FINISHED_WITH_ERRORS
        )
        complete_cond = _condition(
            job, "Complete", status=True, reason=complete_reason, message=said, since=ended
        )
    else:
        complete_cond = _condition(
            job, "Complete", status=False, reason=Reason.IN_PROGRESS, since=ended
        )
    if failed:
        failed_cond = _condition(job, "Failed", status=True, reason=why, message=said, since=ended)
    else:
        failed_cond = _condition(job, "Failed", status=False, reason=Reason.NOT_FAILED, since=ended)
    return [resolved, staged, complete_cond, failed_cond, callback_condition(job)]


def callback_condition(job: JobRow) -> dict[str, Any]:
    """CallbackDelivered: True once the client accepted it."""
    state = job.callback_state
    attempts = job.callback_attempts
    last_error = job.callback_last_error or ""
    if state == CallbackState.DELIVERED:
        return _condition(
            job,
            "CallbackDelivered",
            status=True,
            reason=Reason.CALLBACK_DELIVERED,
            message=f"delivered after {attempts} attempt(s)",
            since=job.callback_delivered_at,
        )
    if state == CallbackState.GAVE_UP:
        return _condition(
            job,
            "CallbackDelivered",
            status=False,
            reason=Reason.CALLBACK_GAVE_UP,
            message=f"gave up after {attempts} attempts: {last_error}",
            since=job.callback_last_attempt,
        )
    if state == CallbackState.PENDING:
        if attempts > 0:
            reason, message = Reason.CALLBACK_FAILING, f"attempt {attempts} failed: {last_error}"
        else:
            reason, message = Reason.CALLBACK_PENDING, ""
        return _condition(
            job,
            "CallbackDelivered",
            status=False,
            reason=reason,
            message=message,
            since=job.completion_time,
        )
    reason = Reason.NO_CALLBACK if job.state in FINISHED_STATES else Reason.JOB_RUNNING
    return _condition(job, "CallbackDelivered", status=False, reason=reason)


def status_for(job: JobRow, failed: list[FailedFile]) -> dict[str, Any]:
    """The whole ``status`` of a StagingJob for this row (a merge-patch body's value)."""
    callback: dict[str, Any] = {
        "attempts": job.callback_attempts,
        "lastAttemptTime": timestamp(job.callback_last_attempt),
        "lastError": job.callback_last_error or "",
        "deliveredTime": timestamp(job.callback_delivered_at),
        "nextAttemptTime": (
            timestamp(job.callback_next_attempt)
            if job.callback_state == CallbackState.PENDING
            else None
        ),
    }
    return {
        "phase": PHASE_OF_STATE[JobState(job.state)].value,
        "progress": f"{job.ready_files}/{job.total_files}",
        "totalFiles": job.total_files,
        "readyFiles": job.ready_files,
        "errorFiles": job.error_files,
        "startTime": timestamp(job.start_time),
        "lastFileTime": timestamp(job.last_file_time),
        "completionTime": timestamp(job.completion_time),
        "returnCode": job.return_code,
        "reason": job.reason or "",
        "message": job.message or "",
        "observedGeneration": job.generation,
        "callback": callback,
        "failedFiles": [{"path": f.path, "error": f.error} for f in failed],
        "conditions": conditions(job),
    }
