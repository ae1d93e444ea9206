"""Status projected from rows (phases, conditions, callback block) and the create defaults."""

from __future__ import annotations

from datetime import UTC, datetime

from mwa_staging_operator.create import new_job, unique_paths

from mwa_staging import status
from mwa_staging.db.rows import FailedFile
from mwa_staging.settings import Settings
from tests.unit.test_callback import job_row

T1 = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)


def conditions(row: object) -> dict[str, dict[str, object]]:
    return {c["type"]: c for c in status.conditions(row)}  # type: ignore[arg-type]


def test_staging_row() -> None:
    row = job_row(
        state="staging",
        return_code=None,
        completion_time=None,
        reason=None,
        message=None,
        callback_state="none",
        callback_attempts=0,
        ready_files=1,
        error_files=0,
    )
    body = status.status_for(row, [])
    assert body["phase"] == "Staging" and body["progress"] == "1/3"
    conds = conditions(row)
    assert conds["Resolved"]["status"] == "True"
    assert conds["StageRequested"]["status"] == "True"
    assert conds["Complete"]["status"] == "False"
    assert conds["CallbackDelivered"]["reason"] == "JobRunning"


def test_complete_with_errors_and_failing_callback() -> None:
    row = job_row(callback_attempts=2, callback_last_error="HTTP 500", callback_next_attempt=T1)
    body = status.status_for(row, [FailedFile("p", "no valid copies")])
    assert body["phase"] == "Complete" and body["returnCode"] == 5
    assert body["failedFiles"] == [{"path": "p", "error": "no valid copies"}]
    assert body["callback"]["attempts"] == 2 and body["callback"]["lastError"] == "HTTP 500"
    assert body["callback"]["nextAttemptTime"] == "2026-01-01T00:05:00Z"
    conds = conditions(row)
    assert conds["Complete"]["reason"] == "FinishedWithErrors"
    assert conds["CallbackDelivered"]["reason"] == "CallbackFailing"


def test_lookup_failure_row() -> None:
    row = job_row(
        state="failed",
        return_code=100,
        reason="LookupFailed",
        message="HTTP 500",
        resolved_at=None,
        stage_requested_at=None,
        total_files=0,
    )
    conds = conditions(row)
    assert conds["Failed"]["status"] == "True" and conds["Failed"]["reason"] == "LookupFailed"
    assert conds["Resolved"]["status"] == "False"
    assert conds["StageRequested"]["status"] == "False"


def test_delivered_and_duplicate() -> None:
    delivered = job_row(callback_state="delivered", callback_delivered_at=T1, live=False)
    assert conditions(delivered)["CallbackDelivered"]["status"] == "True"
    dup = job_row(
        state="failed",
        reason="DuplicateJobId",
        return_code=None,
        callback_state="none",
        callback_attempts=0,
    )
    conds = conditions(dup)
    assert conds["Failed"]["reason"] == "DuplicateJobId"
    assert conds["CallbackDelivered"]["reason"] == "NoCallback"


def test_new_job_defaults_and_overrides() -> None:
    settings = Settings(job_expiry_time=1000, file_restage_interval=50)
    body = {
        "metadata": {"uid": "u1", "namespace": "ns", "name": "n", "generation": 2},
        "spec": {"jobId": 7, "files": ["a"], "callback": {"url": "https://c.test/x"}},
    }
    job = new_job(body, settings)
    assert (job.active_deadline_s, job.restage_interval_s) == (1000, 50)
    assert job.ttl_after_finished_s is None and job.callback_secret is None
    assert job.generation == 2 and job.job_id == 7
    spec = body["spec"]
    spec.update(
        activeDeadlineSeconds=5,
        restageIntervalSeconds=2,
        ttlSecondsAfterFinished=0,
        callback={"url": "https://c.test/x", "secretRef": {"name": "s"}},
    )
    job = new_job(body, settings)
    assert (job.active_deadline_s, job.restage_interval_s, job.ttl_after_finished_s) == (5, 2, 0)
    assert job.callback_secret == "s"


def test_unique_paths_keeps_first_occurrence() -> None:
    assert unique_paths(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]
