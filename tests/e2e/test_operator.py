"""The StagingJob operator end to end (issue 3's Tests section).

Each test uses its own job ids (and the module its own namespace), drives the
operator only through the Kubernetes API, and asserts on the status, the
callback receiver's log and the Scout calls the simulator recorded. Timing
knobs are made small through the spec (activeDeadlineSeconds,
restageIntervalSeconds) and the operator's environment (``sj.FAST_ENV``).

The tests take the ``target`` fixture: the local stack by default, or the
cluster described by ``MWA_E2E_*`` (tests/e2e/target.py, hack/kind-e2e.sh).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from devstack.sim.data_files import expected_paths
from tests.e2e import sj
from tests.e2e.sj import CANCEL, FILE, STAGE, Jobs, callbacks, calls_to, new_job_id, scout_calls
from tests.e2e.target import Target
from tests.helpers import wait_for

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def jobs(target: Target) -> Iterator[Jobs]:
    with target.fast_operator(), sj.namespace(target, "op-e2e") as the_jobs:
        yield the_jobs


def test_file_list_job_completes_with_code_0(jobs: Jobs, target: Target) -> None:
    job_id = new_job_id()
    paths = [f"mwa/{job_id}/{job_id}_ch{i:03d}.fits" for i in range(5)]
    jobs.create("files-ok", job_id, files=paths)
    status = jobs.wait_delivered("files-ok")
    assert status["phase"] == "Complete" and status["returnCode"] == 0
    assert (status["totalFiles"], status["readyFiles"], status["errorFiles"]) == (5, 5, 0)
    assert status["callback"]["attempts"] == 1

    [delivered] = callbacks(target, job_id)
    assert delivered["status"] == 200 and delivered["user"] == target.env["RESULT_USERNAME"]
    assert delivered["body"] == {
        "job_id": job_id,
        "return_code": 0,
        "total_files": 5,
        "ready_files": 5,
        "error_files": 0,
        "comment": "5 of 5 files staged",
    }
    [stage] = calls_to(scout_calls(target, job_id), STAGE)
    assert stage["n_paths"] == 5 and stage["method"] == "PUT"

    reasons = wait_for(
        lambda: (
            (r := {e["reason"]: e for e in jobs.events("files-ok")}).keys() >= {"Complete"} and r
        ),
        timeout=20,
        message="the Complete event",
    )
    # One Event for a small job that went well: its end with the first, delivered
    # callback (its one stage call is in the StageRequested condition).
    assert set(reasons) == {"Complete"}, reasons
    assert reasons["Complete"]["message"].endswith("; callback delivered"), reasons["Complete"]

    rows = jobs.plugin_files("files-ok")
    assert sorted(row[2] for row in rows) == sorted(paths)
    assert {row[0] for row in rows} == {"ready"}
    assert jobs.plugin_files("files-ok", "--state", "pending") == []

    text = target.operator_metrics()
    for name in (
        "mwa_staging_operator_jobs{",
        "mwa_staging_operator_scout_calls_total{",
        "mwa_staging_operator_scout_call_seconds_bucket{",
        "mwa_staging_operator_callbacks_total{",
        "mwa_staging_operator_files_resolved_total",
    ):
        assert name in text, name


def test_maximum_file_list_of_10000_paths(jobs: Jobs, target: Target) -> None:
    job_id = new_job_id()
    paths = [f"mwa/{job_id}/max/{job_id}_{i:05d}.fits" for i in range(10_000)]
    jobs.create("files-max", job_id, files=paths)
    status = jobs.wait_delivered("files-max", timeout=120)
    assert (status["returnCode"], status["readyFiles"], status["totalFiles"]) == (0, 10_000, 10_000)
    stages = calls_to(scout_calls(target, job_id), STAGE)
    assert [c["n_paths"] for c in stages] == [10_000]
    [delivered] = callbacks(target, job_id)
    assert delivered["body"]["ready_files"] == 10_000


def test_error_files_end_with_code_5_and_exact_counts(jobs: Jobs, target: Target) -> None:
    job_id = new_job_id()
    good = [f"mwa/{job_id}/ok_{i}.fits" for i in range(4)]
    bad = [f"mwa/{job_id}/bad_{i}_ERROR.fits" for i in range(3)]
    jobs.create("files-errors", job_id, files=good + bad)
    status = jobs.wait_delivered("files-errors")
    assert status["phase"] == "Complete" and status["returnCode"] == 5
    assert (status["totalFiles"], status["readyFiles"], status["errorFiles"]) == (7, 4, 3)
    assert sorted(f["path"] for f in status["failedFiles"]) == sorted(bad)
    assert all(f["error"] for f in status["failedFiles"])
    [delivered] = callbacks(target, job_id)
    body = delivered["body"]
    assert (body["return_code"], body["ready_files"], body["error_files"]) == (5, 4, 3)
    errors = jobs.plugin_files("files-errors", "--state", "error")
    assert sorted(row[2] for row in errors) == sorted(bad)


def test_observation_job_stages_the_resolved_paths(jobs: Jobs, target: Target) -> None:
    job_id, obs_id = new_job_id(), 1234500037
    since = time.time()  # other tests may ask for this obs too (one clock: same machine)
    jobs.create("obs", job_id, observation={"obsId": obs_id})
    status = jobs.wait_delivered("obs")
    expected = expected_paths(obs_id)
    assert (status["returnCode"], status["totalFiles"], status["readyFiles"]) == (0, 37, 37)
    assert sorted(row[2] for row in jobs.plugin_files("obs")) == sorted(expected)
    queries = [
        r["query"]
        for r in sj.data_files_requests(target)
        if r["query"].get("obs_id") == str(obs_id) and r["time"] >= since
    ]
    assert queries and all(q["location"] == "3" and "mintime" not in q for q in queries)


def test_vcs_window_selects_files(jobs: Jobs, target: Target) -> None:
    job_id, obs_id = new_job_id(), 1234600050
    start, duration = obs_id + 10, 7
    started = time.time()  # a simulator kept from an earlier run saw this obs_id too
    jobs.create(
        "vcs", job_id, observation={"obsId": obs_id, "startTime": start, "duration": duration}
    )
    status = jobs.wait_delivered("vcs")
    expected = expected_paths(obs_id, start, start + duration)
    assert status["totalFiles"] == len(expected) == 8
    assert sorted(row[2] for row in jobs.plugin_files("vcs")) == sorted(expected)
    [query] = [
        r["query"]
        for r in sj.data_files_requests(target)
        if r["query"].get("obs_id") == str(obs_id) and r["time"] >= started
    ]
    assert (query["mintime"], query["maxtime"]) == (str(start), str(start + duration))


@pytest.mark.parametrize(
    ("obs_id", "code", "reason"), [(1234500000, 101, "NoFiles"), (9000000001, 100, "LookupFailed")]
)
def test_observation_lookup_failures(
    jobs: Jobs, target: Target, obs_id: int, code: int, reason: str
) -> None:
    job_id = new_job_id()
    name = f"obs-{code}"
    jobs.create(name, job_id, observation={"obsId": obs_id})
    status = jobs.wait_delivered(name)
    assert status["phase"] == "Failed" and status["returnCode"] == code
    assert jobs.condition(name, "Failed")["reason"] == reason
    assert str(obs_id) in status["message"]
    [delivered] = callbacks(target, job_id)
    assert delivered["body"]["return_code"] == code and delivered["body"]["total_files"] == 0
    assert scout_calls(target, job_id) == []


def test_scout_down_longer_than_the_retry_budget_is_102(jobs: Jobs, target: Target) -> None:
    job_id = new_job_id()
    started = time.time()
    with sj.scout_outage(target, 503):
        jobs.create("scout-down", job_id, files=[f"mwa/{job_id}/a.fits"])
        status = jobs.wait_status("scout-down", timeout=60, phase="Failed")
    assert status["returnCode"] == 102 and "503" in status["message"]
    assert jobs.condition("scout-down", "StageRequested")["status"] == "False"
    jobs.wait_delivered("scout-down")
    [delivered] = callbacks(target, job_id)
    assert delivered["body"]["return_code"] == 102
    # A down server answers before reading the body, so these calls carry no key.
    refused = [
        c
        for c in scout_calls(target)
        if c["path"] == STAGE and c["status"] == 503 and c["time"] >= started
    ]
    assert len(refused) >= 2  # retried within the budget
    assert calls_to(scout_calls(target, job_id), STAGE) == []


def test_duplicate_job_id_is_refused(jobs: Jobs, target: Target) -> None:
    job_id = new_job_id()
    jobs.create("first", job_id, files=[f"mwa/{job_id}/x_NEVER.fits"])
    jobs.wait_status("first", phase="Staging")
    wait_for(
        lambda: jobs.condition("first", "StageRequested").get("status") == "True",
        message="first job staged",
    )
    jobs.create("second", job_id, files=[f"mwa/{job_id}/y.fits"])
    status = jobs.wait_status("second", phase="Failed")
    assert status["reason"] == "DuplicateJobId" and "first" in status["message"]
    assert status.get("returnCode") is None
    assert jobs.condition("second", "CallbackDelivered")["reason"] == "NoCallback"
    stages = calls_to(scout_calls(target, job_id), STAGE)
    assert [c["n_paths"] for c in stages] == [1]  # the first job's only
    jobs.delete("first")
    jobs.wait_gone("first")
    assert callbacks(target, job_id) == []


def test_lost_file_is_healed_by_the_restage_pass(jobs: Jobs, target: Target) -> None:
    job_id = new_job_id()
    lost = f"mwa/{job_id}/gone_LOST.fits"
    jobs.create("lost", job_id, files=[f"mwa/{job_id}/ok.fits", lost], restageIntervalSeconds=2)
    status = jobs.wait_delivered("lost", timeout=60)
    assert (status["returnCode"], status["readyFiles"]) == (0, 2)
    queried = [c for c in scout_calls(target) if c["path"] == FILE and c.get("file") == lost]
    assert queried, "the restage pass asked Scout's file status"
    assert "Restaged" in {e["reason"] for e in jobs.events("lost")}


def test_never_file_times_out_with_code_10_and_is_cancelled(jobs: Jobs, target: Target) -> None:
    job_id = new_job_id()
    jobs.create(
        "never",
        job_id,
        files=[f"mwa/{job_id}/ok.fits", f"mwa/{job_id}/stuck_NEVER.fits"],
        activeDeadlineSeconds=4,
    )
    status = jobs.wait_delivered("never", timeout=60)
    assert status["phase"] == "Failed" and status["returnCode"] == 10
    assert status["reason"] == "DeadlineExceeded"
    assert "1 of 2 files staged, 0 failed, 1 outstanding" in status["message"]
    [delivered] = callbacks(target, job_id)
    assert delivered["body"]["return_code"] == 10 and delivered["body"]["ready_files"] == 1
    cancels = wait_for(
        lambda: calls_to(scout_calls(target, job_id), CANCEL),
        timeout=30,
        message="cancel of the pending file",
    )
    assert [c["n_paths"] for c in cancels] == [1]


def test_deleting_a_running_job_cancels_and_sends_no_callback(jobs: Jobs, target: Target) -> None:
    job_id = new_job_id()
    jobs.create(
        "doomed", job_id, files=[f"mwa/{job_id}/a_NEVER.fits", f"mwa/{job_id}/b_NEVER.fits"]
    )
    wait_for(
        lambda: jobs.condition("doomed", "StageRequested").get("status") == "True", message="staged"
    )
    jobs.delete("doomed")
    jobs.wait_gone("doomed")
    [cancel] = calls_to(scout_calls(target, job_id), CANCEL)
    assert cancel["n_paths"] == 2
    assert callbacks(target, job_id) == []


def test_callback_failing_then_recovering(jobs: Jobs, target: Target) -> None:
    job_id = new_job_id()
    sj.callback_control(target, "/fail", {"status": 500, "count": 2})
    try:
        jobs.create("cb-retry", job_id, files=[f"mwa/{job_id}/a.fits"])
        status = jobs.wait_delivered("cb-retry", timeout=60)
    finally:
        sj.callback_control(target, "", method="DELETE")
    assert status["callback"]["attempts"] == 3 and status["callback"]["lastError"] == ""
    assert [c["status"] for c in callbacks(target, job_id)] == [500, 500, 200]
    failed = [e for e in jobs.events("cb-retry") if e["reason"] == "CallbackFailed"]
    assert failed and all(e["type"] == "Warning" for e in failed)


def test_callback_credentials_from_a_secret(jobs: Jobs, target: Target) -> None:
    job_id = new_job_id()
    sj.callback_control(target, "/users", {"user": "portal", "password": "from-secret"})
    target.kubectl(
        "create",
        "secret",
        "generic",
        "cb-creds",
        "-n",
        jobs.ns,
        "--from-literal=username=portal",
        "--from-literal=password=from-secret",
    )
    jobs.create(
        "cb-secret",
        job_id,
        files=[f"mwa/{job_id}/a.fits"],
        callback={"url": jobs.callback_url, "secretRef": {"name": "cb-creds"}},
    )
    jobs.wait_delivered("cb-secret")
    [delivered] = callbacks(target, job_id)
    assert delivered["user"] == "portal" and delivered["status"] == 200
    obj = jobs.get("cb-secret")
    assert "from-secret" not in str(obj)


def test_ttl_deletes_the_finished_job(jobs: Jobs, target: Target) -> None:
    job_id = new_job_id()
    jobs.create("ttl", job_id, files=[f"mwa/{job_id}/a.fits"], ttlSecondsAfterFinished=1)
    jobs.wait_gone("ttl", timeout=60)
    assert [c["status"] for c in callbacks(target, job_id)] == [200]


def test_ttl_is_the_only_field_that_may_change(jobs: Jobs, target: Target) -> None:
    job_id = new_job_id()
    jobs.create("immutable", job_id, files=[f"mwa/{job_id}/a.fits"])
    jobs.wait_delivered("immutable")
    for patch, field in [
        (json.dumps({"spec": {"jobId": job_id + 1}}), "spec.jobId"),
        ('{"spec":{"files":["mwa/other.fits"]}}', "spec.files"),
        ('{"spec":{"callback":{"url":"http://elsewhere.test/cb"}}}', "spec.callback"),
        ('{"spec":{"activeDeadlineSeconds":99}}', "spec.activeDeadlineSeconds"),
    ]:
        result = target.kubectl(
            "patch",
            "stagingjob",
            "immutable",
            "-n",
            jobs.ns,
            "--type",
            "merge",
            "-p",
            patch,
            check=False,
        )
        assert result.returncode != 0 and f"{field} is immutable" in result.stderr, result.stderr
    target.kubectl(
        "patch",
        "stagingjob",
        "immutable",
        "-n",
        jobs.ns,
        "--type",
        "merge",
        "-p",
        '{"spec":{"ttlSecondsAfterFinished":1}}',
    )
    jobs.wait_gone("immutable", timeout=60)


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"files": ["a"], "observation": {"obsId": 5}}, "spec", "exactly one of spec.files"),
        ({}, "spec", "exactly one of spec.files, spec.filesFrom or spec.observation"),
        ({"files": []}, "spec.files", "at least 1 items"),
        ({"files": [f"p{i}" for i in range(10_001)]}, "spec.files", "at most 10000 items"),
        ({"files": ["a\nb"]}, "spec.files[0]", "should match"),
        ({"files": [""]}, "spec.files[0]", "at least 1 chars"),
        (
            {"files": ["a"], "callback": {"url": "ftp://x.test/cb"}},
            "spec.callback.url",
            "http or https",
        ),
        ({"files": ["a"], "callback": {"url": "not a url"}}, "spec.callback.url", "http or https"),
        (
            {"files": ["a"], "activeDeadlineSeconds": -5},
            "spec.activeDeadlineSeconds",
            "greater than or equal to 1",
        ),
        (
            {"files": ["a"], "restageIntervalSeconds": 0},
            "spec.restageIntervalSeconds",
            "greater than or equal to 1",
        ),
        (
            {"observation": {"obsId": 5, "startTime": 7}},
            "spec.observation",
            "startTime and observation.duration",
        ),
        (
            {"observation": {"startTime": 7, "duration": 1}},
            "spec.observation.obsId",
            "Required value",
        ),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(
    jobs: Jobs, spec: dict[str, object], field: str, words: str
) -> None:
    error = jobs.refused("invalid", new_job_id(), **spec)
    assert f"{field}:" in error and words in error, error


def test_job_id_must_be_positive(jobs: Jobs) -> None:
    error = jobs.refused("invalid", 0, files=["a"])
    assert "spec.jobId:" in error and "greater than or equal to 1" in error, error
