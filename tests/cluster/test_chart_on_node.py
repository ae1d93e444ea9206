"""The Helm chart on a real node: pods from the images built here run and stage files.

Everything goes through the Kubernetes API (kubectl, helm) and the simulators'
HTTP endpoints; the operator, the bridge, the HTTP gateway, HAProxy and PostgreSQL
are the chart's pods. The tests share one release and run in file order: the later ones (upgrade,
uninstall and reinstall, other releases) change it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import pytest

from devstack import cluster as node_cluster
from devstack.cluster import SCOUT_SECRET
from devstack.stack import Stack
from tests.cluster.conftest import Release
from tests.e2e.sj import Jobs, new_job_id
from tests.e2e.target import as_target, http
from tests.gateway.client import Api
from tests.helpers import wait_for

CRD = "stagingjobs.staging.mwatelescope.org"
UID = {"operator": 10001, "bridge": 10001, "gateway": 10001, "haproxy": 99, "postgresql": 999}
FILES_WITH_ERRORS = [
    "mwa/1234567890/1234567890_ch001.fits",
    "mwa/1234567890/1234567890_ch002_ERROR.fits",
    "mwa/1234567890/1234567890_ch003.fits",
    "mwa/1234567890/1234567890_ch004_ERROR.fits",
    "mwa/1234567890/1234567890_ch005.fits",
]


def kubectl_json(stack: Stack, *args: str) -> Any:
    return json.loads(stack.kubectl(*args, "-o", "json").stdout)


def pods(stack: Stack, namespace: str, component: str | None = None) -> list[dict[str, Any]]:
    selector = ["-l", f"app.kubernetes.io/component={component}"] if component else []
    items = kubectl_json(stack, "get", "pods", "-n", namespace, *selector)["items"]
    return [p for p in items if p["metadata"].get("deletionTimestamp") is None]


def ready_pod(stack: Stack, namespace: str, component: str) -> dict[str, Any]:
    def one() -> dict[str, Any] | None:
        found = [
            p
            for p in pods(stack, namespace, component)
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        ]
        return found[0] if len(found) == 1 else None

    return wait_for(one, timeout=180, interval=0.5, message=f"one Ready {component} pod")


def exec_in(stack: Stack, namespace: str, pod: str, *command: str) -> str:
    return stack.kubectl("exec", "-n", namespace, pod, "--", *command).stdout


def set_archive(stack: Stack, delay_ms: int, jitter_ms: int) -> None:
    http(
        "POST",
        stack.env["SIM_CONTROL_URL"] + "/control/delay",
        {"delay_ms": delay_ms, "jitter_ms": jitter_ms},
    )


@pytest.fixture
def fast_archive(release: Release) -> Any:
    set_archive(release.stack, 30, 20)
    yield
    set_archive(release.stack, 30, 20)


def one_callback(stack: Stack, job_id: int, timeout: float = 120) -> dict[str, Any]:
    """The job's single delivered callback (fails if a second one arrives meanwhile)."""
    target = as_target(stack)
    entries = wait_for(
        lambda: target.callbacks(job_id), timeout=timeout, message=f"callback of job {job_id}"
    )
    assert len(entries) == 1, entries
    return dict(entries[0]["body"])


# --------------------------------------------------------------------------- install


def test_clean_cluster_release_owns_the_crd(release: Release) -> None:
    """On a cluster without the CRD, the first release installs it, kept on uninstall."""
    crd = kubectl_json(release.stack, "get", "crd", CRD)
    annotations = crd["metadata"]["annotations"]
    assert annotations["meta.helm.sh/release-name"] == release.name
    assert annotations["meta.helm.sh/release-namespace"] == release.namespace
    assert annotations["helm.sh/resource-policy"] == "keep"


