"""The words every part of the project uses for a job: states, phases, reasons, return codes.

One definition, imported by the operator, the bridge, the gateway, the SQL
(as query parameters) and the status projection, so that a state or a code
cannot be spelt two ways. The values are part of the stored data and of the
contracts: ``JobState``, ``FileState`` and ``CallbackState`` are what the
``jobs`` and ``job_files`` columns hold (their CHECK constraints in
``db/migrations/0001_init.sql`` list the same values, which a unit test
checks); ``ReturnCode`` is the callback's ``return_code`` (docs/contracts.md,
"Callback"); ``Phase`` and ``Reason`` are what ``kubectl get stagingjobs``
shows.

The enums are ``StrEnum``/``IntEnum``, so a member *is* its value: it can be
compared with a column read from the database, passed as a psycopg2 parameter
or written into JSON as it is.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class JobState(StrEnum):
    """``jobs.state``: where a job is in its life (the database's word)."""

    PENDING = "pending"
    RESOLVING = "resolving"
    STAGING = "staging"
    COMPLETE = "complete"
    FAILED = "failed"


#: States of a job still at work (a deadline applies, its paths are held).
UNFINISHED_STATES = (JobState.PENDING, JobState.RESOLVING, JobState.STAGING)
#: States a job ends in (its callback is due, its end is shown at once).
FINISHED_STATES = (JobState.COMPLETE, JobState.FAILED)


class FileState(IntEnum):
    """``job_files.state``: what is known of one file of a job."""

    PENDING = 0  # no news yet
    READY = 1  # on disk
    ERROR = 2  # the archive could not stage it


class CallbackState(StrEnum):
    """``jobs.callback_state``: the callback's story."""

    NONE = "none"  # no callback due (running, refused, or nowhere allowed to send it)
    PENDING = "pending"  # due, or being retried
    DELIVERED = "delivered"
    GAVE_UP = "gave_up"


class Phase(StrEnum):
    """``status.phase`` (the CamelCase of :class:`JobState`, as Kubernetes writes phases)."""

    PENDING = "Pending"
    RESOLVING = "Resolving"
    STAGING = "Staging"
    COMPLETE = "Complete"
    FAILED = "Failed"


#: The phase shown for each state (the same member names).
PHASE_OF_STATE = {state: Phase[state.name] for state in JobState}


class ReturnCode(IntEnum):
    """The callback's ``return_code`` (docs/contracts.md, "Callback")."""

    ALL_STAGED = 0
    SOME_ERRORS = 5
    TIMED_OUT = 10
    LOOKUP_FAILED = 100
    NO_FILES = 101
    STAGE_FAILED = 102
    UNEXPECTED = 199


class Reason(StrEnum):
    """CamelCase reasons: ``status.reason``, conditions and Events."""

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
    # Conditions that are not (yet) true.
    IN_PROGRESS = "InProgress"
    NOT_FAILED = "NotFailed"
    JOB_RUNNING = "JobRunning"
    # Events only.
    COMPLETE = "Complete"
    CALLBACK_FAILED = "CallbackFailed"
    RESTAGED = "Restaged"
    RESTAGE_FAILED = "RestageFailed"
    CANCELLED = "Cancelled"
    CANCEL_FAILED = "CancelFailed"


#: The reason a failed job records for each failure return code.
FAILURE_REASONS = {
    ReturnCode.TIMED_OUT: Reason.DEADLINE_EXCEEDED,
    ReturnCode.LOOKUP_FAILED: Reason.LOOKUP_FAILED,
    ReturnCode.NO_FILES: Reason.NO_FILES,
    ReturnCode.STAGE_FAILED: Reason.STAGE_FAILED,
    ReturnCode.UNEXPECTED: Reason.UNEXPECTED_ERROR,
}
