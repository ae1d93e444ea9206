"""The operator killed (SIGKILL) in the middle of creating a 100,000-file job.

The create handler is idempotent: after the restart kopf runs it again, it
finds the job's row and files (recorded in one transaction before any Scout
call) and stages what is still pending. The job must end with exact counts and
exactly one delivered callback.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from devstack.stack import Stack
from tests.e2e import sj
from tests.e2e.sj import STAGE, Jobs, callbacks, calls_to, new_job_id, scout_calls
from tests.helpers import wait_for

# local_only: the test kills and restarts the operator's process.
pytestmark = [pytest.mark.stack, pytest.mark.local_only]

OBS_ID = 1234899999  # the data_files simulator gives it 99,999 files
FILES = OBS_ID % 100_000


@pytest.fixture(scope="module")
def jobs(stack: Stack) -> Iterator[Jobs]:
    with sj.fast_operator_namespace(stack, "op-crash") as the_jobs:
        yield the_jobs


def test_sigkill_mid_creation_of_a_100000_file_job(jobs: Jobs, stack: Stack) -> None:
    job_id = new_job_id()
    started = time.monotonic()
    jobs.create("huge", job_id, observation={"obsId": OBS_ID})

    def staging() -> str | None:
        """Files recorded (phase Staging), stage calls under way (not all accepted yet)."""
        status = jobs.status("huge")
        staged = jobs.condition("huge", "StageRequested").get("status") == "True"
        assert not staged, "the job was staged before the test could kill the operator"
        return str(status["phase"]) if status.get("phase") == "Staging" else None

    phase = wait_for(staging, timeout=120, interval=0.05, message="the job being staged")
    stack.kill(sj.OPERATOR)
    wait_for(lambda: not stack.is_running(sj.OPERATOR), timeout=30, message="operator dead")
    killed_at = time.monotonic() - started
    stages_before = len(calls_to(scout_calls(stack, job_id), STAGE))
    assert jobs.condition("huge", "StageRequested").get("status") != "True"

    stack.start(sj.OPERATOR)
    status = jobs.wait_delivered("huge", timeout=300)
    assert status["phase"] == "Complete" and status["returnCode"] == 0
    assert (status["totalFiles"], status["readyFiles"], status["errorFiles"]) == (FILES, FILES, 0)
    delivered = callbacks(stack, job_id)
    assert [c["status"] for c in delivered] == [200]
    assert delivered[0]["body"]["total_files"] == FILES
    assert delivered[0]["body"]["ready_files"] == FILES
    print(
        f"killed in phase {phase} after {killed_at:.1f} s with {stages_before} stage call(s)"
        f" made; completed {time.monotonic() - started:.1f} s after create"
    )


def test_time_to_staging_of_a_100000_file_observation(jobs: Jobs, stack: Stack) -> None:
    """Not a pass/fail figure: the time from create to phase Staging, printed for the note."""
    job_id = new_job_id()
    started = time.monotonic()
    jobs.create("measure", job_id, observation={"obsId": 1234999999})
    wait_for(
        lambda: jobs.status("measure").get("phase") in ("Staging", "Complete"),
        timeout=120,
        interval=0.05,
        message="phase Staging",
    )
    to_staging = time.monotonic() - started
    wait_for(
        lambda: jobs.condition("measure", "StageRequested").get("status") == "True",
        timeout=120,
        interval=0.05,
        message="stage requested",
    )
    to_staged = time.monotonic() - started
    status = jobs.wait_delivered("measure", timeout=300)
    assert status["readyFiles"] == status["totalFiles"] == 99_999
    print(
        f"100,000-file observation: phase Staging after {to_staging:.1f} s, every stage call"
        f" accepted after {to_staged:.1f} s, complete and delivered after"
        f" {time.monotonic() - started:.1f} s"
    )
