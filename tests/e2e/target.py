"""Where the end-to-end tests run: the local stack, or a cluster described by the environment.

The e2e tests that drive the system only through the Kubernetes API and the
simulators' HTTP endpoints take the ``target`` fixture (tests/conftest.py), a
:class:`Target`, instead of the local :class:`~devstack.stack.Stack`. The same
test code then runs

* on the local stack (the default, what ``make test`` does): :class:`LocalTarget`
  wraps the session's ``stack``;
* on an external cluster (``hack/kind-e2e.sh``) when ``MWA_E2E_EXTERNAL=1``:
  :class:`ExternalTarget` is built from these variables.

==================================  ===============================================
``MWA_E2E_KUBECONFIG``              kubeconfig of the cluster (required)
``MWA_E2E_CALLBACK_URL``            the callback receiver's URL as the *operator*
                                    reaches it, put in ``spec.callback.url``
                                    (in kind an in-cluster Service URL) (required)
``MWA_E2E_CALLBACK_CONTROL_URL``    the same receiver's base URL as the *tests*
                                    reach it (``/_control`` is appended; a trailing
                                    ``/_control`` is accepted) (required)
``MWA_E2E_SIM_CONTROL_URL``         the Banksia simulator's base URL (Scout calls,
                                    outages) as the tests reach it (required)
``MWA_E2E_DATA_FILES_URL``          the data_files simulator's base URL (or its
                                    ``.../metadata/data_files`` URL) as the tests
                                    reach it (required)
``MWA_E2E_RESULT_USERNAME``         the user of the operator's default callback
                                    credentials (RESULT_USERNAME) (required)
``MWA_E2E_OPERATOR_URL``            the operator's HTTP base URL (``/metrics``);
                                    unset: the checks that need it skip
``MWA_E2E_DATABASE_URL``            the operator's database (libpq URL), for the
                                    ``kubectl-stagingjob`` plugin; unset: the
                                    checks that need it skip
``MWA_E2E_KUBECTL``                 kubectl to run (default: ``kubectl`` on PATH,
                                    else the one ``make build`` fetched)
==================================  ===============================================

What the cluster must provide: the chart installed with the operator watching
every namespace (``rbac.clusterWide``; each test module creates its own namespace)
and the test-sized operator settings of :data:`FAST_ENV` (``operator.extraEnv``),
the simulators of devstack/sim, and a callback receiver that started with the
default credentials (its log is read through ``GET /_control/log``, never a file).

Tests that need process control (stop, kill or spawn a process, the stack's own
database or Kafka) take the ``stack`` fixture; they are marked ``local_only`` and
skipped in external mode.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from devstack import build
from devstack.stack import Stack

#: Operator settings that make retries and backoffs test-sized. The launcher's
#: defaults are production-like (a 120 s Scout retry budget, 5 s first callback
#: backoff). Locally the operator under test gets these on top of ``service_env``;
#: in kind they are ``operator.extraEnv`` of charts/mwa-staging/ci/kind-values.yaml
#: (a unit test keeps the two equal).
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

#: The name of the test-sized operator a LocalTarget runs in place of the stack's.
OPERATOR = "operator-e2e"

EXTERNAL = "MWA_E2E_EXTERNAL"
REQUIRED = (
    "MWA_E2E_KUBECONFIG",
    "MWA_E2E_CALLBACK_URL",
    "MWA_E2E_CALLBACK_CONTROL_URL",
    "MWA_E2E_SIM_CONTROL_URL",
    "MWA_E2E_DATA_FILES_URL",
    "MWA_E2E_RESULT_USERNAME",
)
OPTIONAL = ("MWA_E2E_OPERATOR_URL", "MWA_E2E_DATABASE_URL", "MWA_E2E_KUBECTL")


class TargetError(RuntimeError):
    """The external target's environment is incomplete or wrong."""


