"""spec.filesFrom with kubectl: a big list in ConfigMaps, as the gateway writes them or by hand."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import sj
from tests.e2e.sj import Jobs, callbacks, new_job_id
from tests.e2e.target import Target

pytestmark = pytest.mark.stack

LABEL = "staging.mwatelescope.org/file-list=true"


@pytest.fixture(scope="module")
def jobs(target: Target) -> Iterator[Jobs]:
    with sj.namespace(target, "filelists") as the_jobs:
        yield the_jobs


def configmap(
    jobs: Jobs, name: str, tmp: Path, *files: tuple[str, bytes], label: bool = True
) -> None:
    args = ["create", "configmap", name, "-n", jobs.ns]
    for key, content in files:
        path = tmp / key
        path.write_bytes(content)
        args.append(f"--from-file={key}={path}")
    jobs.target.kubectl(*args)
    if label:
        jobs.target.kubectl("label", "configmap", name, "-n", jobs.ns, LABEL)


def test_gzip_and_text_lists_from_kubectl(jobs: Jobs, target: Target, tmp_path: Path) -> None:
    job_id = new_job_id()
    first = [f"mwa/{job_id}/gz_{i:05d}.fits" for i in range(15_000)]
    second = [f"mwa/{job_id}/txt_{i}.fits" for i in range(5)]
    configmap(
        jobs, f"list-{job_id}-a", tmp_path,
        ("a.txt.gz", gzip.compress(("\n".join(first) + "\n").encode())),
    )  # fmt: skip
    configmap(jobs, f"list-{job_id}-b", tmp_path, ("b.txt", ("\n".join(second) + "\n\n").encode()))
    jobs.create(
        "from-lists",
        job_id,
        filesFrom=[
            {"configMapRef": {"name": f"list-{job_id}-a"}},
            {"configMapRef": {"name": f"list-{job_id}-b"}},
        ],
    )
    status = jobs.wait_delivered("from-lists", timeout=120)
    assert (status["returnCode"], status["totalFiles"], status["readyFiles"]) == (0, 15_005, 15_005)
    [delivered] = callbacks(target, job_id)
    assert delivered["body"]["total_files"] == 15_005


def test_list_created_after_the_job_is_waited_for(jobs: Jobs, tmp_path: Path) -> None:
    job_id = new_job_id()
    jobs.create("late-list", job_id, filesFrom=[{"configMapRef": {"name": f"late-{job_id}"}}])
    configmap(jobs, f"late-{job_id}", tmp_path, ("files", f"mwa/{job_id}/one.fits\n".encode()))
    status = jobs.wait_delivered("late-list")
    assert (status["returnCode"], status["totalFiles"]) == (0, 1)


def test_a_configmap_without_the_label_is_refused(jobs: Jobs, tmp_path: Path) -> None:
    job_id = new_job_id()
    configmap(jobs, f"plain-{job_id}", tmp_path, ("files", b"mwa/a/b.fits\n"), label=False)
    jobs.create("unlabelled", job_id, filesFrom=[{"configMapRef": {"name": f"plain-{job_id}"}}])
    status = jobs.wait_status("unlabelled", phase="Failed")
    assert status["returnCode"] == 199
    assert "is not a file list" in status["message"] and "file-list=true" in status["message"]


def test_files_and_files_from_together_are_refused(jobs: Jobs) -> None:
    error = jobs.refused(
        "both", new_job_id(), files=["a"], filesFrom=[{"configMapRef": {"name": "x"}}]
    )
    assert "exactly one of spec.files, spec.filesFrom or spec.observation" in error
