"""Smoke tests of the real components of the development stack.

Each test proves a part is the real program and can fail: TLS that is verified,
authentication that refuses, authorization that says 403 until a Role allows it,
a load balancer that spreads calls and survives a dead node. They share the
session stack (``tests/conftest.py``) and leave it as they found it.
"""

from __future__ import annotations

import json
import logging
import signal
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg2
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from devstack import build, procs
from devstack.components.sims import module_exists
from devstack.stack import Stack
from tests.helpers import wait_for

pytestmark = pytest.mark.stack

SIMS_PRESENT = all(
    module_exists(f"devstack.sim.{m}") for m in ("banksia", "scout_node", "data_files", "callback")
)
REQUIRED_ENV = [
    "KUBECONFIG",
    "DATABASE_URL",
    "KAFKA_BOOTSTRAP",
    "KAFKA_SASL_BOOTSTRAP",
    "KAFKA_CA",
    "KAFKA_USER",
    "KAFKA_PASSWORD",
    "KAFKA_TOPIC",
    "SCOUT_URL",
    "SCOUT_LOGIN_URL",
    "SCOUT_QUERY_URL",
    "SCOUT_STAGE_URL",
    "SCOUT_CANCEL_URL",
    "SCOUT_CACHESTATE_URL",
    "SCOUT_CA_FILE",
    "SCOUT_API_USER",
    "SCOUT_API_PASSWORD",
    "SIM_CONTROL_URL",
    "DATA_FILES_URL",
    "CALLBACK_URL",
    "CALLBACK_LOG",
    "RESULT_USERNAME",
    "RESULT_PASSWORD",
    "OPERATOR_HTTP_PORT",
    "BRIDGE_HTTP_PORT",
    "PATH",
]


# --------------------------------------------------------------------------- helpers


def admin_context(stack: Stack) -> ssl.SSLContext:
    """Verifies the API server with the stack CA and presents the admin certificate."""
    context = stack.tls_context()
    admin = stack.pki.issue(
        "admin", common_name="admin", organizations=("system:masters",), server=False, client=True
    )
    context.load_cert_chain(str(admin.cert), str(admin.key))
    return context


def api_url(stack: Stack) -> str:
    return f"https://127.0.0.1:{stack.port('kube-apiserver')}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- the launcher