def is_external(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment asks for an external cluster (``MWA_E2E_EXTERNAL``)."""
    value = (os.environ if environ is None else environ).get(EXTERNAL, "")
    return value.strip().lower() in ("1", "true", "yes")


def http(method: str, url: str, body: Any = None) -> Any:
    """A JSON request; the parsed JSON answer (None when empty)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def _base(url: str, *suffixes: str) -> str:
    """``url`` without a trailing slash and without the first suffix part it contains."""
    url = url.rstrip("/")
    for suffix in suffixes:
        if suffix in url:
            url = url.split(suffix, 1)[0]
    return url


@dataclass(frozen=True)
class Endpoints:
    """Everything the e2e tests need to know about a target."""

    kubeconfig: str
    callback_url: str  # as the operator reaches it (spec.callback.url)
    callback_control_url: str  # the receiver's base URL as the tests reach it
    sim_control_url: str  # Banksia's base URL
    data_files_url: str  # data_files' base URL
    result_username: str
    operator_url: str | None = None
    database_url: str | None = None
    kubectl: str = "kubectl"


class Target:
    """The system under test, seen only through the Kubernetes API and HTTP endpoints."""

    description = "target"

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self._log: list[dict[str, Any]] = []

    # -- values ------------------------------------------------------------------

    @property
    def operator_url(self) -> str | None:
        return self.endpoints.operator_url

    @property
    def env(self) -> dict[str, str]:
        """The values under the names the local stack's env uses (tests read these)."""
        ep = self.endpoints
        env = {
            "KUBECONFIG": ep.kubeconfig,
            "CALLBACK_URL": ep.callback_url,
            "CALLBACK_CONTROL_URL": ep.callback_control_url,
            "SIM_CONTROL_URL": ep.sim_control_url,
            "DATA_FILES_URL": ep.data_files_url,
            "RESULT_USERNAME": ep.result_username,
        }
        if ep.database_url:
            env["DATABASE_URL"] = ep.database_url
        if self.operator_url:
            env["OPERATOR_URL"] = self.operator_url
        return env

    @property
    def skipped(self) -> dict[str, str]:
        """Components that are not running, with the reason (none on a cluster)."""
        return {}

    # -- the Kubernetes API ----------------------------------------------------------

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run kubectl with the target's kubeconfig; output captured as text."""
        env = dict(os.environ, KUBECONFIG=self.endpoints.kubeconfig)
        result = subprocess.run(
            [self.endpoints.kubectl, *args], env=env, capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, result.args, result.stdout, result.stderr
            )
        return result

    # -- the operator ------------------------------------------------------------------

    @contextmanager
    def fast_operator(self) -> Iterator[None]:
        """An operator with :data:`FAST_ENV` for the duration (a cluster's already is)."""
        yield

    def operator_metrics(self) -> str:
        """The operator's ``/metrics`` text (skips the test when its URL is unknown)."""
        if not self.operator_url:
            pytest.skip("the operator's URL is unknown (MWA_E2E_OPERATOR_URL)")
        with urllib.request.urlopen(f"{self.operator_url}/metrics", timeout=10) as response:
            return str(response.read().decode())

    # -- the callback receiver --------------------------------------------------------

    def callback_control(self, path: str, body: Any = None, method: str = "POST") -> Any:
        return http(method, f"{self.endpoints.callback_control_url}/_control{path}", body)

    def callback_log(self) -> list[dict[str, Any]]:
        """Every request the callback receiver logged, in order (``GET /_control/log``).

        Read incrementally (``?since=``): entries already read are kept; if the
        receiver reports fewer entries than were read (it restarted without its
        file), everything is read again.
        """
        url = f"{self.endpoints.callback_control_url}/_control/log?since={len(self._log)}"
        with urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("X-Log-Length", "-1"))
            new = json.loads(response.read())
        if 0 <= total < len(self._log):
            self._log = []
            return self.callback_log()
        self._log.extend(new)
        return list(self._log)

    def callbacks(self, job_id: int) -> list[dict[str, Any]]:
        """Requests the callback receiver logged for this job id, in order."""
        found = []
        for entry in self.callback_log():
            body = entry.get("body")
            if isinstance(body, dict) and body.get("job_id") == job_id:
                found.append(entry)
        return found

    # -- the simulators ------------------------------------------------------------------

    def scout_calls(self, key: int | None = None) -> list[dict[str, Any]]:
        """Scout calls the simulator received (for one job id's key)."""
        url = f"{self.endpoints.sim_control_url}/control/calls"
        return list(http("GET", url + (f"?key={key}" if key is not None else "")))

    @contextmanager
    def scout_outage(self, status: int = 503) -> Iterator[None]:
        base = self.endpoints.sim_control_url
        http("POST", f"{base}/control/outage", {"status": status})
        try:
            yield
        finally:
            http("DELETE", f"{base}/control/outage")

    def data_files_requests(self) -> list[dict[str, Any]]:
        return list(http("GET", f"{self.endpoints.data_files_url}/_control/requests"))


