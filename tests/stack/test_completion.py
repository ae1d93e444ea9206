"""The one completion rule, as both paths that record a job's last file apply it.

The Kafka bridge's batch transaction (``arrivals.record``) and the operator's
restage pass (``jobs_queries.mark_files_ready``) both end a job with
``mwa_staging.db.completion``; this drives each path on the stack's real
PostgreSQL and compares the rows they leave. Everything runs in one
transaction that is rolled back, so the running operator and bridge never see
these jobs (and no NOTIFY is delivered).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from devstack.stack import Stack
from mwa_staging.db import arrivals, jobs_queries, status_queries
from mwa_staging.db.connect import connect
from mwa_staging.db.rows import Arrivals, MalformedRows
from mwa_staging.vocabulary import CallbackState, JobState

pytestmark = pytest.mark.stack

NAMESPACE = "completion-rule-test"


@pytest.fixture
def conn(stack: Stack) -> Iterator[Connection]:
    connection = connect(stack.env["DATABASE_URL"], application_name="completion-test")
    try:
        yield connection
    finally:
        connection.rollback()
        connection.close()


def _staging_job(cur: Cursor, files: int) -> tuple[int, list[str]]:
    """A job in ``staging`` with ``files`` paths of its own (uncommitted)."""
    uid = str(uuid.uuid4())
    new = jobs_queries.NewJob(
        uid=uid,
        namespace=NAMESPACE,
        name=f"job-{uid[:8]}",
        job_id=uuid.uuid4().int % 10**9 + 1,
        generation=1,
        notify_url="https://client.invalid/cb",
        callback_secret=None,
        active_deadline_s=3600,
        restage_interval_s=3600,
        ttl_after_finished_s=None,
    )
    job_pk = jobs_queries.create_job(cur, new).job.id
    paths = [f"mwa/completion/{uid}/f{i}.fits" for i in range(files)]
    assert jobs_queries.record_files(cur, job_pk, paths)
    return job_pk, paths


def _arrive(cur: Cursor, staged: list[str], failed: list[str]) -> arrivals.Recorded:
    """The bridge's batch transaction for these messages."""
    batch = Arrivals(
        paths=staged + failed,
        errors=[None] * len(staged) + ["unable to stage file, no valid copies"] * len(failed),
        times=[time.time()] * (len(staged) + len(failed)),
    )
    return arrivals.record(cur, "completion-test", batch, MalformedRows(), malformed_keep=10)


def _ending(cur: Cursor, job_pk: int) -> tuple[object, ...]:
    row = status_queries.get_job(cur, job_pk)
    assert row is not None
    return (row.state, row.return_code, row.reason, row.message, row.callback_state)


@pytest.mark.parametrize(
    ("failed", "ending"),
    [
        (0, (JobState.COMPLETE, 0, "AllFilesStaged", "3 of 3 files staged")),
        (1, (JobState.COMPLETE, 5, "FinishedWithErrors", "2 staged, 1 failed")),
    ],
    ids=["all-staged", "one-failed"],
)
def test_completion_message_matches_the_bridge(
    conn: Connection, failed: int, ending: tuple[object, ...]
) -> None:
    with conn.cursor() as cur:
        arrivals.prepare_session(cur)
        # The bridge records every file, the last ones completing the job.
        by_bridge, paths = _staging_job(cur, 3)
        staged, errors = paths[: 3 - failed], paths[3 - failed :]
        assert _arrive(cur, staged, errors).completed == [by_bridge]
        # The bridge records the failures; the restage pass finds the rest on disk.
        by_restage, paths = _staging_job(cur, 3)
        staged, errors = paths[: 3 - failed], paths[3 - failed :]
        assert _arrive(cur, [], errors).completed == []
        assert jobs_queries.mark_files_ready(cur, by_restage, staged) == (3 - failed, True)

        assert _ending(cur, by_bridge) == (*ending, CallbackState.PENDING)
        assert _ending(cur, by_restage) == _ending(cur, by_bridge)