def test_env_file_has_every_variable_and_puts_the_stack_kubectl_first(stack: Stack) -> None:
    env_file = stack.root / "env"
    text = env_file.read_text()
    for name in REQUIRED_ENV:
        assert f"export {name}=" in text, name
        assert stack.env[name]
    result = subprocess.run(
        [
            "bash",
            "-c",
            f". {env_file} && command -v kubectl helm && kubectl get ns default -o name",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    kubectl, helm, namespace = result.stdout.split()
    assert kubectl == str(build.kubectl_bin())
    assert helm == str(build.helm_bin())
    assert namespace == "namespace/default"


def test_up_again_is_idempotent(stack: Stack) -> None:
    pids = {name: pid for name, pid, _ in stack.status()}
    stack.up()
    assert {name: pid for name, pid, _ in stack.status()} == pids
    assert all(pid for name, pid in pids.items() if name not in stack.skipped)


def test_stop_frees_the_port_and_start_brings_it_back(stack: Stack) -> None:
    name = "data-files" if "data-files" not in stack.skipped else "postgres"
    port = stack.component(name).ports(stack)[0]
    stack.stop(name)
    assert not stack.is_running(name)
    assert not procs.ports_listening([port])
    stack.start(name)
    assert stack.is_running(name)
    assert procs.ports_listening([port]) == {port}


def test_spawn_runs_an_extra_instance_that_kill_and_stop_act_on(stack: Stack) -> None:
    if "data-files" in stack.skipped:
        pytest.skip("the data_files simulator does not exist yet")
    name = unique("data-files-extra")
    stack.spawn(name, "data-files", {"SMOKE_MARKER": "1"})
    try:
        port = stack.port(name)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert stack.log_path(name).exists()
        stack.kill(name)
        assert not stack.is_running(name)
        assert not procs.ports_listening([port])
        stack.start(name)
        assert stack.is_running(name)
    finally:
        stack.stop(name)
    assert not stack.is_running(name)


# --------------------------------------------------------------------------- kube-apiserver


def test_apiserver_is_ready_and_reports_the_pinned_version(stack: Stack) -> None:
    with httpx.Client(verify=admin_context(stack), timeout=10) as client:
        ready = client.get(api_url(stack) + "/readyz")
        assert ready.status_code == 200, ready.text
        version = client.get(api_url(stack) + "/version").json()
    assert version["gitVersion"] == build.k8s_version() == "v1.34.4"
    # TLS is real: a client that does not trust the stack CA is refused.
    with pytest.raises(httpx.ConnectError), httpx.Client(timeout=10) as client:
        client.get(api_url(stack) + "/readyz")


SMOKE_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.devstack.test
spec:
  group: smoke.devstack.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties: {size: {type: integer}}
            status:
              type: object
              properties: {phase: {type: string}}
"""


@pytest.fixture
def smoke_crd(stack: Stack) -> Iterator[str]:
    path = stack.root / "smoke-crd.yaml"
    path.write_text(SMOKE_CRD)
    stack.kubectl("apply", "-f", str(path))
    stack.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(path))
    yield "widgets.smoke.devstack.test"
    stack.kubectl("delete", "-f", str(path), "--wait=false")


def test_custom_resource_create_patch_status_and_list(stack: Stack, smoke_crd: str) -> None:
    name = unique("w")
    manifest = {
        "apiVersion": "smoke.devstack.test/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": 3},
        "status": {"phase": "ignored"},
    }
    path = stack.root / f"{name}.json"
    path.write_text(json.dumps(manifest))
    stack.kubectl("create", "-f", str(path))
    created = json.loads(stack.kubectl("get", smoke_crd, name, "-o", "json").stdout)
    assert "status" not in created  # the status subresource ignores status on create

    status_patch = json.dumps({"status": {"phase": "Ready"}})
    stack.kubectl(
        "patch", smoke_crd, name, "--subresource=status", "--type=merge", "-p", status_patch
    )
    # ...and a patch of the main resource cannot change status.
    main_patch = json.dumps({"spec": {"size": 4}, "status": {"phase": "Hacked"}})
    stack.kubectl("patch", smoke_crd, name, "--type=merge", "-p", main_patch)

    listed = json.loads(stack.kubectl("get", smoke_crd, "-o", "json").stdout)["items"]
    mine = [item for item in listed if item["metadata"]["name"] == name]
    assert len(mine) == 1
    assert mine[0]["spec"] == {"size": 4}
    assert mine[0]["status"] == {"phase": "Ready"}
    # Schema validation is real too.
    bad = json.dumps({"spec": {"size": "three"}})
    refused = stack.kubectl("patch", smoke_crd, name, "--type=merge", "-p", bad, check=False)
    assert refused.returncode != 0
    assert "Invalid value" in refused.stderr


def test_serviceaccount_is_forbidden_until_a_role_allows_it(stack: Stack) -> None:
    sa, role = unique("smoke-sa"), unique("read-configmaps")
    stack.kubectl("create", "serviceaccount", sa)
    try:
        token = stack.kubectl("create", "token", sa, "--duration=10m").stdout.strip()
        url = api_url(stack) + "/api/v1/namespaces/default/configmaps"
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(verify=stack.tls_context(), timeout=10) as client:
            refused = client.get(url, headers=headers)
            assert refused.status_code == 403, refused.text
            assert f"system:serviceaccount:default:{sa}" in refused.json()["message"]
            # A forged token is not even authenticated.
            forged = client.get(url, headers={"Authorization": f"Bearer {token[:-4]}AAAA"})
            assert forged.status_code == 401

            stack.kubectl("create", "role", role, "--verb=get,list", "--resource=configmaps")
            stack.kubectl(
                "create", "rolebinding", role, f"--role={role}", f"--serviceaccount=default:{sa}"
            )
            allowed = wait_for(
                lambda: client.get(url, headers=headers).status_code == 200,
                timeout=15,
                message="the RoleBinding to take effect",
            )
            assert allowed
            # Still only what the Role grants.
            secrets_url = api_url(stack) + "/api/v1/namespaces/default/secrets"
            assert client.get(secrets_url, headers=headers).status_code == 403
    finally:
        stack.kubectl("delete", "rolebinding,role", role, "--ignore-not-found")
        stack.kubectl("delete", "serviceaccount", sa, "--ignore-not-found")


# --------------------------------------------------------------------------- Kafka


# librdkafka logs every failed connection on stderr; the tests assert on errors instead.
QUIET = logging.getLogger("tests.kafka")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


def _sasl_config(stack: Stack, password: str | None = None) -> dict[str, Any]:
    return {
        "logger": QUIET,
        "bootstrap.servers": stack.env["KAFKA_SASL_BOOTSTRAP"],
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": stack.env["KAFKA_USER"],
        "sasl.password": password if password is not None else stack.env["KAFKA_PASSWORD"],
        "ssl.ca.location": stack.env["KAFKA_CA"],
    }


def _plain_config(stack: Stack) -> dict[str, Any]:
    return {"bootstrap.servers": stack.env["KAFKA_BOOTSTRAP"], "logger": QUIET}


def _roundtrip(config: dict[str, Any]) -> None:
    """Create a topic, produce one keyed message and consume it back in a group."""
    topic, key, value = unique("smoke"), uuid.uuid4().hex, uuid.uuid4().hex
    admin = AdminClient(config)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(30)
    producer = Producer(config)
    producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {**config, "group.id": unique("smoke-group"), "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    try:

        def received() -> bool:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                return False
            assert msg.key() == key.encode() and msg.value() == value.encode()
            return True

        wait_for(received, timeout=60, interval=0, message=f"the message on {topic}")
    finally:
        consumer.close()
    admin.delete_topics([topic])


def test_stack_topic_has_four_partitions(stack: Stack) -> None:
    metadata = AdminClient(_plain_config(stack)).list_topics(timeout=10)
    assert len(metadata.topics[stack.env["KAFKA_TOPIC"]].partitions) == 4


def test_kafka_produce_and_consume_on_the_plaintext_listener(stack: Stack) -> None:
    _roundtrip(_plain_config(stack))


def test_kafka_produce_and_consume_on_sasl_ssl_with_scram(stack: Stack) -> None:
    _roundtrip(_sasl_config(stack))


def test_kafka_refuses_a_wrong_scram_password(stack: Stack) -> None:
    errors: list[KafkaError] = []
    config: dict[str, Any] = {
        **_sasl_config(stack, password="wrong-" + uuid.uuid4().hex),
        "error_cb": errors.append,
    }
    producer = Producer(config)
    producer.produce("anything", value=b"x")
    wait_for(
        lambda: (
            producer.poll(0.2) is not None
            and any(e.code() == KafkaError._AUTHENTICATION for e in errors)
        ),
        timeout=30,
        interval=0,
        message="an authentication error",
    )
    producer.purge()


def test_kafka_sasl_ssl_verifies_the_broker_certificate(stack: Stack) -> None:
    errors: list[KafkaError] = []
    config = _sasl_config(stack)
    config.pop("ssl.ca.location")  # the system CAs do not know the stack CA
    config["error_cb"] = errors.append
    admin = AdminClient(config)
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    wait_for(
        lambda: (
            admin.poll(0.2) is not None
            and any(
                "certificate verify failed" in e.str() or e.code() == KafkaError._SSL
                for e in errors
            )
        ),
        timeout=20,
        interval=0,
        message="an SSL verification error",
    )


# --------------------------------------------------------------------------- PostgreSQL


def test_postgres_answers_through_database_url(stack: Stack) -> None:
    conn = psycopg2.connect(stack.env["DATABASE_URL"], connect_timeout=5)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT current_user, current_database(), current_setting('port')")
        user, database, port = cur.fetchone()
        cur.execute("CREATE TEMP TABLE smoke (n int)")
        cur.execute("INSERT INTO smoke SELECT generate_series(1, 10)")
        cur.execute("SELECT sum(n) FROM smoke")
        assert cur.fetchone() == (55,)
    conn.close()
    assert (user, database, int(port)) == ("mwa", "mwa_staging", stack.port("postgres"))
    wrong = stack.env["DATABASE_URL"].replace(stack.secret("postgres-password"), "wrong")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(wrong, connect_timeout=5)


# --------------------------------------------------------------------------- HAProxy


def _login(client: httpx.Client, stack: Stack) -> str:
    answer = client.post(
        stack.env["SCOUT_LOGIN_URL"],
        json={"acct": stack.env["SCOUT_API_USER"], "pass": stack.env["SCOUT_API_PASSWORD"]},
    )
    assert answer.status_code == 200, answer.text
    token = answer.json()["response"]
    assert isinstance(token, str)
    return token


def _nodes_called(stack: Stack, since: float) -> set[str]:
    calls = httpx.get(stack.env["SIM_CONTROL_URL"] + "/control/calls", timeout=10).json()
    return {str(c["node"]) for c in calls if c["path"] == "/v1/fscache" and c["time"] >= since}


@pytest.mark.skipif(not SIMS_PRESENT, reason="the simulator modules do not exist yet")
def test_haproxy_spreads_scout_calls_and_survives_a_dead_node(stack: Stack) -> None:
    import time

    nodes = stack.scout_names()
    with httpx.Client(verify=stack.tls_context(), timeout=10) as client:
        token = _login(client, stack)
        headers = {"Authorization": f"Bearer {token}"}
        since = time.time()
        for _ in range(3 * len(nodes)):
            assert client.get(stack.env["SCOUT_CACHESTATE_URL"], headers=headers).status_code == 200
        assert len(_nodes_called(stack, since)) == len(nodes)

        victim = nodes[1]
        stack.kill(victim, signal.SIGKILL)
        try:
            assert not stack.is_running(victim)
            since = time.time()
            # Right after the kill HAProxy still thinks the node is up: its retries and
            # redispatch must hide that from callers.
            for _ in range(6 * len(nodes)):
                answer = client.get(stack.env["SCOUT_CACHESTATE_URL"], headers=headers)
                assert answer.status_code == 200, answer.text
            assert len(_nodes_called(stack, since)) == len(nodes) - 1
        finally:
            stack.start(victim)
        # Back in rotation once HAProxy's checks see it again.
        wait_for(
            lambda: (
                client.get(stack.env["SCOUT_CACHESTATE_URL"], headers=headers).status_code == 200
                and len(_nodes_called(stack, time.time() - 1)) == len(nodes)
            ),
            timeout=20,
            interval=0.05,
            message=f"{victim} back behind HAProxy",
        )
