"""The vocabulary as named SQL parameters, so no state or code is spelt in a query's text.

Every statement of ``mwa_staging.db`` that names a state, a reason or a return
code takes it as a parameter from :data:`WORDS` (``state = %(staging)s``,
``state IN %(unfinished)s``). psycopg2 interpolates parameters on the client,
so the server still sees the literal ``'staging'``: the partial indexes whose
predicates name states are used exactly as before.
"""

from __future__ import annotations

from typing import Any

from mwa_staging.vocabulary import (
    FINISHED_STATES,
    UNFINISHED_STATES,
    CallbackState,
    FileState,
    JobState,
    Reason,
    ReturnCode,
)

#: Parameter name -> value, merged into the parameters of a statement by :func:`params`.
WORDS: dict[str, Any] = {
    "pending": JobState.PENDING,
    "resolving": JobState.RESOLVING,
    "staging": JobState.STAGING,
    "complete": JobState.COMPLETE,
    "failed": JobState.FAILED,
    "unfinished": tuple(UNFINISHED_STATES),
    "finished": tuple(FINISHED_STATES),
    "file_pending": FileState.PENDING,
    "file_ready": FileState.READY,
    "file_error": FileState.ERROR,
    "cb_none": CallbackState.NONE,
    "cb_pending": CallbackState.PENDING,
    "cb_delivered": CallbackState.DELIVERED,
    "cb_gave_up": CallbackState.GAVE_UP,
    "code_all_staged": ReturnCode.ALL_STAGED,
    "code_some_errors": ReturnCode.SOME_ERRORS,
    "code_timed_out": ReturnCode.TIMED_OUT,
    "reason_all_staged": Reason.ALL_FILES_STAGED,
    "reason_some_errors": Reason.FINISHED_WITH_ERRORS,
    "reason_deadline": Reason.DEADLINE_EXCEEDED,
    "reason_duplicate": Reason.DUPLICATE_JOB_ID,
}


def params(**values: Any) -> dict[str, Any]:
    """A statement's own parameters plus :data:`WORDS` (its own win on a clash)."""
    return {**WORDS, **values}