class ExternalTarget(Target):
    """A cluster described by the ``MWA_E2E_*`` variables (see the module docstring)."""

    description = "external cluster"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ExternalTarget:
        env = os.environ if environ is None else environ
        missing = [name for name in REQUIRED if not env.get(name)]
        if missing:
            raise TargetError(
                f"{EXTERNAL} is set but {', '.join(missing)} is not"
                " (see tests/e2e/target.py for every variable)"
            )
        kubeconfig = env["MWA_E2E_KUBECONFIG"]
        if not os.path.isfile(kubeconfig):
            raise TargetError(f"MWA_E2E_KUBECONFIG={kubeconfig} is not a file")
        kubectl = env.get("MWA_E2E_KUBECTL") or shutil.which("kubectl")
        if not kubectl:
            built = build.kubectl_bin()
            if not built.exists():
                raise TargetError("no kubectl on PATH; set MWA_E2E_KUBECTL")
            kubectl = str(built)
        operator_url = env.get("MWA_E2E_OPERATOR_URL") or None
        return cls(
            Endpoints(
                kubeconfig=kubeconfig,
                callback_url=env["MWA_E2E_CALLBACK_URL"],
                callback_control_url=_base(env["MWA_E2E_CALLBACK_CONTROL_URL"], "/_control"),
                sim_control_url=_base(env["MWA_E2E_SIM_CONTROL_URL"], "/control"),
                data_files_url=_base(env["MWA_E2E_DATA_FILES_URL"], "/metadata/", "/_control"),
                result_username=env["MWA_E2E_RESULT_USERNAME"],
                operator_url=_base(operator_url) if operator_url else None,
                database_url=env.get("MWA_E2E_DATABASE_URL") or None,
                kubectl=kubectl,
            )
        )


class LocalTarget(Target):
    """The session's local stack; the tests that use it as a Target stay in their lane.

    ``fast_operator`` is the one place it uses process control: it replaces the
    stack's operator with one started with :data:`FAST_ENV` (same code, same env).
    """

    description = "local stack"

    def __init__(self, stack: Stack) -> None:
        env = stack.env
        super().__init__(
            Endpoints(
                kubeconfig=env["KUBECONFIG"],
                callback_url=env["CALLBACK_URL"],
                callback_control_url=_base(env["CALLBACK_URL"], "/callback"),
                sim_control_url=env["SIM_CONTROL_URL"],
                data_files_url=_base(env["DATA_FILES_URL"], "/metadata/"),
                result_username=env["RESULT_USERNAME"],
                database_url=env["DATABASE_URL"],
                kubectl=str(build.kubectl_bin()),
            )
        )
        self.stack = stack
        self._operator = "operator"

    @property
    def operator_url(self) -> str | None:
        try:
            component = self.stack.component(self._operator)
        except KeyError:
            return None  # a stack without the operator
        port = component.http_port(self.stack)  # type: ignore[attr-defined]
        return f"http://127.0.0.1:{port}"

    @property
    def skipped(self) -> dict[str, str]:
        return self.stack.skipped

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.stack.kubectl(*args, check=check)

    @contextmanager
    def fast_operator(self) -> Iterator[None]:
        start_fast_operator(self.stack)
        self._operator = OPERATOR
        try:
            yield
        finally:
            self._operator = "operator"
            restore_operator(self.stack)


def start_fast_operator(stack: Stack) -> None:
    """Replace the stack's operator by one with test-sized retries (same code, same env)."""
    if stack.is_running("operator"):
        stack.stop("operator")
    stack.spawn(OPERATOR, "operator", FAST_ENV)


def restore_operator(stack: Stack) -> None:
    stack.stop(OPERATOR)
    if "operator" in stack.services:
        stack.start("operator")


_local_targets: weakref.WeakKeyDictionary[Stack, LocalTarget] = weakref.WeakKeyDictionary()


def as_target(target: Target | Stack) -> Target:
    """``target`` itself, or the (one, cached) LocalTarget of a local stack.

    The helpers of tests/e2e/sj.py take either, so tests that need the local
    stack (``local_only``) can keep passing their ``stack``.
    """
    if isinstance(target, Target):
        return target
    if target not in _local_targets:
        _local_targets[target] = LocalTarget(target)
    return _local_targets[target]
