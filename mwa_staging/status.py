"""The StagingJob status model: how a ``jobs`` row is shown on the object.

The database is the source of truth; ``status`` is computed from the row by
:func:`project` and nothing else, so whichever process writes it (the operator
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
from enum import IntEnum, StrEnum
from typing import Any

from mwa_staging.db.rows import FailedFile, JobRow


class Phase(StrEnum):
    """status.phase."""

    PENDING = "Pending"
    RESOLVING = "Resolving"
    STAGING = "Staging"
    COMPLETE = "Complete"
    FAILED = "Failed"


class ReturnCode(IntEnum):
    """Callback return codes (CONTRACTS.md section 4)."""

    ALL_STAGED = 0
    SOME_ERRORS = 5
    TIMED_OUT = 10
    LOOKUP_FAILED = 100
    NO_FILES = 101
    STAGE_FAILED = 102
    UNEXPECTED = 199


class Reason(StrEnum):
    """CamelCase reasons used in conditions and ``status.reason``."""

    ACCEPTED = "Accepted"
    RESOLVING = "Resolving"
    FILES_RESOLVED = "FilesResolved"
    STAGE_REQUESTED = "StageRequested"
    ALL_FILES_STAGED = "AllFilesStaged"
    FINISHED_WITH_ERRORS = "FinishedWithErrors"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    LOOKUP_FAILED = "LookupFailed"
    NO_FILES = "NoFiles"
    STAGE_FAILED = "StageRequestFailed"
    UNEXPECTED_ERROR = "UnexpectedError"
    DUPLICATE_JOB_ID = "DuplicateJobId"
    CALLBACK_PENDING = "CallbackPending"
    CALLBACK_FAILING = "CallbackFailing"
    CALLBACK_DELIVERED = "CallbackDelivered"
    CALLBACK_GAVE_UP = "CallbackGaveUp"
    NO_CALLBACK = "NoCallback"


# The reason a failed job records for each creation-failure return code.
FAILURE_REASONS = {
    ReturnCode.TIMED_OUT: Reason.DEADLINE_EXCEEDED,
    ReturnCode.LOOKUP_FAILED: Reason.LOOKUP_FAILED,
    ReturnCode.NO_FILES: Reason.NO_FILES,
    ReturnCode.STAGE_FAILED: Reason.STAGE_FAILED,
    ReturnCode.UNEXPECTED: Reason.UNEXPECTED_ERROR,
}

_PHASES = {
    "pending": Phase.PENDING,
    "resolving": Phase.RESOLVING,
    "staging": Phase.STAGING,
    "complete": Phase.COMPLETE,
    "failed": Phase.FAILED,
}


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
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    since: datetime | None,
    generation: int,
    fallback_time: datetime,
) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "Unknown" if status is None else ("True" if status else "False"),
        "reason": reason,
        "message": message,
        "lastTransitionTime": timestamp(since or fallback_time),
        "observedGeneration": generation,
    }


def conditions(job: JobRow) -> list[dict[str, Any]]:
    """The five conditions of a job, derived from its row."""
    failed = job.state == "failed"
    code = job.return_code
    created = job.created_at
    gen = job.generation

    if job.resolved_at is not None:
        resolved = _condition(
            "Resolved",
            True,
            Reason.FILES_RESOLVED,
            f"{job.total_files} files to stage",
            job.resolved_at,
            gen,
            created,
        )
    elif failed and code in (ReturnCode.LOOKUP_FAILED, ReturnCode.NO_FILES):
        resolved = _condition(
            "Resolved",
            False,
            job.reason or "",
            job.message or "",
            job.completion_time,
            gen,
            created,
        )
    else:
        resolved = _condition("Resolved", None, Reason.RESOLVING, "", None, gen, created)

    if job.stage_requested_at is not None:
        staged = _condition(
            "StageRequested",
            True,
            Reason.STAGE_REQUESTED,
            f"asked the archive to stage {job.total_files} files",
            job.stage_requested_at,
            gen,
            created,
        )
    elif failed:
        staged = _condition(
            "StageRequested",
            False,
            job.reason or "",
            job.message or "",
            job.completion_time,
            gen,
            created,
        )
    else:
        staged = _condition("StageRequested", None, Reason.ACCEPTED, "", None, gen, created)

    complete = job.state == "complete"
    complete_reason = (
        Reason.ALL_FILES_STAGED if job.error_files == 0 else Reason.FINISHED_WITH_ERRORS
    )
    complete_cond = _condition(
        "Complete",
        complete,
        complete_reason if complete else "InProgress",
        (job.message or "") if complete else "",
        job.completion_time,
        gen,
        created,
    )
    failed_cond = _condition(
        "Failed",
        failed,
        (job.reason or "") if failed else "NotFailed",
        (job.message or "") if failed else "",
        job.completion_time,
        gen,
        created,
    )
    return [resolved, staged, complete_cond, failed_cond, callback_condition(job)]


def callback_condition(job: JobRow) -> dict[str, Any]:
    """CallbackDelivered: True once the client accepted it."""
    state = job.callback_state
    if state == "delivered":
        return _condition(
            "CallbackDelivered",
            True,
            Reason.CALLBACK_DELIVERED,
            f"delivered after {job.callback_attempts} attempt(s)",
            job.callback_delivered_at,
            job.generation,
            job.created_at,
        )
    if state == "gave_up":
        return _condition(
            "CallbackDelivered",
            False,
            Reason.CALLBACK_GAVE_UP,
            f"gave up after {job.callback_attempts} attempts: {job.callback_last_error or ''}",
            job.callback_last_attempt,
            job.generation,
            job.created_at,
        )
    if state == "pending" and job.callback_attempts > 0:
        return _condition(
            "CallbackDelivered",
            False,
            Reason.CALLBACK_FAILING,
            f"attempt {job.callback_attempts} failed: {job.callback_last_error or ''}",
            job.completion_time,
            job.generation,
            job.created_at,
        )
    if state == "pending":
        return _condition(
            "CallbackDelivered",
            False,
            Reason.CALLBACK_PENDING,
            "",
            job.completion_time,
            job.generation,
            job.created_at,
        )
    reason = Reason.NO_CALLBACK if job.state in ("complete", "failed") else "JobRunning"
    return _condition("CallbackDelivered", False, reason, "", None, job.generation, job.created_at)


def project(job: JobRow, failed: list[FailedFile]) -> dict[str, Any]:
    """The whole ``status`` of a StagingJob for this row (a merge-patch body's value)."""
    callback: dict[str, Any] = {
        "attempts": job.callback_attempts,
        "lastAttemptTime": timestamp(job.callback_last_attempt),
        "lastError": job.callback_last_error or "",
        "deliveredTime": timestamp(job.callback_delivered_at),
        "nextAttemptTime": (
            timestamp(job.callback_next_attempt) if job.callback_state == "pending" else None
        ),
    }
    return {
        "phase": _PHASES[job.state].value,
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
