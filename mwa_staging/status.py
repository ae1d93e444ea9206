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

from dataclasses import dataclass, replace
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


@dataclass(frozen=True)
class _Shown:
    """What one condition says; its transition time defaults to the job's creation."""

    status: bool | None  # None: Unknown
    reason: str
    message: str = ""
    since: datetime | None = None


def _condition(job: JobRow, type_: str, shown: _Shown) -> dict[str, Any]:
    """One condition of ``job`` in the Kubernetes API's form."""
    status = shown.status
    return {
        "type": type_,
        "status": "Unknown" if status is None else ("True" if status else "False"),
        "reason": shown.reason,
        "message": shown.message,
        "lastTransitionTime": timestamp(shown.since or job.created_at),
        "observedGeneration": job.generation,
    }


def conditions(job: JobRow) -> list[dict[str, Any]]:
    """The five conditions of a job, derived from its row."""
    failed = job.state == JobState.FAILED
    complete = job.state == JobState.COMPLETE
    # How the job ended, for the conditions its end decides.
    ending = _Shown(False, job.reason or "", job.message or "", since=job.completion_time)

    if job.resolved_at is not None:
        files = f"{job.total_files} files to stage"
        resolved = _Shown(True, Reason.FILES_RESOLVED, files, since=job.resolved_at)
    elif failed and job.return_code in (ReturnCode.LOOKUP_FAILED, ReturnCode.NO_FILES):
        resolved = ending
    else:
        resolved = _Shown(None, Reason.RESOLVING)

    if job.stage_requested_at is not None:
        asked = f"asked the archive to stage {job.total_files} files"
        staged = _Shown(True, Reason.STAGE_REQUESTED, asked, since=job.stage_requested_at)
    elif failed:
        staged = ending
    else:
        staged = _Shown(None, Reason.ACCEPTED)

    if complete:
        all_staged = job.error_files == 0
        why = Reason.ALL_FILES_STAGED if all_staged else Reason.FINISHED_WITH_ERRORS
        completed = replace(ending, status=True, reason=why)
    else:
        completed = _Shown(False, Reason.IN_PROGRESS, since=job.completion_time)
    if failed:
        failure = replace(ending, status=True)
    else:
        failure = _Shown(False, Reason.NOT_FAILED, since=job.completion_time)
    return [
        _condition(job, "Resolved", resolved),
        _condition(job, "StageRequested", staged),
        _condition(job, "Complete", completed),
        _condition(job, "Failed", failure),
        callback_condition(job),
    ]


def callback_condition(job: JobRow) -> dict[str, Any]:
    """CallbackDelivered: True once the client accepted it."""
    state = job.callback_state
    attempts = job.callback_attempts
    last_error = job.callback_last_error or ""
    if state == CallbackState.DELIVERED:
        done = f"delivered after {attempts} attempt(s)"
        shown = _Shown(True, Reason.CALLBACK_DELIVERED, done, since=job.callback_delivered_at)
    elif state == CallbackState.GAVE_UP:
        why = f"gave up after {attempts} attempts: {last_error}"
        shown = _Shown(False, Reason.CALLBACK_GAVE_UP, why, since=job.callback_last_attempt)
    elif state == CallbackState.PENDING and attempts > 0:
        why = f"attempt {attempts} failed: {last_error}"
        shown = _Shown(False, Reason.CALLBACK_FAILING, why, since=job.completion_time)
    elif state == CallbackState.PENDING:
        shown = _Shown(False, Reason.CALLBACK_PENDING, since=job.completion_time)
    elif job.state in FINISHED_STATES:
        shown = _Shown(False, Reason.NO_CALLBACK)
    else:
        shown = _Shown(False, Reason.JOB_RUNNING)
    return _condition(job, "CallbackDelivered", shown)


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