def test_every_deployment_available_and_pods_ready(release: Release) -> None:
    stack, ns = release.stack, release.namespace
    for name in ("operator", "bridge", "gateway", "haproxy"):
        deploy = kubectl_json(stack, "get", "deployment", "-n", ns, f"mwa-staging-{name}")
        available = {c["type"]: c["status"] for c in deploy["status"].get("conditions", [])}
        assert available.get("Available") == "True", (name, deploy["status"])
    statefulset = kubectl_json(stack, "get", "statefulset", "-n", ns, "mwa-staging-postgresql")
    assert statefulset["status"].get("readyReplicas") == 1
    for pod in pods(stack, ns):
        for status in pod["status"]["containerStatuses"]:
            assert status["ready"] and status["restartCount"] == 0, status
            assert "running" in status["state"], status


@pytest.mark.parametrize("component", ["operator", "bridge", "gateway", "haproxy", "postgresql"])
def test_running_containers_are_confined(release: Release, component: str) -> None:
    """Seen from inside the running container: non-root uid, no new privileges, no
    capabilities, a read-only root filesystem; its kubelet probes pass."""
    stack, ns = release.stack, release.namespace
    pod = ready_pod(stack, ns, component)
    name = pod["metadata"]["name"]
    status = exec_in(stack, ns, name, "cat", "/proc/1/status")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    uid = UID[component]
    assert fields["Uid"].split() == [str(uid)] * 4, fields["Uid"]
    assert fields["Gid"].split()[0] == str(uid), fields["Gid"]
    assert fields["NoNewPrivs"].strip() == "1"
    assert int(fields["CapEff"].strip(), 16) == 0 and int(fields["CapBnd"].strip(), 16) == 0
    mounts = exec_in(stack, ns, name, "cat", "/proc/1/mounts").splitlines()
    root = [m.split() for m in mounts if m.split()[1] == "/"]
    assert root and "ro" in root[-1][3].split(","), root
    write = stack.kubectl("exec", "-n", ns, name, "--", "touch", "/probe-write", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr
    container = pod["spec"]["containers"][0]
    assert container["livenessProbe"] and container["readinessProbe"]
    assert pod["spec"]["hostNetwork"] is True


def test_operator_bridge_and_gateway_use_the_in_cluster_configuration(release: Release) -> None:
    """No kubeconfig in the pods: the projected ServiceAccount token and
    KUBERNETES_SERVICE_*; a client built the way the services build theirs works
    with only the chart's RBAC (and is refused what that RBAC does not grant: the
    gateway and the bridge may not even read a Secret of their own namespace)."""
    stack, ns = release.stack, release.namespace
    script = (
        "import base64, json, os\n"
        "from kubernetes import client\n"
        "from mwa_staging.kube import api_client\n"
        "assert 'KUBECONFIG' not in os.environ\n"
        "token = open('/var/run/secrets/kubernetes.io/serviceaccount/token').read()\n"
        "claims = json.loads(base64.urlsafe_b64decode(token.split('.')[1] + '=='))\n"
        "api = client.CustomObjectsApi(api_client(None))\n"
        "jobs = api.list_namespaced_custom_object(\n"
        f"    'staging.mwatelescope.org', 'v1alpha1', '{ns}', 'stagingjobs')\n"
        "try:\n"
        "    client.CoreV1Api(api_client(None)).list_namespaced_secret('kube-system')\n"
        "    denied = False\n"
        "except client.ApiException as exc:\n"
        "    denied = exc.status == 403\n"
        "try:\n"
        f"    client.CoreV1Api(api_client(None)).read_namespaced_secret('{SCOUT_SECRET}', '{ns}')\n"
        "    secret = True\n"
        "except client.ApiException as exc:\n"
        "    secret = exc.status != 403\n"
        "print(json.dumps({'sub': claims['sub'], 'host': os.environ['KUBERNETES_SERVICE_HOST'],\n"
        "                  'kind': jobs['kind'], 'denied': denied, 'secret': secret}))\n"
    )
    # Only the operator reads Secrets (a job's callback credentials), with get alone.
    for component, account, secret in (
        ("operator", "mwa-staging-operator", True),
        ("bridge", "mwa-staging-bridge", False),
        ("gateway", "mwa-staging-gateway", False),
    ):
        pod = ready_pod(stack, ns, component)
        assert pod["spec"]["serviceAccountName"] == account
        out = json.loads(exec_in(stack, ns, pod["metadata"]["name"], "python", "-c", script))
        assert out == {
            "sub": f"system:serviceaccount:{ns}:{account}",
            "host": "127.0.0.1",
            "kind": "StagingJobList",
            "denied": True,
            "secret": secret,
        }


# --------------------------------------------------------------------------- jobs


def outcome(status: dict[str, Any]) -> tuple[int, int, int, int]:
    """A job's return code and file counts (total, ready, error), compared as one."""
    return (
        status["returnCode"],
        status["totalFiles"],
        status["readyFiles"],
        status["errorFiles"],
    )


def haproxy_requests(stack: Stack, ns: str, path: str) -> int:
    pod = ready_pod(stack, ns, "haproxy")
    logs = stack.kubectl("logs", "-n", ns, pod["metadata"]["name"]).stdout
    return sum(1 for line in logs.splitlines() if f" {path}" in line)


def test_jobs_end_to_end_through_the_pods(release: Release, fast_archive: None) -> None:
    """A file list with ERROR files ends with code 5 and exact counts, an observation
    with code 0; one callback each; the stage calls went through the HAProxy pod."""
    stack, ns = release.stack, release.namespace
    jobs = Jobs(stack, ns)
    stages_before = haproxy_requests(stack, ns, "/v1/request/batchstage")
    files_id, obs_id = new_job_id(), new_job_id()
    jobs.create("files", files_id, files=FILES_WITH_ERRORS)
    jobs.create("obs", obs_id, observation={"obsId": 1234500012})
    status = jobs.wait_status("files", timeout=120, phase="Complete")
    assert outcome(status) == (5, 5, 3, 2)
    status = jobs.wait_status("obs", timeout=120, phase="Complete")
    assert outcome(status) == (0, 12, 12, 0)
    body = one_callback(stack, files_id)
    assert (body["return_code"], body["ready_files"], body["error_files"]) == (5, 3, 2)
    assert one_callback(stack, obs_id)["return_code"] == 0
    jobs.wait_delivered("files")
    jobs.wait_delivered("obs")
    assert haproxy_requests(stack, ns, "/v1/request/batchstage") >= stages_before + 2


def test_http_job_through_the_gateway_pod(release: Release, fast_archive: None) -> None:
    """The original API served by the chart's gateway pod, as the portal uses it:
    STAGING_API_URL and STAGING_API_TOKEN of the stack's env file; 401 without the
    token; a file list with ERROR files polled until completed, exact counts, one
    callback with the original's payload; an ordinary StagingJob in the release's
    namespace, staged through the HAProxy pod."""
    stack, ns = release.stack, release.namespace
    env = stack.env
    port = node_cluster.release_ports(stack, release.name)["gateway"]
    assert env["STAGING_API_URL"] == f"http://127.0.0.1:{port}"
    api = Api(env["STAGING_API_URL"], env["STAGING_API_TOKEN"])
    job_id = new_job_id()
    files = [f.replace("1234567890", str(job_id)) for f in FILES_WITH_ERRORS]
    body = {"job_id": job_id, "notify_url": env["CALLBACK_URL"], "files": files}

    refused = api.with_token(None).submit(body)
    assert refused.status == 401 and refused.body["errormsg"], refused.body
    assert api.with_token(None).status(job_id).status == 401
    assert api.status(job_id).status == 404, "a refused request created a job"

    stages_before = haproxy_requests(stack, ns, "/v1/request/batchstage")
    accepted = api.submit(body)
    assert (accepted.status, accepted.body) == (202, None)

    def completed() -> dict[str, Any] | None:
        answer = api.status(job_id)
        return answer.body if answer.status == 200 and answer.body["completed"] else None

    status = wait_for(completed, timeout=120, interval=0.5, message=f"job {job_id} completed")
    assert (status["total_files"], status["ready_files"], status["error_files"]) == (5, 3, 2)
    assert one_callback(stack, job_id) == {
        "job_id": job_id,
        "return_code": 5,
        "total_files": 5,
        "ready_files": 3,
        "error_files": 2,
        "comment": "3 staged, 2 failed",
    }
    job = kubectl_json(stack, "get", "stagingjob", "-n", ns, f"job-{job_id}")
    assert job["spec"]["jobId"] == job_id
    assert haproxy_requests(stack, ns, "/v1/request/batchstage") >= stages_before + 1


# --------------------------------------------------------------------------- failures


def test_operator_waits_for_its_database(release: Release) -> None:
    """An operator pod started while PostgreSQL is away waits (not Ready), never exits,
    and becomes Ready once the database is back: no restart, no crash loop."""
    stack, ns = release.stack, release.namespace
    statefulset = "statefulset/mwa-staging-postgresql"
    stack.kubectl("scale", "-n", ns, statefulset, "--replicas=0")
    try:
        wait_for(lambda: not pods(stack, ns, "postgresql"), timeout=120, message="no PostgreSQL")
        old = ready_pod(stack, ns, "operator")["metadata"]["uid"]
        stack.kubectl("delete", "pod", "-n", ns, "-l", "app.kubernetes.io/component=operator")

        def waiting() -> dict[str, Any] | None:
            for pod in pods(stack, ns, "operator"):
                statuses = pod["status"].get("containerStatuses") or []
                if pod["metadata"]["uid"] != old and statuses and "running" in statuses[0]["state"]:
                    return pod
            return None

        pod = wait_for(waiting, timeout=120, message="a new operator pod running")
        logs = wait_for(
            lambda: (
                "database is not reachable yet"
                in (out := stack.kubectl("logs", "-n", ns, pod["metadata"]["name"]).stdout)
                and out
            ),
            timeout=60,
            message="the operator waiting for its database",
        )
        assert logs
    finally:
        stack.kubectl("scale", "-n", ns, statefulset, "--replicas=1")
    ready = ready_pod(stack, ns, "operator")
    assert ready["metadata"]["uid"] == pod["metadata"]["uid"]
    assert ready["status"]["containerStatuses"][0]["restartCount"] == 0
    ready_pod(stack, ns, "postgresql")


def test_operator_pod_deleted_during_a_10000_file_job(release: Release, fast_archive: None) -> None:
    stack, ns = release.stack, release.namespace
    jobs = Jobs(stack, ns)
    set_archive(stack, 0, 30000)  # files land over about 30 s
    job_id = new_job_id()
    jobs.create("big-operator", job_id, observation={"obsId": 1234510000})
    wait_for(
        lambda: 0 < jobs.status("big-operator").get("readyFiles", 0) < 9000,
        timeout=120,
        interval=0.2,
        message="the 10,000-file job part way",
    )
    old = ready_pod(stack, ns, "operator")["metadata"]["uid"]
    start = time.monotonic()
    stack.kubectl(
        "delete", "pod", "-n", ns, "-l", "app.kubernetes.io/component=operator", "--wait=false"
    )
    new = wait_for(
        lambda: (p := ready_pod(stack, ns, "operator"))["metadata"]["uid"] != old and p,
        timeout=180,
        interval=0.2,
        message="a new operator pod Ready",
    )
    replaced = time.monotonic() - start
    status = jobs.wait_status("big-operator", timeout=240, phase="Complete")
    assert (status["returnCode"], status["totalFiles"], status["readyFiles"]) == (0, 10000, 10000)
    body = one_callback(stack, job_id)
    delivered = time.monotonic() - start
    assert body["ready_files"] == 10000
    print(
        f"\n[figure] operator pod deleted -> replacement Ready {replaced:.1f} s,"
        f" job's callback {delivered:.1f} s after the delete ({new['metadata']['name']})"
    )


def test_bridge_pod_deleted_during_a_burst(release: Release, fast_archive: None) -> None:
    stack, ns = release.stack, release.namespace
    jobs = Jobs(stack, ns)
    set_archive(stack, 0, 15000)
    ids = [new_job_id() for _ in range(2)]
    jobs.create("burst-a", ids[0], observation={"obsId": 1234506000})
    jobs.create("burst-b", ids[1], observation={"obsId": 1234504000})
    wait_for(
        lambda: 0 < jobs.status("burst-a").get("readyFiles", 0) < 5000,
        timeout=120,
        interval=0.1,
        message="the burst part way",
    )
    old = ready_pod(stack, ns, "bridge")["metadata"]["uid"]
    stack.kubectl(
        "delete", "pod", "-n", ns, "-l", "app.kubernetes.io/component=bridge", "--wait=false"
    )
    wait_for(
        lambda: ready_pod(stack, ns, "bridge")["metadata"]["uid"] != old,
        timeout=180,
        interval=0.5,
        message="a new bridge pod Ready",
    )
    for name, total, job_id in (("burst-a", 6000, ids[0]), ("burst-b", 4000, ids[1])):
        status = jobs.wait_status(name, timeout=240, phase="Complete")
        assert (status["returnCode"], status["totalFiles"], status["readyFiles"]) == (
            0,
            total,
            total,
        )
        assert status["errorFiles"] == 0
        assert one_callback(stack, job_id)["ready_files"] == total


# --------------------------------------------------------------------------- lifecycle


def pod_uids(stack: Stack, ns: str) -> set[str]:
    return {
        p["metadata"]["uid"] for p in pods(stack, ns) if "postgresql" not in p["metadata"]["name"]
    }


def test_helm_upgrade_rolls_the_pods_while_jobs_are_in_flight(
    release: Release, fast_archive: None
) -> None:
    stack, ns = release.stack, release.namespace
    jobs = Jobs(stack, ns)
    set_archive(stack, 0, 20000)
    ids = {f"upgrade-{i}": new_job_id() for i in range(3)}
    for index, (name, job_id) in enumerate(ids.items()):
        jobs.create(name, job_id, observation={"obsId": 1234502000 + index})
    wait_for(
        lambda: all(jobs.status(n).get("phase") == "Staging" for n in ids),
        timeout=60,
        message="the jobs staging",
    )
    before = pod_uids(stack, ns)
    values = release.values()
    # Changed values: the pod templates of the operator, the bridge and HAProxy change.
    values["logging"] = {"level": "DEBUG"}
    for component in ("operator", "bridge", "haproxy"):
        values.setdefault(component, {})["podAnnotations"] = {"test/upgrade": "1"}
    release.install(values=values)
    after = pod_uids(stack, ns)
    assert before.isdisjoint(after), "helm upgrade did not replace the pods"
    for name, job_id in ids.items():
        status = jobs.wait_status(name, timeout=240, phase="Complete")
        assert status["returnCode"] == 0 and status["readyFiles"] == status["totalFiles"]
        assert one_callback(stack, job_id)["return_code"] == 0


def test_uninstall_keeps_the_crd_and_jobs_and_a_reinstall_resumes(
    release: Release, fast_archive: None
) -> None:
    stack, ns = release.stack, release.namespace
    jobs = Jobs(stack, ns)
    set_archive(stack, 0, 20000)
    job_id = new_job_id()
    jobs.create("across-uninstall", job_id, observation={"obsId": 1234503000})
    wait_for(
        lambda: 0 < jobs.status("across-uninstall").get("readyFiles", 0) < 2500,
        timeout=60,
        interval=0.2,
        message="the job part way",
    )
    result = node_cluster.helm(stack, "uninstall", release.name, "-n", ns, "--wait")
    assert result.returncode == 0, result.stderr
    assert "kept due to the resource policy" in result.stdout + result.stderr
    wait_for(lambda: not pods(stack, ns), timeout=120, message="the release's pods gone")
    kubectl_json(stack, "get", "crd", CRD)  # still there
    assert jobs.get("across-uninstall") is not None
    assert not as_target(stack).callbacks(job_id)
    release.install()
    status = jobs.wait_status("across-uninstall", timeout=240, phase="Complete")
    assert (status["returnCode"], status["readyFiles"]) == (0, 3000)
    assert one_callback(stack, job_id)["ready_files"] == 3000


# --------------------------------------------------------------------------- the CRD's owner


def other_release(release: Release, name: str, *, crds_enabled: bool) -> tuple[str, dict[str, Any]]:
    namespace = f"{name}-{uuid.uuid4().hex[:6]}"
    values = node_cluster.release_values(
        release.stack, name, crds_enabled=crds_enabled, pinned=release.images
    )
    values["kafka"]["group"] = f"bridge-{namespace}"  # its own consumer group on the topic
    return namespace, values


def test_a_second_release_in_another_namespace(release: Release, fast_archive: None) -> None:
    stack = release.stack
    namespace, values = other_release(release, "second", crds_enabled=True)
    refused = node_cluster.install(
        stack, "second", namespace, values=values, wait=False, pinned=release.images
    )
    assert refused.returncode != 0
    assert f"belongs to release {release.namespace}/{release.name}" in refused.stderr, (
        refused.stderr
    )
    assert "crds.enabled=false" in refused.stderr
    values["crds"] = {"enabled": False}
    try:
        installed = node_cluster.install(
            stack, "second", namespace, values=values, pinned=release.images
        )
        assert installed.returncode == 0, installed.stderr
        node_cluster.wait_pods_ready(stack, namespace, timeout=180)
        jobs = Jobs(stack, namespace)
        job_id = new_job_id()
        jobs.create(
            "second",
            job_id,
            files=[f.replace("1234567890", "1234567891") for f in FILES_WITH_ERRORS],
        )
        status = jobs.wait_status("second", timeout=120, phase="Complete")
        assert (status["returnCode"], status["readyFiles"], status["errorFiles"]) == (5, 3, 2)
        assert one_callback(stack, job_id)["return_code"] == 5
        owner = kubectl_json(stack, "get", "crd", CRD)["metadata"]["annotations"]
        assert owner["meta.helm.sh/release-namespace"] == release.namespace
    finally:
        node_cluster.helm(stack, "uninstall", "second", "-n", namespace, "--wait")
        stack.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_a_crd_applied_with_kubectl_first(release: Release) -> None:
    """As after `make up` (kubectl apply of crds/): no release owns the CRD."""
    stack = release.stack
    stack.kubectl(
        "annotate", "crd", CRD, "meta.helm.sh/release-name-", "meta.helm.sh/release-namespace-"
    )
    stack.kubectl("label", "crd", CRD, "app.kubernetes.io/managed-by-")
    namespace, values = other_release(release, "third", crds_enabled=True)
    try:
        refused = node_cluster.install(
            stack, "third", namespace, values=values, wait=False, pinned=release.images
        )
        assert refused.returncode != 0
        assert re.search(r"no Helm release owns it.*crds\.enabled=false", refused.stderr), (
            refused.stderr
        )
        values["crds"] = {"enabled": False}
        installed = node_cluster.install(
            stack, "third", namespace, values=values, pinned=release.images
        )
        assert installed.returncode == 0, installed.stderr
        node_cluster.wait_pods_ready(stack, namespace, timeout=180)
    finally:
        node_cluster.helm(stack, "uninstall", "third", "-n", namespace, "--wait")
        stack.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_namespaces_finish_deleting(release: Release) -> None:
    """The controller-manager runs: a deleted namespace goes away (and its objects)."""
    stack = release.stack
    name = f"gone-{uuid.uuid4().hex[:6]}"
    stack.kubectl("create", "namespace", name)
    stack.kubectl("create", "configmap", "x", "-n", name)
    stack.kubectl("delete", "namespace", name, "--wait=false")
    wait_for(
        lambda: stack.kubectl("get", "namespace", name, check=False).returncode != 0,
        timeout=120,
        message=f"namespace {name} deleted",
    )
