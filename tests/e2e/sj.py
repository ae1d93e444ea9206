"""Driving StagingJobs on the real stack, for the operator's end-to-end tests.

Everything goes through kubectl (the Kubernetes API) and the simulators'
control endpoints; nothing reaches into the operator or its database, except
the kubectl plugin, which is itself under test.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devstack.stack import Stack
from tests.helpers import wait_for

API_VERSION = "staging.mwatelescope.org/v1alpha1"

#: Operator settings that make retries and backoffs test-sized. The launcher's
#: defaults are production-like (a 120 s Scout retry budget, 5 s first callback
#: backoff); the operator under test gets these on top of ``service_env``.
FAST_ENV = {
    "SCOUT_RETRY_BUDGET_SECONDS": "3",
    "SCOUT_RETRY_INITIAL_SECONDS": "0.2",
    "SCOUT_RETRY_MAX_SECONDS": "1",
    "CALLBACK_BACKOFF_INITIAL_SECONDS": "0.5",
    "CALLBACK_BACKOFF_MAX_SECONDS": "2",
    "DATA_FILES_ATTEMPTS": "2",
    "DATA_FILES_RETRY_SECONDS": "0.2",
    "SCHEDULER_MAX_SLEEP_SECONDS": "5",
}

_ids = itertools.count(int(time.time() * 1000) % 10**11 * 10)


def new_job_id() -> int:
    """A job id no other test of any session uses."""
    return next(_ids)


class Jobs:
    """StagingJobs of one test namespace."""

    def __init__(self, stack: Stack, namespace: str) -> None:
        self.stack = stack
        self.ns = namespace
        self.callback_url = stack.env["CALLBACK_URL"]

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
            return self.stack.kubectl(*args, "-f", handle.name, check=check)
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
        result = self.stack.kubectl(
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
        self.stack.kubectl("delete", "stagingjob", name, "-n", self.ns, "--wait=false")

    def events(self, name: str) -> list[dict[str, Any]]:
        result = self.stack.kubectl(
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
        env = dict(
            os.environ,
            KUBECONFIG=self.stack.env["KUBECONFIG"],
            DATABASE_URL=self.stack.env["DATABASE_URL"],
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


# -- the simulators ---------------------------------------------------------------


def http(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def scout_calls(stack: Stack, key: int | None = None) -> list[dict[str, Any]]:
    """Scout calls the simulator received (for one job id's key)."""
    base = stack.env["SIM_CONTROL_URL"]
    url = f"{base}/control/calls" + (f"?key={key}" if key is not None else "")
    return list(http("GET", url))


def calls_to(calls: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    return [c for c in calls if c["path"] == path and c["status"] == 200]


STAGE = "/v1/request/batchstage"
CANCEL = "/v1/request/cancelbatchstage"
FILE = "/v1/file"


def callbacks(stack: Stack, job_id: int) -> list[dict[str, Any]]:
    """Requests the callback receiver logged for this job id, in order."""
    path = Path(stack.env["CALLBACK_LOG"])
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        body = entry.get("body")
        if isinstance(body, dict) and body.get("job_id") == job_id:
            found.append(entry)
    return found


def callback_control(stack: Stack, path: str, body: Any = None, method: str = "POST") -> Any:
    base = stack.env["CALLBACK_URL"].rsplit("/callback", 1)[0]
    return http(method, f"{base}/_control{path}", body)


def data_files_requests(stack: Stack) -> list[dict[str, Any]]:
    base = stack.env["DATA_FILES_URL"].split("/metadata/", 1)[0]
    return list(http("GET", f"{base}/_control/requests"))


@contextmanager
def scout_outage(stack: Stack, status: int = 503) -> Iterator[None]:
    base = stack.env["SIM_CONTROL_URL"]
    http("POST", f"{base}/control/outage", {"status": status})
    try:
        yield
    finally:
        http("DELETE", f"{base}/control/outage")


# -- fixtures (imported by the test modules) ----------------------------------------

OPERATOR = "operator-e2e"


def start_fast_operator(stack: Stack) -> None:
    """Replace the stack's operator by one with test-sized retries (same code, same env)."""
    if stack.is_running("operator"):
        stack.stop("operator")
    stack.spawn(OPERATOR, "operator", FAST_ENV)


def restore_operator(stack: Stack) -> None:
    stack.stop(OPERATOR)
    if "operator" in stack.services:
        stack.start("operator")


@contextmanager
def namespace(stack: Stack, prefix: str) -> Iterator[Jobs]:
    """A fresh namespace; its StagingJobs are deleted (through the operator) afterwards."""
    name = f"{prefix}-{new_job_id() % 10**8}"
    stack.kubectl("create", "namespace", name)
    jobs = Jobs(stack, name)
    try:
        yield jobs
    finally:
        stack.kubectl(
            "delete",
            "stagingjobs",
            "--all",
            "-n",
            name,
            "--wait=true",
            "--timeout=60s",
            check=False,
        )
        stack.kubectl("delete", "namespace", name, "--wait=false", check=False)
