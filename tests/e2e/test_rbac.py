"""The chart's RBAC is enough: the operator and the bridge run on ServiceAccount tokens.

The chart is installed into a namespace of its own (namespaced mode, without the
CRD, which the stack applied). The stack's operator and bridge, which run with
the admin certificate, are stopped; an operator and a bridge are started from
the working tree with kubeconfigs holding only tokens of the chart's
ServiceAccounts (``kubectl create token``), and a job goes all the way to a
delivered callback. Any verb the chart forgot would stop it on the way.
``tests/chart`` checks the other half (``kubectl auth can-i``: what each
account may not do).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import build, chart
from devstack.stack import Stack
from tests.e2e import sj
from tests.gateway.client import Api
from tests.helpers import free_port, wait_for

# local_only: the test stops the stack's services and spawns its own.
pytestmark = [pytest.mark.stack, pytest.mark.local_only]

RELEASE = "rbac"


def _helm(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=stack.env["KUBECONFIG"], PATH=stack.env["PATH"])
    return subprocess.run(
        [str(build.helm_bin()), *args], env=env, capture_output=True, text=True, timeout=180
    )


@pytest.fixture(scope="module")
def namespace(stack: Stack) -> Iterator[str]:
    """A namespace with the chart installed in namespaced mode."""
    ns = f"rbac-{uuid.uuid4().hex[:8]}"
    stack.kubectl("create", "namespace", ns)
    installed = _helm(
        stack, "install", RELEASE, str(chart.CHART_DIR), "--namespace", ns,
        "--set", "crds.enabled=false", "--set", f"watchNamespaces={{{ns}}}",
        "--set", "gateway.enabled=true", "--set", "gateway.auth.tokens.existingSecret=gw",
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    try:
        yield ns
    finally:
        _helm(stack, "uninstall", RELEASE, "--namespace", ns)


def _token_kubeconfig(stack: Stack, ns: str, component: str, directory: Path) -> Path:
    account = f"{RELEASE}-mwa-staging-{component}"
    token = stack.kubectl("-n", ns, "create", "token", account, "--duration=1h").stdout.strip()
    return chart.token_kubeconfig(
        Path(stack.env["KUBECONFIG"]), token, directory / f"{component}.kubeconfig", ns
    )


@pytest.fixture
def services_as_service_accounts(stack: Stack, namespace: str, tmp_path: Path) -> Iterator[None]:
    """The operator and the bridge, each on its ServiceAccount's token only."""
    operator_config = _token_kubeconfig(stack, namespace, "operator", tmp_path)
    bridge_config = _token_kubeconfig(stack, namespace, "bridge", tmp_path)
    stack.stop("operator")
    stack.stop("kafka-bridge")
    try:
        stack.spawn(
            "operator-rbac",
            "operator",
            {**sj.FAST_ENV, "KUBECONFIG": str(operator_config), "WATCH_NAMESPACE": namespace},
        )
        stack.spawn("kafka-bridge-rbac", "kafka-bridge", {"KUBECONFIG": str(bridge_config)})
        yield
    finally:
        for name in ("operator-rbac", "kafka-bridge-rbac"):
            if stack.is_running(name):
                stack.stop(name)
        stack.start("operator")
        stack.start("kafka-bridge")


@pytest.mark.usefixtures("services_as_service_accounts")
def test_job_completes_with_the_charts_service_accounts(stack: Stack, namespace: str) -> None:
    jobs = sj.Jobs(stack, namespace)
    job_id = sj.new_job_id()
    tag = uuid.uuid4().hex[:8]
    paths = [f"mwa/rbac/{tag}/file_{i}.fits" for i in range(5)] + [f"mwa/rbac/{tag}/x_ERROR"]
    jobs.create("rbac-job", job_id, files=paths)

    status = jobs.wait_delivered("rbac-job", timeout=90)
    assert status["phase"] == "Complete"
    assert (status["readyFiles"], status["errorFiles"], status["returnCode"]) == (5, 1, 5)
    # The operator could post events with its token.
    assert jobs.events("rbac-job"), "no events were posted for the job"
    for log_name in ("operator-rbac", "kafka-bridge-rbac"):
        log = stack.log_path(log_name).read_text(errors="replace")
        assert "Forbidden" not in log and " 403" not in log, f"{log_name} was refused something"


@pytest.fixture
def gateway_as_service_account(
    stack: Stack, namespace: str, tmp_path: Path, services_as_service_accounts: None
) -> Iterator[Api]:
    """A gateway serving the chart's namespace on its ServiceAccount's token only."""
    config = _token_kubeconfig(stack, namespace, "gateway", tmp_path)
    port = free_port()
    stack.spawn(
        "gateway-rbac",
        "gateway",
        {"KUBECONFIG": str(config), "GATEWAY_NAMESPACE": namespace, "GATEWAY_PORT": str(port)},
    )
    try:
        yield Api(f"http://127.0.0.1:{port}", stack.env["STAGING_API_TOKEN"])
    finally:
        stack.stop("gateway-rbac")


def test_http_jobs_with_the_charts_service_accounts(
    stack: Stack, gateway_as_service_account: Api
) -> None:
    """The gateway's Role is enough for every endpoint, big lists included (ConfigMaps),
    and the operator's for reading those lists."""
    api = gateway_as_service_account
    url = stack.env["CALLBACK_URL"]
    small, big = sj.new_job_id(), sj.new_job_id()
    tag = uuid.uuid4().hex[:8]
    big_paths = [f"mwa/rbac/{tag}/big_{i:05d}.fits" for i in range(2500)]
    assert (
        api.submit({"job_id": small, "notify_url": url, "files": ["mwa/rbac/s.fits"]}).status == 202
    )
    assert api.submit({"job_id": big, "notify_url": url, "files": big_paths}).status == 202
    for job_id, total in ((small, 1), (big, 2500)):
        done = wait_for(
            lambda job_id=job_id: (
                (a := api.status(job_id)).status == 200 and a.body["completed"] and a.body
            ),
            timeout=90,
            message=f"job {job_id}",
        )
        assert done["ready_files"] == total
        [callback] = wait_for(lambda job_id=job_id: sj.callbacks(stack, job_id), timeout=60)
        assert callback["body"]["total_files"] == total
    assert api.call("GET", "/get_joblist").status == 200
    assert api.delete(small).status == 200 and api.status(small).status == 404
    log = stack.log_path("gateway-rbac").read_text(errors="replace")
    assert "Forbidden" not in log and "403" not in log, "the gateway was refused something"
