"""The original HTTP API, end to end through the gateway of the local stack.

Everything goes through HTTP, as the portal would: the gateway for the API, the
callback receiver's log for callbacks and the Scout simulator's call log for
what reached the archive. kubectl appears only where the test is about a job
made with kubectl, or to show that an HTTP job is an ordinary StagingJob.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from devstack.sim.archive import CACHE_BYTES
from devstack.sim.data_files import expected_paths
from devstack.stack import Stack
from tests.e2e import sj
from tests.e2e.sj import CANCEL, STAGE, calls_to, new_job_id
from tests.gateway.client import Answer, Api
from tests.helpers import wait_for

pytestmark = pytest.mark.stack

SLASHES = ["", "/"]


def callback_url(stack: Stack) -> str:
    return stack.env["CALLBACK_URL"]


def wait_completed(api: Api, job_id: int, timeout: float = 60.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        answer = api.status(job_id)
        return answer.body if answer.status == 200 and answer.body["completed"] else None

    return wait_for(done, timeout=timeout, interval=0.2, message=f"job {job_id} completed")


def wait_callback(stack: Stack, job_id: int, timeout: float = 60.0) -> dict[str, Any]:
    found = wait_for(
        lambda: sj.callbacks(stack, job_id), timeout=timeout, message=f"callback of {job_id}"
    )
    assert len(found) == 1, found
    return dict(found[0])


@contextmanager
def archive_paused(stack: Stack) -> Iterator[None]:
    """Files do not arrive while paused (the jobs stay live); everything due comes after."""
    base = stack.env["SIM_CONTROL_URL"]
    sj.http("POST", f"{base}/control/pause", {})
    try:
        yield
    finally:
        sj.http("POST", f"{base}/control/resume", {})


def kube_jobs(stack: Stack) -> list[dict[str, Any]]:
    ns = stack.env["GATEWAY_NAMESPACE"]
    out = stack.kubectl("get", "stagingjobs", "-n", ns, "-o", "json").stdout
    return list(json.loads(out)["items"])


def kube_names_with_id(stack: Stack, job_id: int) -> list[str]:
    return [j["metadata"]["name"] for j in kube_jobs(stack) if j["spec"]["jobId"] == job_id]


# ------------------------------------------------------------------ jobs


@pytest.mark.parametrize("slash", SLASHES)
def test_file_list_job_with_errors_polled_until_completed(
    api: Api, stack: Stack, slash: str
) -> None:
    job_id = new_job_id()
    good = [f"mwa/{job_id}/ok_{i}.fits" for i in range(4)]
    bad = [f"mwa/{job_id}/bad_{i}_ERROR.fits" for i in range(2)]
    accepted = api.submit(
        {"job_id": job_id, "notify_url": callback_url(stack), "files": good + bad}, slash
    )
    assert (accepted.status, accepted.body) == (202, None)
    assert accepted.headers["content-type"] == "application/json"

    status = wait_completed(api, job_id)
    assert set(status) == {
        "job_id", "created", "completed", "total_files", "ready_files", "error_files",
        "last_readytime", "files",
    }  # fmt: skip
    assert status["job_id"] == job_id and status["completed"] is True
    assert (status["total_files"], status["ready_files"], status["error_files"]) == (6, 4, 2)
    assert isinstance(status["created"], int) and isinstance(status["last_readytime"], int)
    assert status["last_readytime"] >= status["created"] > 0
    assert status["files"] == {}

    detailed = api.status(job_id, include_files=True, slash=slash)
    assert detailed.status == 200
    files = detailed.body["files"]
    assert set(files) == set(good + bad)
    for path in good:
        ready, error, when = files[path]
        assert (ready, error) == (True, False) and isinstance(when, int) and when > 0
    for path in bad:
        assert files[path][:2] == [False, True]

    body = wait_callback(stack, job_id)["body"]
    assert body == {
        "job_id": job_id,
        "return_code": 5,
        "total_files": 6,
        "ready_files": 4,
        "error_files": 2,
        "comment": "4 staged, 2 failed",
    }
    # An ordinary StagingJob: kubectl sees it, named after the job id.
    assert kube_names_with_id(stack, job_id) == [f"job-{job_id}"]


def test_observation_job(api: Api, stack: Stack) -> None:
    job_id, obs_id = new_job_id(), 1234500037
    answer = api.submit(
        {"job_id": job_id, "notify_url": callback_url(stack), "obs": {"obs_id": obs_id}}
    )
    assert (answer.status, answer.body) == (202, None)
    status = wait_completed(api, job_id)
    assert (status["total_files"], status["ready_files"], status["error_files"]) == (37, 37, 0)
    files = api.status(job_id, include_files=True).body["files"]
    assert sorted(files) == sorted(expected_paths(obs_id))
    body = wait_callback(stack, job_id)["body"]
    assert (body["return_code"], body["total_files"], body["ready_files"]) == (0, 37, 37)


def test_files_win_over_obs(api: Api, stack: Stack) -> None:
    job_id = new_job_id()
    paths = [f"mwa/{job_id}/only.fits"]
    answer = api.submit(
        {
            "job_id": job_id,
            "notify_url": callback_url(stack),
            "files": paths,
            "obs": {"obs_id": 1234500037},
        }
    )
    assert answer.status == 202
    status = wait_completed(api, job_id)
    assert status["total_files"] == 1
    assert list(api.status(job_id, include_files=True).body["files"]) == paths
    [obj] = [j for j in kube_jobs(stack) if j["spec"]["jobId"] == job_id]
    assert "observation" not in obj["spec"] and obj["spec"]["files"] == paths


def test_vcs_window_only_when_both_are_non_zero(api: Api, stack: Stack) -> None:
    one, both = new_job_id(), new_job_id()
    url = callback_url(stack)
    obs_id = 1234500037
    assert (
        api.submit(
            {"job_id": one, "notify_url": url, "obs": {"obs_id": obs_id, "start_time": 5}}
        ).status
        == 202
    )
    assert (
        api.submit(
            {
                "job_id": both,
                "notify_url": url,
                "obs": {"obs_id": obs_id, "start_time": obs_id + 4, "duration": 8},
            }
        ).status
        == 202
    )
    by_id = {j["spec"]["jobId"]: j["spec"] for j in kube_jobs(stack)}
    assert by_id[one]["observation"] == {"obsId": obs_id}
    assert by_id[both]["observation"] == {"obsId": obs_id, "startTime": obs_id + 4, "duration": 8}
    wait_completed(api, one)
    wait_completed(api, both)


def test_unknown_job_is_404(api: Api) -> None:
    job_id = new_job_id()
    for slash in SLASHES:
        answer = api.status(job_id, slash=slash)
        assert (answer.status, answer.body) == (404, {"errormsg": f"Job {job_id} not found"})
        answer = api.delete(job_id, slash=slash)
        assert (answer.status, answer.body) == (404, {"errormsg": f"Job {job_id} not found"})


@pytest.mark.parametrize("slash", SLASHES)
def test_delete_cancels_in_the_archive_and_sends_no_callback(
    api: Api, stack: Stack, slash: str
) -> None:
    job_id = new_job_id()
    paths = [f"mwa/{job_id}/slow_{i}.fits" for i in range(3)]
    with archive_paused(stack):
        assert (
            api.submit({"job_id": job_id, "notify_url": callback_url(stack), "files": paths}).status
            == 202
        )
        wait_for(
            lambda: calls_to(sj.scout_calls(stack, job_id), STAGE),
            message="the stage call",
        )
        answer = api.delete(job_id, slash)
        assert (answer.status, answer.body) == (200, None)
        # DELETE answers once the StagingJob is gone: the finalizer has run.
        assert api.status(job_id).status == 404
        assert kube_names_with_id(stack, job_id) == []
        [cancel] = calls_to(sj.scout_calls(stack, job_id), CANCEL)
        assert cancel["n_paths"] == 3
    assert sj.callbacks(stack, job_id) == []


# ------------------------------------------------------------------ duplicates


def test_duplicate_http_then_http_is_403_and_the_id_is_free_once_delivered(
    api: Api, stack: Stack
) -> None:
    job_id = new_job_id()
    body = {"job_id": job_id, "notify_url": callback_url(stack), "files": [f"mwa/{job_id}/a.fits"]}
    with archive_paused(stack):
        assert api.submit(body).status == 202
        again = api.submit({**body, "files": [f"mwa/{job_id}/other.fits"]}, "/")
        assert (again.status, again.body) == (
            403,
            {"errormsg": f"Can't create job {job_id}, because it already exists."},
        )
        assert kube_names_with_id(stack, job_id) == [f"job-{job_id}"]
        assert list(api.status(job_id, include_files=True).body["files"]) == body["files"]
    wait_callback(stack, job_id)
    # Delivered: as in the original, the id may be used again (the old job is replaced).
    wait_for(lambda: api.submit(body).status == 202, timeout=30, message="id reused")
    wait_for(lambda: len(sj.callbacks(stack, job_id)) == 2, timeout=60, message="2nd callback")
    assert kube_names_with_id(stack, job_id) == [f"job-{job_id}"]


def test_duplicate_kubectl_then_http_is_403_with_nothing_left_behind(
    api: Api, stack: Stack
) -> None:
    job_id = new_job_id()
    ns = stack.env["GATEWAY_NAMESPACE"]
    jobs = sj.Jobs(stack, ns)
    with archive_paused(stack):
        # Created with kubectl and POSTed at once: the gateway may see it before the
        # operator has recorded it, and must still answer 403.
        jobs.create(f"kubectl-{job_id}", job_id, files=[f"mwa/{job_id}/k.fits"])
        answer = api.submit(
            {"job_id": job_id, "notify_url": callback_url(stack), "files": ["mwa/x/y.fits"]}
        )
        assert (answer.status, answer.body) == (
            403,
            {"errormsg": f"Can't create job {job_id}, because it already exists."},
        )
        assert kube_names_with_id(stack, job_id) == [f"kubectl-{job_id}"]
        # The kubectl job is the job N of the API too.
        assert list(api.status(job_id, include_files=True).body["files"]) == [
            f"mwa/{job_id}/k.fits"
        ]
    jobs.wait_delivered(f"kubectl-{job_id}")
    jobs.delete(f"kubectl-{job_id}")


# ------------------------------------------------------------------ bad requests


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "No files or obs given"),
        ({"files": []}, "No files or obs given"),
        ({"obs": {}}, "No files or obs given"),
        ({"files": [], "obs": {}}, "No files or obs given"),
        ({"files": ["a", ""]}, "files[1] is empty"),
        ({"files": ["x" * 4097]}, "files[0] is longer than 4096 characters"),
        ({"files": ["a\nb"]}, "files[0] contains a NUL or line break"),
        ({"files": ["a"] * 100_001}, "too many files: 100001 given, at most 100000"),
        ({"obs": {"obs_id": -3}}, "obs_id must be positive"),
    ],
)
def test_400_with_errormsg_and_nothing_created(
    api: Api, stack: Stack, extra: dict[str, Any], message: str
) -> None:
    job_id = new_job_id()
    answer = api.submit({"job_id": job_id, "notify_url": callback_url(stack), **extra})
    assert answer.status == 400, answer.body
    assert message in answer.body["errormsg"]
    assert kube_names_with_id(stack, job_id) == []


@pytest.mark.parametrize(
    ("job_id", "url", "message"),
    [
        (0, None, "job_id must be between 1 and 9223372036854775807"),
        (2**63, None, "job_id must be between 1 and 9223372036854775807"),
        (1, "ftp://example.org/x", "notify_url must be an absolute http or https URL"),
        (1, "not a url", "notify_url must be an absolute http or https URL"),
        (1, "http://example.org/" + "x" * 2048, "notify_url is longer than 2048"),
    ],
)
def test_400_for_job_id_range_and_url(
    api: Api, stack: Stack, job_id: int, url: str | None, message: str
) -> None:
    answer = api.submit(
        {"job_id": job_id, "notify_url": url or callback_url(stack), "files": ["a"]}
    )
    assert answer.status == 400 and message in answer.body["errormsg"], answer.body


def test_422_is_the_frameworks_standard_answer(api: Api) -> None:
    answer = api.submit({"job_id": "seven", "files": "not-a-list"})
    assert answer.status == 422
    locs = {tuple(d["loc"]) for d in answer.body["detail"]}
    assert locs == {("body", "job_id"), ("body", "notify_url"), ("body", "files")}
    assert all({"loc", "msg", "type"} <= set(d) for d in answer.body["detail"])
    missing = api.call("GET", "/staging")
    assert missing.status == 422 and missing.body["detail"][0]["loc"] == ["query", "job_id"]
    not_json = api.call("POST", "/staging", raw=b"{nope")
    assert not_json.status == 422 and "detail" in not_json.body
    assert api.call("POST", "/filestatus", {"files": 5}).status == 422


# ------------------------------------------------------------------ reads


@pytest.mark.parametrize("slash", SLASHES)
def test_get_joblist(api: Api, stack: Stack, slash: str) -> None:
    job_id = new_job_id()
    paths = [f"mwa/{job_id}/b.fits", f"mwa/{job_id}/a.fits"]
    assert (
        api.submit({"job_id": job_id, "notify_url": callback_url(stack), "files": paths}).status
        == 202
    )
    wait_completed(api, job_id)
    answer = api.call("GET", "/get_joblist" + slash)
    assert answer.status == 200
    jobs = answer.body["jobs"]
    assert list(jobs) == sorted(jobs, key=int), "ordered by job id"
    line = jobs[str(job_id)]
    assert line[0] == job_id and isinstance(line[1], float)
    assert line[2:5] == [2, 2, True]
    assert isinstance(line[5], float) and line[5] >= line[1] - 1
    assert line[6] == 0 and line[7] == f"mwa/{job_id}/a.fits"


@pytest.mark.parametrize("slash", SLASHES)
def test_get_stats_with_the_archives_cache_figures(api: Api, slash: str) -> None:
    answer = api.call("GET", "/get_stats" + slash)
    assert answer.status == 200
    stats = answer.body
    assert set(stats) == {
        "kafkad_heartbeat", "kafka_alive", "last_message", "completed_jobs", "incomplete_jobs",
        "ready_files", "error_files", "waiting_files", "availdatasz", "totdatasz", "releaseable",
        "nonreleaseable", "pending", "health", "healthstatus",
    }  # fmt: skip
    assert stats["totdatasz"] == CACHE_BYTES
    assert isinstance(stats["availdatasz"], int) and 0 < stats["availdatasz"] <= CACHE_BYTES
    assert (stats["health"], stats["healthstatus"]) == (1, "ok")
    assert stats["kafka_alive"] is True and stats["kafkad_heartbeat"] > 0
    for key in ("completed_jobs", "incomplete_jobs", "ready_files", "error_files"):
        assert isinstance(stats[key], int) and stats[key] >= 0
    assert api.metric('mwa_staging_scout_fscache_bytes{kind="total"}') == CACHE_BYTES
    assert api.metric("mwa_staging_scout_fscache_health") == 1
    assert api.metric("mwa_staging_scout_fscache_up") == 1


def test_get_stats_answers_with_scout_down(api: Api, stack: Stack) -> None:
    before = api.call("GET", "/get_stats").body
    with sj.scout_outage(stack, 503):
        answer = api.call("GET", "/get_stats")
        assert api.metric("mwa_staging_scout_fscache_up") == 0
    assert answer.status == 200
    stats = answer.body
    assert (stats["availdatasz"], stats["totdatasz"], stats["health"], stats["healthstatus"]) == (
        0, 0, 0, "",
    )  # fmt: skip
    assert stats["completed_jobs"] >= before["completed_jobs"]
    assert stats["kafka_alive"] is True
    assert api.call("GET", "/get_stats").body["totdatasz"] == CACHE_BYTES


@pytest.mark.parametrize("slash", SLASHES)
def test_filestatus(api: Api, stack: Stack, slash: str) -> None:
    job_id = new_job_id()
    on_disk = f"mwa/{job_id}/staged.fits"
    assert (
        api.submit({"job_id": job_id, "notify_url": callback_url(stack), "files": [on_disk]}).status
        == 202
    )
    wait_completed(api, job_id)
    not_yet = f"mwa/{job_id}/never_requested.fits"
    answer = api.call("POST", "/filestatus" + slash, {"files": [on_disk, not_yet]})
    assert (answer.status, answer.body) == (200, {on_disk: True, not_yet: False})
    unknown = f"mwa/{job_id}/gone_MISSING.fits"
    answer = api.call("POST", "/filestatus" + slash, {"files": [on_disk, unknown]})
    assert answer.status == 404 and unknown in answer.body["errormsg"]


def test_failed_job_report_outlives_the_staging_job(api: Api, stack: Stack) -> None:
    job_id = new_job_id()
    good = f"mwa/{job_id}/fine.fits"
    bad = [f"mwa/{job_id}/x_ERROR.fits", f"mwa/{job_id}/y_ERROR.fits"]
    url = callback_url(stack)
    assert api.submit({"job_id": job_id, "notify_url": url, "files": [good, *bad]}).status == 202
    wait_callback(stack, job_id)
    assert api.delete(job_id).status == 200
    assert api.status(job_id).status == 404

    for slash in SLASHES:
        listed = api.call("GET", "/get_failed_joblist" + slash)
        assert listed.status == 200
        line = listed.body["jobs"][str(job_id)]
        assert line[0] == job_id and isinstance(line[1], int) and line[2:] == [0, 0, 0, 0, 0]
        report = api.call("GET", f"/get_failed_job{slash}?job_id={job_id}")
        assert report.status == 200
        body = report.body
        when = line[1]
        assert body["job_id"] == job_id and body["completed"] is True
        assert (body["total_files"], body["error_files"], body["last_readytime"]) == (3, 2, when)
        assert body["files"] == {path: [False, True, when] for path in bad}
    missing = api.call("GET", f"/get_failed_job?job_id={new_job_id()}")
    assert missing.status == 404 and missing.body["errormsg"].startswith("Failed job ")


def test_report_lists_never_staged_files_of_a_timed_out_job(api: Api, stack: Stack) -> None:
    """A job that times out reports its files that never arrived (kubectl for the deadline)."""
    job_id = new_job_id()
    ns = stack.env["GATEWAY_NAMESPACE"]
    jobs = sj.Jobs(stack, ns)
    never = f"mwa/{job_id}/late_NEVER.fits"
    name = f"deadline-{job_id}"
    jobs.create(name, job_id, files=[f"mwa/{job_id}/ok.fits", never], activeDeadlineSeconds=3)
    jobs.wait_status(name, timeout=60, phase="Failed", returnCode=10)
    report = wait_for(
        lambda: (r := api.call("GET", f"/get_failed_job?job_id={job_id}")).status == 200 and r,
        message="the report",
    )
    assert report.body["files"] == {never: [False, True, report.body["last_readytime"]]}
    jobs.delete(name)


def test_ping_needs_no_credentials(api: Api) -> None:
    for slash in SLASHES:
        answer = api.with_token(None).call("GET", "/ping" + slash)
        assert (answer.status, answer.body) == (200, None)


def test_openapi_and_docs(api: Api) -> None:
    spec = api.with_token(None).call("GET", "/openapi.json")
    assert spec.status == 200
    assert {"/staging", "/get_stats", "/filestatus", "/get_failed_job"} <= set(spec.body["paths"])
    assert "swagger" in api.with_token(None).call_text("/docs").lower()


# ------------------------------------------------------------------ authentication


def test_no_token_and_wrong_token_get_401_and_create_nothing(api: Api, stack: Stack) -> None:
    job_id = new_job_id()
    body = {"job_id": job_id, "notify_url": callback_url(stack), "files": ["mwa/a/b.fits"]}
    for who in (api.with_token(None), api.with_token("not-the-token")):
        answer: Answer = who.submit(body)
        assert answer.status == 401 and answer.body["errormsg"], answer.body
        assert "Bearer" in answer.headers["www-authenticate"]
        for path in ("/get_stats", "/get_joblist", f"/staging?job_id={job_id}"):
            assert who.call("GET", path).status == 401
        assert who.call("DELETE", f"/staging?job_id={job_id}").status == 401
    assert api.with_token(None).submit(body).body["errormsg"].startswith("authentication required")
    assert api.with_token("nope").submit(body).body == {"errormsg": "invalid credentials"}
    assert kube_names_with_id(stack, job_id) == []
    assert api.status(job_id).status == 404
    # The right token, and the same token as the password of HTTP Basic auth.
    basic = api.with_token(None).call(
        "GET", "/get_stats", headers=api.basic("portal", api.token or "")
    )
    assert basic.status == 200
    wrong_basic = api.with_token(None).call("GET", "/get_stats", headers=api.basic("portal", "x"))
    assert wrong_basic.status == 401
    assert api.submit(body).status == 202
    wait_completed(api, job_id)
    assert (
        api.metric('mwa_staging_gateway_requests_total{code="401",endpoint="/staging"}') or 0
    ) >= 4
    assert (api.metric('mwa_staging_gateway_auth_failures_total{kind="wrong"}') or 0) >= 1
