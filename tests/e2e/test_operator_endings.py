"""How a job ends part way: a stage refused after some calls were accepted, a hanging lookup.

* A 102 after Scout accepted some of a job's stage calls must not leave those
  requests standing: the paths already requested that no other live job holds
  are cancelled, as for a timeout, and the job's message says so.
* ``activeDeadlineSeconds`` runs from the job's start in every unfinished
  state: a job whose data_files lookup hangs times out (code 10, callback) at
  its deadline instead of waiting for the lookup's retry budget.

Driven like the other operator tests: through the Kubernetes API, asserting on
status, the callback log and the Scout calls the simulator recorded.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.sim.data_files import expected_paths
from devstack.stack import Stack
from tests.e2e import sj
from tests.e2e.sj import CANCEL, STAGE, Jobs, callbacks, calls_to, new_job_id, scout_calls
from tests.helpers import wait_for

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def jobs(stack: Stack) -> Iterator[Jobs]:
    with sj.fast_operator_namespace(stack, "op-endings") as the_jobs:
        yield the_jobs


def control(stack: Stack, path: str, body: object = None, method: str = "POST") -> object:
    return sj.http(method, f"{stack.env['SIM_CONTROL_URL']}/control/{path}", body)


def test_stage_refused_after_a_first_accepted_call_cancels_what_was_staged(
    jobs: Jobs, stack: Stack
) -> None:
    obs_id = 1234715000  # 15,000 files: two stage calls of at most 10,000 paths
    requested_first = sorted(expected_paths(obs_id))[:10_000]  # stage order: code points
    held = requested_first[:3]
    holder_id, job_id = new_job_id(), new_job_id()
    control(stack, "pause")  # no arrivals: every staged path stays pending
    try:
        # Another live job holds three of the paths the first call will request.
        jobs.create("holder", holder_id, files=held)
        wait_for(
            lambda: jobs.condition("holder", "StageRequested").get("status") == "True",
            message="the holder staged",
        )
        # Scout accepts the next stage call and refuses every one after it.
        control(stack, "outage", {"status": 503, "endpoint": STAGE, "after": 1})
        jobs.create("partial", job_id, observation={"obsId": obs_id})
        status = jobs.wait_status("partial", timeout=90, phase="Failed")
        assert status["returnCode"] == 102 and "503" in status["message"]
        assert "10000 of 15000 files had been requested" in status["message"]
        assert [c["n_paths"] for c in calls_to(scout_calls(stack, job_id), STAGE)] == [10_000]

        cancels = wait_for(
            lambda: calls_to(scout_calls(stack, job_id), CANCEL),
            timeout=30,
            message="the cancel of the staged paths",
        )
        assert sum(c["n_paths"] for c in cancels) == 10_000 - len(held)
        for path in held:  # the holder still needs them: never cancelled
            described = control(stack, f"files?path={path}", method="GET")
            assert isinstance(described, dict) and described["cancels"] == 0, described
        assert "Cancelled" in {e["reason"] for e in jobs.events("partial")}
        jobs.wait_delivered("partial")
        [delivered] = callbacks(stack, job_id)
        assert delivered["body"]["return_code"] == 102
        assert jobs.status("holder")["phase"] == "Staging"
    finally:
        control(stack, "outage", method="DELETE")
        control(stack, "resume")
    jobs.wait_delivered("holder")


def test_deadline_applies_while_the_lookup_hangs(jobs: Jobs, stack: Stack) -> None:
    job_id = new_job_id()
    obs_id = 8_000_000_300  # the data_files simulator answers after 300 s
    jobs.create("hung", job_id, observation={"obsId": obs_id}, activeDeadlineSeconds=3)
    jobs.wait_status("hung", timeout=20, phase="Resolving")
    status = jobs.wait_delivered("hung", timeout=30)
    assert status["phase"] == "Failed" and status["returnCode"] == 10
    assert status["reason"] == "DeadlineExceeded"
    assert "while resolving" in status["message"]
    [delivered] = callbacks(stack, job_id)
    assert delivered["body"]["return_code"] == 10 and delivered["body"]["total_files"] == 0
    assert scout_calls(stack, job_id) == []
