"""A 100,000-file POST: accepted at once, the list kept out of the StagingJob, one callback.

The time it takes is a figure of ``make bench`` (bench/gateway_bench.py), not
asserted here.
"""

from __future__ import annotations

import json

import pytest

from devstack.stack import Stack
from tests.e2e import sj
from tests.e2e.sj import STAGE, calls_to, new_job_id
from tests.gateway.client import Api
from tests.helpers import wait_for

pytestmark = pytest.mark.stack

N = 100_000


def test_100000_files_in_one_post(api: Api, stack: Stack) -> None:
    job_id = new_job_id()
    paths = [f"mwa/{job_id}/{job_id}_{i // 24:05d}_ch{i % 24 + 1:03d}.fits" for i in range(N)]
    body = {"job_id": job_id, "notify_url": stack.env["CALLBACK_URL"], "files": paths}
    answer = api.submit(body)
    assert (answer.status, answer.body) == (202, None)

    ns = stack.env["GATEWAY_NAMESPACE"]
    obj = json.loads(
        stack.kubectl("get", "stagingjob", f"job-{job_id}", "-n", ns, "-o", "json").stdout
    )
    spec = obj["spec"]
    assert "files" not in spec and spec["filesFrom"], "the list is not in the StagingJob"
    assert len(json.dumps(obj)) < 20_000
    for entry in spec["filesFrom"]:
        cm = json.loads(
            stack.kubectl(
                "get", "configmap", entry["configMapRef"]["name"], "-n", ns, "-o", "json"
            ).stdout
        )
        assert cm["metadata"]["labels"]["staging.mwatelescope.org/file-list"] == "true"
        [owner] = cm["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "StagingJob",
            f"job-{job_id}",
            obj["metadata"]["uid"],
        )
        assert all(key.endswith(".gz") for key in cm["binaryData"])

    done = wait_for(
        lambda: (s := api.status(job_id)).status == 200 and s.body["completed"] and s.body,
        timeout=300,
        interval=0.5,
        message="the 100,000-file job completed",
    )
    assert (done["total_files"], done["ready_files"]) == (N, N)
    stages = calls_to(sj.scout_calls(stack, job_id), STAGE)
    assert sum(c["n_paths"] for c in stages) == N and len(stages) == 10
    callback = wait_for(lambda: sj.callbacks(stack, job_id), timeout=120, message="callback")
    assert len(callback) == 1
    assert callback[0]["body"]["total_files"] == N and callback[0]["body"]["ready_files"] == N
    files = api.status(job_id, include_files=True).body["files"]
    assert len(files) == N and files[paths[-1]][:2] == [True, False]
