"""Driving StagingJobs on a :class:`~tests.e2e.target.Target`, for the operator's e2e tests.

Everything goes through kubectl (the Kubernetes API) and the simulators'
control endpoints; nothing reaches into the operator or its database, except
the kubectl plugin, which is itself under test. The target is the local stack
or an external cluster (tests/e2e/target.py); the helpers also take a local
:class:`~devstack.stack.Stack` (tests marked ``local_only`` pass theirs).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import Stack
from tests.e2e.target import (
    FAST_ENV,
    OPERATOR,
    Target,
    as_target,
    http,
    restore_operator,
    start_fast_operator,
)
from tests.helpers import wait_for

__all__ = ["FAST_ENV", "OPERATOR", "http", "restore_operator", "start_fast_operator"]

API_VERSION = "staging.mwatelescope.org/v1alpha1"

_ids = itertools.count(int(time.time() * 1000) % 10**11 * 10)


def new_job_id() -> int:
    """A job id no other test of any session uses."""
    return next(_ids)


class Jobs:
    """StagingJobs of one test namespace."""

    def __init__(self, target: Target | Stack, namespace: str) -> None:
        self.target = as_target(target)
        self.ns = namespace
        self.callback_url = self.target.env["CALLBACK_URL"]

    # -- objects ---------------------------------------------------------------

    def manifest(self, name: str, job_id: int, **spec: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"jobId": job_id, "callback": {"url": self.callback_url}}
        body.update(spec)
        return {
            "apiVersion": API_VERSION,
            "kind": "StagingJob",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": body,
        }

    def kubectl_with_file(
        self, obj: dict[str, Any], *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(obj, handle)
        try:
            return self.target.kubectl(*args, "-f", handle.name, check=check)
        finally:
            os.unlink(handle.name)

    def create(self, name: str, job_id: int, **spec: Any) -> dict[str, Any]:
        """``kubectl create`` (not apply: apply copies a 10,000-path spec into an annotation)."""
        obj = self.manifest(name, job_id, **spec)
        self.kubectl_with_file(obj, "create")
        return obj

    def refused(self, name: str, job_id: int, **spec: Any) -> str:
        """The API server's error for an invalid spec (server-side dry run: nothing is kept)."""
        obj = self.manifest(name, job_id, **spec)
        result = self.kubectl_with_file(obj, "create", "--dry-run=server", check=False)
        assert result.returncode != 0, f"the API server accepted {spec}"
        return result.stderr

    def get(self, name: str) -> dict[str, Any] | None:
        result = self.target.kubectl(
            "get", "stagingjob", name, "-n", self.ns, "-o", "json", check=False
        )
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise RuntimeError(result.stderr)
        return dict(json.loads(result.stdout))

    def status(self, name: str) -> dict[str, Any]:
        obj = self.get(name)
        return dict((obj or {}).get("status") or {})

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        for cond in self.status(name).get("conditions", []):
            if cond["type"] == type_:
                return dict(cond)
        return {}

    def wait_status(self, name: str, timeout: float = 60.0, **expected: Any) -> dict[str, Any]:
        """Wait until every ``status.<key>`` equals the expected value; return the status."""

        def check() -> dict[str, Any] | None:
            status = self.status(name)
            if all(status.get(key) == value for key, value in expected.items()):
                return status
            return None

        return wait_for(
            check,
            timeout=timeout,
            interval=0.2,
            message=f"{self.ns}/{name} status {expected} (last: {self.status(name)})",
        )

    def wait_delivered(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        wait_for(
            lambda: self.condition(name, "CallbackDelivered").get("status") == "True",
            timeout=timeout,
            interval=0.2,
            message=f"callback of {self.ns}/{name} delivered",
        )
        return self.status(name)

    def wait_gone(self, name: str, timeout: float = 60.0) -> None:
        wait_for(
            lambda: self.get(name) is None,
            timeout=timeout,
            interval=0.2,
            message=f"{self.ns}/{name} deleted",
        )

    def delete(self, name: str) -> None:
        self.target.kubectl("delete", "stagingjob", name, "-n", self.ns, "--wait=false")

    def events(self, name: str) -> list[dict[str, Any]]:
        result = self.target.kubectl(
            "get",
            "events",
            "-n",
            self.ns,
            "-o",
            "json",
            "--field-selector",
            f"involvedObject.name={name}",
        )
        return list(json.loads(result.stdout)["items"])

    def plugin_files(self, name: str, *args: str) -> list[list[str]]:
        """Rows of ``kubectl-stagingjob files NAME`` (split on runs of spaces, path 3rd)."""
        if "DATABASE_URL" not in self.target.env:
            pytest.skip(
                "the plugin reads the database, whose URL is unknown (MWA_E2E_DATABASE_URL)"
            )
        env = dict(
            os.environ,
            KUBECONFIG=self.target.env["KUBECONFIG"],
            DATABASE_URL=self.target.env["DATABASE_URL"],
        )
        plugin = Path(sys.executable).with_name("kubectl-stagingjob")
        result = subprocess.run(
            [str(plugin), "files", name, "-n", self.ns, "--no-headers", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return [line.split(None, 3) for line in result.stdout.splitlines() if line]


# -- the simulators and the callback receiver (see Target) ----------------------------


def scout_calls(target: Target | Stack, key: int | None = None) -> list[dict[str, Any]]:
    """Scout calls the simulator received (for one job id's key)."""
    return as_target(target).scout_calls(key)


def calls_to(calls: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    return [c for c in calls if c["path"] == path and c["status"] == 200]


STAGE = "/v1/request/batchstage"
CANCEL = "/v1/request/cancelbatchstage"
FILE = "/v1/file"


def callbacks(target: Target | Stack, job_id: int) -> list[dict[str, Any]]:
    """Requests the callback receiver logged for this job id, in order.

    Read through the receiver's ``GET /_control/log``, not its file, so that it
    works where the receiver runs (the local stack or a cluster).
    """
    return as_target(target).callbacks(job_id)


def callback_control(
    target: Target | Stack, path: str, body: Any = None, method: str = "POST"
) -> Any:
    return as_target(target).callback_control(path, body, method)


def data_files_requests(target: Target | Stack) -> list[dict[str, Any]]:
    return as_target(target).data_files_requests()


def scout_outage(target: Target | Stack, status: int = 503) -> AbstractContextManager[None]:
    return as_target(target).scout_outage(status)


# -- fixtures (imported by the test modules) ----------------------------------------


@contextmanager
def namespace(target: Target | Stack, prefix: str) -> Iterator[Jobs]:
    """A fresh namespace; its StagingJobs are deleted (through the operator) afterwards."""
    target = as_target(target)
    name = f"{prefix}-{new_job_id() % 10**8}"
    target.kubectl("create", "namespace", name)
    jobs = Jobs(target, name)
    try:
        yield jobs
    finally:
        target.kubectl(
            "delete",
            "stagingjobs",
            "--all",
            "-n",
            name,
            "--wait=true",
            "--timeout=60s",
            check=False,
        )
        target.kubectl("delete", "namespace", name, "--wait=false", check=False)


@contextmanager
def fast_operator_namespace(stack: Stack, prefix: str) -> Iterator[Jobs]:
    """A fresh namespace served by the operator with the test-sized settings (FAST_ENV);
    the stack's own operator is back afterwards."""
    start_fast_operator(stack)
    try:
        with namespace(stack, prefix) as jobs:
            yield jobs
    finally:
        restore_operator(stack)
