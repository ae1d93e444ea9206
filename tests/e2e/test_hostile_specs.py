"""Hostile and awkward StagingJobs against the real API server and the operator.

* A generated set of invalid specs (every field with each kind of wrong value
  the schema knows) is refused by the API server, each error naming the field.
* Valid edge cases -- one file, the longest path, unicode, spaces, quotes,
  backslashes -- are accepted, staged exactly as written and end with code 0.
* Callback URLs the operator must not call: credentials in the URL are refused
  by the API server (the CRD's rule) and by the gateway (400); a host that is a
  cloud metadata address ends the job Failed with a message saying why, and no
  request is made to it (the 10,000-file case is tests/e2e/test_operator.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e import sj
from tests.e2e.sj import STAGE, Jobs, callbacks, calls_to, new_job_id, scout_calls
from tests.e2e.target import Target

pytestmark = pytest.mark.stack

GOOD_URL = "http://receiver.example.org/cb"

#: (field, wrong values): each value alone makes the spec invalid.
WRONG: dict[str, list[Any]] = {
    "jobId": [0, -1, "7", 1.5, None],
    "files": [[], "mwa/a", [1], [""], ["a\x00b"], ["a\rb"], ["x" * 4097], [["a"]]],
    "observation.obsId": [0, -3, "123", None],
    "observation.startTime": [-1, "x"],
    "observation.duration": [-1, "x"],
    "callback.url": [
        "",
        "ftp://x.test/cb",
        "no-scheme.test/cb",
        "http://",
        "https://user:pw@x.test/cb",
        "https://token@x.test/cb",
        "http://x.test/" + "a" * 2048,
    ],
    "callback.secretRef.name": ["", "x" * 254],
    "activeDeadlineSeconds": [0, -5, "60"],
    "restageIntervalSeconds": [0, "60"],
    "ttlSecondsAfterFinished": [-1, "60"],
}


def _spec_with(field: str, value: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"callback": {"url": GOOD_URL}}
    if field.startswith("observation."):
        spec["observation"] = {"obsId": 1_234_500_002, "startTime": 10, "duration": 8}
    else:
        spec["files"] = ["mwa/ok/a.fits"]
    if field == "callback.secretRef.name":
        spec["callback"]["secretRef"] = {}
    node = spec
    *parents, leaf = field.split(".")
    for name in parents:
        node = node.setdefault(name, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return spec


CASES = [(field, value) for field, values in WRONG.items() for value in values]


@pytest.fixture(scope="module")
def jobs(target: Target) -> Iterator[Jobs]:
    with target.fast_operator(), sj.namespace(target, "hostile") as the_jobs:
        yield the_jobs


@pytest.mark.parametrize(("field", "value"), CASES, ids=[f"{f}={str(v)[:20]!r}" for f, v in CASES])
def test_generated_invalid_specs_are_refused_naming_the_field(
    jobs: Jobs, field: str, value: Any
) -> None:
    spec = _spec_with(field, value)
    job_id = spec.pop("jobId", new_job_id()) if field == "jobId" else new_job_id()
    obj = jobs.manifest("invalid", 1, **spec)
    if field == "jobId":
        if value is None:
            obj["spec"].pop("jobId")
        else:
            obj["spec"]["jobId"] = value
    else:
        obj["spec"]["jobId"] = job_id
    result = jobs.kubectl_with_file(obj, "create", "--dry-run=server", check=False)
    assert result.returncode != 0, f"the API server accepted spec.{field}={value!r}"
    shown = f"spec.{field}"
    if field == "files" and isinstance(value, list) and value and not isinstance(value[0], list):
        shown = "spec.files"  # spec.files[0] for the items
    assert shown in result.stderr, result.stderr


def test_the_credentials_rule_says_what_to_use_instead(jobs: Jobs) -> None:
    error = jobs.refused("creds", new_job_id(), files=["a"],
                         callback={"url": "https://u:secret@x.test/cb"})  # fmt: skip
    assert "spec.callback.url" in error and "use callback.secretRef" in error, error


def test_awkward_valid_paths_are_accepted_and_staged_as_written(jobs: Jobs, target: Target) -> None:
    job_id = new_job_id()
    prefix = f"mwa/{job_id}/"
    paths = [
        prefix + "x" * (4096 - len(prefix) - 5) + ".fits",  # the longest path: 4,096 characters
        prefix + "观测 ünïcödé/🔭_ch001.fits",
        prefix + "with space/a b.fits",
        prefix + 'double "quoted".fits',
        prefix + "single 'quoted'.fits",
        prefix + "back\\slash;semi|pipe$dollar`tick`.fits",
        prefix + "tab\tin name.fits",
    ]
    assert len(paths[0]) == 4096
    jobs.create("awkward", job_id, files=paths)
    status = jobs.wait_delivered("awkward", timeout=90)
    assert (status["returnCode"], status["readyFiles"], status["totalFiles"]) == (0, 7, 7)
    [stage] = calls_to(scout_calls(target, job_id), STAGE)
    assert stage["n_paths"] == 7
    [delivered] = callbacks(target, job_id)
    assert delivered["body"]["ready_files"] == 7


def test_one_file_job(jobs: Jobs) -> None:
    job_id = new_job_id()
    jobs.create("one-file", job_id, files=[f"mwa/{job_id}/only.fits"])
    status = jobs.wait_delivered("one-file")
    assert (status["returnCode"], status["readyFiles"], status["totalFiles"]) == (0, 1, 1)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
        ("http://[fe80::1]:8080/cb", "a link-local address"),
        ("http://0.0.0.0:9/cb", "an unspecified address"),
    ],
)
def test_a_callback_to_a_forbidden_address_ends_the_job_saying_why(
    jobs: Jobs, target: Target, url: str, why: str
) -> None:
    job_id = new_job_id()
    name = f"refused-{job_id}"
    jobs.create(name, job_id, files=[f"mwa/{job_id}/a.fits"], callback={"url": url})
    status = jobs.wait_status(name, phase="Failed")
    assert status["returnCode"] == 199
    assert status["message"].startswith("callback refused: ") and why in status["message"]
    assert "CALLBACK_ALLOWED_NETWORKS" in status["message"]
    assert scout_calls(target, job_id) == []  # nothing was staged for it
    assert callbacks(target, job_id) == []
