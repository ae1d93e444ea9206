"""Status writes are addressed to one object, not to a name.

A job deleted and created again under the same name is another object: the old
job's projection must not land on it. ``StagingJobs.patch_status(..., uid=)``
tests ``metadata.uid`` in the same JSON patch; a merge patch cannot (its
metadata is ignored on the status subresource).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from devstack.stack import Stack
from mwa_staging.kube import StagingJobs, api_client
from tests.helpers import wait_for

pytestmark = pytest.mark.stack

OTHER_UID = "00000000-0000-0000-0000-000000000000"


def _object(stack: Stack, ns: str, name: str) -> dict[str, Any]:
    out = stack.kubectl("get", "stagingjob", name, "-n", ns, "-o", "json").stdout
    return dict(json.loads(out))


def test_status_patch_refuses_another_object_with_the_same_name(
    stack: Stack, tmp_path: Path
) -> None:
    ns = f"patch-{uuid.uuid4().hex[:8]}"
    stack.kubectl("create", "namespace", ns)
    job = {
        "apiVersion": "staging.mwatelescope.org/v1alpha1",
        "kind": "StagingJob",
        "metadata": {"name": "same-name", "namespace": ns},
        # MISSING: the archive never reports it, so nothing else writes this
        # status once the job is Staging.
        "spec": {
            "jobId": uuid.uuid4().int % 10**9 + 1,
            "files": [f"mwa/patch/{uuid.uuid4().hex}/MISSING.fits"],
            "callback": {"url": stack.env["CALLBACK_URL"]},
        },
    }
    manifest = tmp_path / "job.json"
    manifest.write_text(json.dumps(job))
    stack.kubectl("create", "-f", str(manifest))
    try:
        wait_for(
            lambda: _object(stack, ns, "same-name").get("status", {}).get("phase") == "Staging",
            timeout=60,
            interval=0.2,
            message="the job reaches Staging",
        )
        jobs = StagingJobs(api_client(stack.env["KUBECONFIG"]))
        uid = _object(stack, ns, "same-name")["metadata"]["uid"]
        status = dict(_object(stack, ns, "same-name")["status"])

        stale = dict(status, message="written for another object")
        assert jobs.patch_status(ns, "same-name", stale, uid=OTHER_UID) is False
        assert _object(stack, ns, "same-name")["status"]["message"] != stale["message"]

        fresh = dict(status, message="written for this object", startTime=None)
        assert jobs.patch_status(ns, "same-name", fresh, uid=uid) is True
        written = _object(stack, ns, "same-name")["status"]
        assert written["message"] == "written for this object"
        assert "startTime" not in written, "a None value removes the field"

        # An invalid status for the right object is an error, not "gone".
        with pytest.raises(ApiException) as refused:
            jobs.patch_status(ns, "same-name", dict(status, phase="Bogus"), uid=uid)
        assert refused.value.status == 422
    finally:
        stack.kubectl("delete", "stagingjob", "same-name", "-n", ns, "--wait=false")
