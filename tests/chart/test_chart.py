"""The Helm chart (charts/mwa-staging): lint, render, schema, secure defaults, RBAC,
the CRD, HAProxy's configuration and, on the local stack's real API server, install,
uninstall and what each ServiceAccount may do.

The rendering tests need only the pinned helm binary (``make build``); the tests
marked ``stack`` use the session's stack (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack import build, chart
from devstack.pki import PKI
from tests.helpers import wait_for

REPO = build.REPO_DIR
CHART = chart.CHART_DIR
CRD_FILE = REPO / "crds" / "stagingjobs.yaml"
CRD_COPY = CHART / "files" / "crds" / "stagingjobs.yaml"
CRD_NAME = "stagingjobs.staging.mwatelescope.org"
PRODUCTION = CHART / "values-production.yaml"
KIND = CHART / "ci" / "kind-values.yaml"
NODE = CHART / "ci" / "node-values.yaml"
HAPROXY = "/usr/sbin/haproxy"

# Every option that adds pods, containers or volumes, for the secure-defaults checks.
EVERYTHING_ON: dict[str, Any] = {
    "bridge": {"replicas": 3},
    "haproxy": {"tls": {"enabled": True, "existingSecret": "fe-tls"}},
    "scout": {
        "ca": {"existingSecret": "scout-ca"},
        "credentials": {"existingSecret": "scout"},
        "backendTls": {"enabled": True, "ca": {"existingSecret": "nodes-ca"}},
    },
    "kafka": {"ca": {"existingSecret": "kafka"}, "credentials": {"existingSecret": "kafka"}},
    "callback": {"ca": {"existingSecret": "cb-ca"}, "credentials": {"existingSecret": "cb"}},
    "metrics": {"serviceMonitor": {"enabled": True}},
    "gateway": {"enabled": True, "auth": {"tokens": {"existingSecret": "gw-tokens"}}},
}

# Distinct ports of every component, as the host network needs.
NODE_PORTS: dict[str, Any] = {
    "operator": {"httpPort": 18080},
    "bridge": {"httpPort": 18081},
    "gateway": {"enabled": True, "port": 18082, "auth": {"tokens": {"existingSecret": "t"}}},
    "haproxy": {"port": 18443, "monitor": {"port": 18404}},
    "postgresql": {"port": 15432},
}

RENDERINGS = {
    "default": {},
    "production": {"values_files": [PRODUCTION]},
    "kind": {"values_files": [KIND]},
    "everything": {"values": EVERYTHING_ON},
    "cluster-wide": {"values": {"rbac": {"clusterWide": True}}},
    "gateway-no-auth": {"values": {"gateway": {"enabled": True, "auth": {"enabled": False}}}},
    # As devstack.cluster installs it on the local node (its ports are picked free there).
    "node": {"values_files": [NODE], "values": NODE_PORTS},
}


def helm() -> str:
    """The pinned helm, or skip when it has not been built yet."""
    path = chart.helm_bin()
    if not path.exists():
        pytest.skip(f"helm is not built yet ({path}): run make build")
    return str(path)


def run_helm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm(), *args], capture_output=True, text=True, timeout=300, env=env, check=False
    )


def render(name: str) -> list[dict[str, Any]]:
    helm()
    spec = RENDERINGS[name]
    return chart.render(spec.get("values"), values_files=spec.get("values_files", ()))


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def container_env(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The first container's env entries of a rendered workload, by name."""
    return {e["name"]: e for e in workload["spec"]["template"]["spec"]["containers"][0]["env"]}


def by_name(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    matches = [d for d in of_kind(docs, kind) if d["metadata"]["name"].endswith(suffix)]
    assert len(matches) == 1, f"expected one {kind} named *{suffix}, got {matches}"
    return matches[0]


# ------------------------------------------------------------------ lint, render


@pytest.mark.parametrize("values_file", [None, PRODUCTION, KIND], ids=["default", "prod", "kind"])
def test_helm_lint(values_file: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)]
    if values_file:
        args += ["--values", str(values_file)]
    result = run_helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_template_renders_every_component(name: str) -> None:
    docs = render(name)
    kinds = {(d["kind"], d["metadata"]["name"].rsplit("-", 1)[-1]) for d in docs}
    for expected in [
        ("CustomResourceDefinition", "stagingjobs.staging.mwatelescope.org"),
        ("Deployment", "operator"),
        ("Deployment", "bridge"),
        ("Deployment", "haproxy"),
        ("Service", "haproxy"),
        ("ConfigMap", "haproxy"),
    ]:
        assert expected in {(k, n) for k, n in kinds} | {
            (d["kind"], d["metadata"]["name"]) for d in docs
        }, expected


def test_production_example() -> None:
    docs = render("production")
    assert not of_kind(docs, "StatefulSet"), "production uses no bundled PostgreSQL"
    config = by_name(docs, "ConfigMap", "haproxy")["data"]["haproxy.cfg"]
    servers = [
        line.split()[1] for line in config.splitlines() if line.strip().startswith("server ")
    ]
    assert servers == [f"vss-{i}" for i in range(1, 7)]
    bridge = by_name(docs, "Deployment", "bridge")
    env = container_env(bridge)
    assert env["KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mwa-staging-kafka"
    assert env["KAFKA_CA"]["value"].startswith("/etc/mwa-staging/")
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "mwa-staging-db"
    operator = by_name(docs, "Deployment", "operator")
    op_env = container_env(operator)
    assert op_env["SCOUT_URL"]["value"].startswith("https://")
    assert "SCOUT_CA_FILE" in op_env
    assert op_env["SCOUT_API_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mwa-staging-scout"


def test_restage_rate_reaches_the_operator() -> None:
    """The archive's file-status budget is a chart value, not only an env var."""
    default = by_name(render("default"), "Deployment", "operator")
    env = container_env(default)
    assert env["SCOUT_STATUS_RATE_PER_SECOND"]["value"] == "100"
    docs = chart.render({"scout": {"statusRatePerSecond": 2.5}})
    operator = by_name(docs, "Deployment", "operator")
    env = container_env(operator)
    assert env["SCOUT_STATUS_RATE_PER_SECOND"]["value"] == "2.5"
    refused = run_helm("template", "x", str(CHART), "--set", "scout.statusRatePerSecond=0")
    assert refused.returncode != 0 and "statusRatePerSecond" in refused.stderr, refused.stderr


def test_completion_writers_reach_the_bridge() -> None:
    default = by_name(render("default"), "Deployment", "bridge")
    env = container_env(default)
    assert env["BRIDGE_COMPLETION_WRITERS"]["value"] == "4"
    docs = chart.render({"bridge": {"completionWriters": 2}})
    bridge = by_name(docs, "Deployment", "bridge")
    env = container_env(bridge)
    assert env["BRIDGE_COMPLETION_WRITERS"]["value"] == "2"
    refused = run_helm("template", "x", str(CHART), "--set", "bridge.completionWriters=0")
    assert refused.returncode != 0 and "completionWriters" in refused.stderr, refused.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("operator.httpPrt=8080", "additional properties 'httpPrt' not allowed"),
        ("haproxy.timeouts.conect=4s", "additional properties 'conect' not allowed"),
        ("bridge.replicas=two", "/bridge/replicas"),
        ("rbac.clusterWide=maybe", "/rbac/clusterWide"),
    ],
)
def test_schema_refuses_misspelt_keys_and_wrong_types(setting: str, message: str) -> None:
    result = run_helm("template", "x", str(CHART), "--set", setting)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_schema_refuses_wrong_type_from_values_file(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("kafka:\n  topic: 7\n")
    result = run_helm("template", "x", str(CHART), "--values", str(values))
    assert result.returncode != 0
    assert "/kafka/topic" in result.stderr and "want string" in result.stderr, result.stderr


def test_every_env_var_is_a_setting() -> None:
    """A typo in an env var name would be silently ignored by pydantic-settings."""
    from mwa_staging.settings import Settings

    known = {name.upper() for name in Settings.model_fields} | {"WATCH_NAMESPACE"}
    for name in RENDERINGS:
        for doc in of_kind(render(name), "Deployment"):
            if doc["metadata"]["name"].endswith("haproxy"):
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                unknown = {e["name"] for e in container.get("env", [])} - known
                assert not unknown, f"{name}: {doc['metadata']['name']} sets unknown {unknown}"


# ------------------------------------------------------------------ workloads


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_every_pod_meets_the_secure_defaults(name: str) -> None:
    found = 0
    for workload, template in pod_specs(render(name)):
        found += 1
        spec = template["spec"]
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, workload
        assert pod_sc["runAsUser"] > 0, workload
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", workload
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        containers = spec["containers"] + spec.get("initContainers", [])
        for c in containers:
            where = f"{workload}/{c['name']}"
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            for side in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][side]), where
            assert c["livenessProbe"] and c["readinessProbe"], where
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounts.get("/tmp") in tmp_volumes, f"{where}: /tmp must be an emptyDir"
        if not workload.endswith("postgresql"):
            # Our processes and HAProxy: probes on /healthz, scraped by Prometheus.
            for c in spec["containers"]:
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", workload
                assert c["readinessProbe"]["httpGet"]["path"] == "/healthz", workload
            annotations = template["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true", workload
            assert annotations["prometheus.io/path"] == "/metrics", workload
    assert found >= 3


def test_operator_is_a_single_recreated_replica() -> None:
    for name in RENDERINGS:
        operator = by_name(render(name), "Deployment", "operator")
        assert operator["spec"]["replicas"] == 1
        assert operator["spec"]["strategy"] == {"type": "Recreate"}
        container = operator["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["mwa-staging-operator"]


def test_bridge_replicas_and_disruption_budget() -> None:
    docs = render("default")
    assert by_name(docs, "Deployment", "bridge")["spec"]["replicas"] == 1
    assert not [
        d for d in of_kind(docs, "PodDisruptionBudget") if "bridge" in d["metadata"]["name"]
    ]
    docs = render("everything")
    assert by_name(docs, "Deployment", "bridge")["spec"]["replicas"] == 3
    pdb = by_name(docs, "PodDisruptionBudget", "bridge")
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "bridge"
    container = by_name(docs, "Deployment", "bridge")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["mwa-kafka-bridge"]


def test_watch_namespace() -> None:
    def watch(values: dict[str, Any]) -> str:
        docs = chart.render(values, namespace="ops")
        env = by_name(docs, "Deployment", "operator")["spec"]["template"]["spec"]["containers"][0]
        return next(e["value"] for e in env["env"] if e["name"] == "WATCH_NAMESPACE")

    helm()
    assert watch({}) == "ops"
    assert watch({"watchNamespaces": ["a", "b"]}) == "a,b"
    assert watch({"watchNamespaces": ["a"], "rbac": {"clusterWide": True}}) == ""


def test_tls_ca_bundles_verification_and_callback_rules_from_values() -> None:
    """Each connection's CA bundle and verification switch, and the callback rules."""

    def container_env(values: dict[str, Any], suffix: str) -> tuple[dict[str, str], set[str]]:
        docs = chart.render(values)
        pod = by_name(docs, "Deployment", suffix)["spec"]["template"]["spec"]
        [container] = pod["containers"]
        env = {e["name"]: e.get("value", "") for e in container["env"]}
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        return env, mounts

    helm()
    env, _ = container_env({}, "operator")
    for name in ("SCOUT_TLS_VERIFY", "DATA_FILES_TLS_VERIFY", "CALLBACK_TLS_VERIFY"):
        assert env[name] == "true", name
    assert "SCOUT_CA_FILE" not in env and "DATA_FILES_CA_FILE" not in env
    assert json.loads(env["CALLBACK_ALLOWED_HOSTS"]) == []
    assert json.loads(env["CALLBACK_ALLOWED_NETWORKS"]) == []
    cas = {"ca": {"existingSecret": "some-ca"}}
    values = {
        "scout": {**cas, "tlsVerify": False},
        "dataFiles": {**cas, "tlsVerify": False},
        "callback": {
            **cas,
            "tlsVerify": False,
            "allowedHosts": ["asvo.example.org"],
            "allowedNetworks": ["10.0.0.0/8"],
        },
        "kafka": {**cas, "tlsVerify": False},
    }
    env, mounts = container_env(values, "operator")
    for name in ("SCOUT", "DATA_FILES", "CALLBACK"):
        assert env[f"{name}_TLS_VERIFY"] == "false"
        assert env[f"{name}_CA_FILE"].startswith("/etc/mwa-staging/")
        assert str(Path(env[f"{name}_CA_FILE"]).parent) in mounts, name
    assert json.loads(env["CALLBACK_ALLOWED_HOSTS"]) == ["asvo.example.org"]
    assert json.loads(env["CALLBACK_ALLOWED_NETWORKS"]) == ["10.0.0.0/8"]
    env, mounts = container_env(values, "bridge")
    assert env["KAFKA_TLS_VERIFY"] == "false" and env["KAFKA_CA"].startswith("/etc/mwa-staging/")
    assert str(Path(env["KAFKA_CA"]).parent) in mounts
    values_text = (chart.CHART_DIR / "values.yaml").read_text()
    assert "EMPTY MEANS ANY HOST" in values_text


# ------------------------------------------------------------------ RBAC


def rules(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in doc["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


OPERATOR_RULES = (
    {
        ("staging.mwatelescope.org", "stagingjobs", v)
        for v in ["get", "list", "watch", "patch", "update", "delete"]
    }
    | {("staging.mwatelescope.org", "stagingjobs/status", v) for v in ("get", "patch", "update")}
    | {(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")}
    | {("", "secrets", "get"), ("", "configmaps", "get")}
)
BRIDGE_RULES = {
    ("staging.mwatelescope.org", "stagingjobs", "get"),
    ("staging.mwatelescope.org", "stagingjobs", "list"),
    ("staging.mwatelescope.org", "stagingjobs/status", "get"),
    ("staging.mwatelescope.org", "stagingjobs/status", "patch"),
}


GATEWAY_RULES = {
    ("staging.mwatelescope.org", "stagingjobs", v) for v in ("create", "get", "list", "delete")
} | {("", "configmaps", "create")}
AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


def component_roles(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Roles of the components (the ClusterRoles aggregated into view/edit are users')."""
    return [
        d
        for d in of_kind(docs, kind)
        if not any(k.startswith(AGGREGATE) for k in (d["metadata"].get("labels") or {}))
    ]


@pytest.mark.parametrize(("name", "kind"), [("default", "Role"), ("cluster-wide", "ClusterRole")])
def test_rbac_least_privilege(name: str, kind: str) -> None:
    docs = render(name)
    other = "ClusterRole" if kind == "Role" else "Role"
    assert not component_roles(docs, other)
    assert rules(by_name(docs, kind, "-operator")) == OPERATOR_RULES
    bridge = rules(by_name(docs, kind, "-bridge"))
    assert bridge == BRIDGE_RULES
    assert not {verb for _, res, verb in bridge if res == "stagingjobs"} & {"create", "delete"}
    assert len(component_roles(docs, kind)) == 2, "HAProxy gets no role (nor the gateway: off)"
    binding = by_name(docs, kind + "Binding", "-bridge")
    assert binding["subjects"][0]["name"].endswith("-bridge")


def test_gateway_has_a_role_in_its_namespace_only() -> None:
    helm()
    values = {
        "gateway": {
            "enabled": True,
            "namespace": "asvo",
            "auth": {"tokens": {"existingSecret": "t"}},
        },
        "rbac": {"clusterWide": True},
    }
    docs = chart.render(values, namespace="ops")
    [role] = [d for d in of_kind(docs, "Role") if d["metadata"]["name"].endswith("-gateway")]
    assert role["metadata"]["namespace"] == "asvo"
    assert rules(role) == GATEWAY_RULES
    assert not [d for d in of_kind(docs, "ClusterRole") if "gateway" in d["metadata"]["name"]]
    binding = by_name(docs, "RoleBinding", "-gateway")
    subject = binding["subjects"][0]
    assert subject["name"].endswith("-gateway") and subject["namespace"] == "ops"
    # Namespaced mode: the operator serves the gateway's namespace too.
    docs = chart.render({**values, "rbac": {"clusterWide": False}}, namespace="ops")
    env = by_name(docs, "Deployment", "operator")["spec"]["template"]["spec"]["containers"][0]
    watched = next(e["value"] for e in env["env"] if e["name"] == "WATCH_NAMESPACE")
    assert watched == "ops,asvo"
    operator_roles = {
        d["metadata"]["namespace"]
        for d in of_kind(docs, "Role")
        if "operator" in d["metadata"]["name"]
    }
    assert operator_roles == {"ops", "asvo"}


def test_host_network_pods_bind_loopback_on_ports_of_their_own() -> None:
    """hostNetwork: every pod on it (the gateway too), listenAddress passed to each
    process's bind setting, one-at-a-time rolling updates, distinct ports enforced."""
    docs = render("node")
    workloads = {name: template["spec"] for name, template in pod_specs(docs)}
    assert {n.rsplit("-", 1)[-1] for n in workloads} == {
        "operator", "bridge", "gateway", "haproxy", "postgresql",
    }  # fmt: skip
    for name, spec in workloads.items():
        assert spec["hostNetwork"] is True, name
        assert spec["dnsPolicy"] == "ClusterFirstWithHostNet", name
    gateway = by_name(docs, "Deployment", "gateway")
    assert gateway["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    [container] = gateway["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["GATEWAY_HOST"], env["GATEWAY_PORT"]) == ("127.0.0.1", "18082")
    # Integers as integers (a large one once came out as "3.3554432e+07", refused at start).
    assert (env["GATEWAY_MAX_BODY_BYTES"], env["GATEWAY_MAX_FILES"]) == ("33554432", "100000")
    assert container["ports"][0]["containerPort"] == 18082
    for component in ("operator", "bridge"):
        spec = by_name(docs, "Deployment", component)["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert env["HTTP_BIND_ADDRESS"] == "127.0.0.1", component
    # Off the host network: surge first, bind every address.
    default = by_name(render("everything"), "Deployment", "gateway")
    assert default["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    env = {e["name"] for e in default["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "GATEWAY_HOST" not in env and "hostNetwork" not in default["spec"]["template"]["spec"]
    # Two components on one port of the node: refused, naming both.
    clash = run_helm(
        "template", "x", str(CHART), "--values", str(NODE),
        "--set", "gateway.enabled=true", "--set", "gateway.auth.enabled=false",
        "--set", "gateway.port=8081",
    )  # fmt: skip
    assert clash.returncode != 0
    assert "bridge.httpPort and gateway.port are both port 8081" in clash.stderr, clash.stderr


def test_gateway_replicas_and_disruption_budget() -> None:
    docs = render("everything")
    assert not [
        d for d in of_kind(docs, "PodDisruptionBudget") if "gateway" in d["metadata"]["name"]
    ]
    monitor = of_kind(docs, "ServiceMonitor")[0]["spec"]["selector"]["matchExpressions"][0]
    assert "gateway" in monitor["values"]
    docs = chart.render({**EVERYTHING_ON, "gateway": {**EVERYTHING_ON["gateway"], "replicas": 2}})
    assert by_name(docs, "Deployment", "gateway")["spec"]["replicas"] == 2
    pdb = by_name(docs, "PodDisruptionBudget", "gateway")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"


def test_gateway_authentication_from_a_secret_or_explicitly_off() -> None:
    docs = render("everything")
    gateway = by_name(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    [container] = gateway["containers"]
    assert container["command"] == ["mwa-staging-gateway"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GATEWAY_AUTH"] == "token"
    assert env["GATEWAY_TOKENS_FILE"] == "/etc/mwa-staging/gateway-tokens/tokens"
    [tokens] = [v for v in gateway["volumes"] if v["name"] == "gateway-tokens"]
    assert tokens["secret"]["secretName"] == "gw-tokens"
    assert by_name(docs, "Service", "gateway")["spec"]["ports"][0]["targetPort"] == "http"
    off = by_name(render("gateway-no-auth"), "Deployment", "gateway")["spec"]["template"]
    off_env = {e["name"]: e.get("value") for e in off["spec"]["containers"][0]["env"]}
    assert off_env["GATEWAY_AUTH"] == "none" and "GATEWAY_TOKENS_FILE" not in off_env
    refused = run_helm("template", "x", str(CHART), "--set", "gateway.enabled=true")
    assert refused.returncode != 0
    assert "gateway.auth.tokens.existingSecret is required" in refused.stderr


def test_aggregated_cluster_roles_for_viewers_and_editors() -> None:
    docs = render("default")
    view = by_name(docs, "ClusterRole", "-view")
    edit = by_name(docs, "ClusterRole", "-edit")
    assert {k for k in view["metadata"]["labels"] if k.startswith(AGGREGATE)} == {
        AGGREGATE + "view",
        AGGREGATE + "edit",
        AGGREGATE + "admin",
    }
    assert {k for k in edit["metadata"]["labels"] if k.startswith(AGGREGATE)} == {
        AGGREGATE + "edit",
        AGGREGATE + "admin",
    }
    assert rules(view) == {
        ("staging.mwatelescope.org", r, v)
        for r in ("stagingjobs", "stagingjobs/status")
        for v in ("get", "list", "watch")
    }
    assert rules(edit) == {
        ("staging.mwatelescope.org", "stagingjobs", v)
        for v in ("create", "delete", "deletecollection", "patch", "update")
    }
    helm()
    off = chart.render({"rbac": {"aggregateToDefaultRoles": False}})
    assert not of_kind(off, "ClusterRole")


def test_rbac_roles_in_each_watched_namespace() -> None:
    helm()
    docs = chart.render({"watchNamespaces": ["a", "b"]}, namespace="ops")
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in of_kind(docs, "Role")}
    assert {ns for ns, _ in roles} == {"a", "b"}
    for binding in of_kind(docs, "RoleBinding"):
        assert binding["subjects"][0]["namespace"] == "ops"


def test_each_component_has_its_own_service_account() -> None:
    docs = render("default")
    accounts = {d["metadata"]["name"]: d for d in of_kind(docs, "ServiceAccount")}
    used = {}
    for workload, template in pod_specs(docs):
        used[workload] = template["spec"]["serviceAccountName"]
        assert used[workload] in accounts
    assert len(set(used.values())) == len(used)
    haproxy = by_name(docs, "Deployment", "haproxy")["spec"]["template"]["spec"]
    assert haproxy["automountServiceAccountToken"] is False
    assert accounts[haproxy["serviceAccountName"]]["automountServiceAccountToken"] is False


# ------------------------------------------------------------------ CRD


def test_chart_crd_copy_is_the_repo_crd() -> None:
    assert CRD_COPY.read_bytes() == CRD_FILE.read_bytes(), "run make chart-crd"


def test_rendered_crd_equals_the_repo_crd() -> None:
    crd = by_name(render("default"), "CustomResourceDefinition", CRD_NAME)
    annotations = crd["metadata"].pop("annotations")
    assert annotations == {"helm.sh/resource-policy": "keep"}
    assert crd == yaml.safe_load(CRD_FILE.read_text())


def test_crd_can_be_left_out() -> None:
    helm()
    assert not of_kind(chart.render({"crds": {"enabled": False}}), "CustomResourceDefinition")
    crd = of_kind(chart.render({"crds": {"keep": False}}), "CustomResourceDefinition")[0]
    assert "annotations" not in crd["metadata"]


# ------------------------------------------------------------------ HAProxy


def throwaway_tls(directory: Path) -> tuple[Path, Path]:
    """A certificate from a throwaway CA: (frontend PEM with its key beside it, CA file)."""
    pki = PKI(directory / "pki")
    pki.ensure_ca()
    issued = pki.issue("frontend", common_name="haproxy.test")
    frontend = directory / "frontend.pem"
    shutil.copyfile(issued.cert, frontend)
    # The chart mounts tls.key as <certFile>.key: HAProxy loads it from there.
    shutil.copyfile(issued.key, directory / "frontend.pem.key")
    return frontend, pki.ca.cert


def haproxy_check(config: str, directory: Path) -> subprocess.CompletedProcess[str]:
    if not Path(HAPROXY).exists():
        pytest.skip("haproxy is not installed")
    path = directory / "haproxy.cfg"
    path.write_text(config)
    return subprocess.run(
        [HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_rendered_haproxy_cfg_is_valid(tmp_path: Path, tls: bool) -> None:
    helm()
    frontend, ca = throwaway_tls(tmp_path)
    config = chart.haproxy_config(
        bind="127.0.0.1:18080",
        monitor_bind="127.0.0.1:18404",
        nodes=[(f"vss-{i}", "127.0.0.1", 18080 + i) for i in range(1, 7)],
        cert_file=str(frontend) if tls else None,
        backend_ca_file=str(ca) if tls else None,
        stats_socket=str(tmp_path / "admin.sock"),
        check_interval="500ms",
    )
    result = haproxy_check(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr and "ALERT" not in result.stderr, result.stderr
    lines = [line.strip() for line in config.splitlines()]
    for directive in [
        "balance roundrobin",
        "retries 3",
        "option redispatch",
        "retry-on conn-failure empty-response",
        "timeout connect 4s",
        "timeout client 30s",
        "timeout server 30s",
        "option httpchk GET /v1/fscache",
        "http-check expect rstatus ^(200|401)$",
        "monitor-uri /healthz",
    ]:
        assert directive in lines, directive
    assert sum(line.startswith("server vss-") for line in lines) == 6
    if tls:
        assert f"bind 127.0.0.1:18080 ssl crt {frontend} alpn http/1.1" in lines
        assert any(f"ssl verify required ca-file {ca}" in line for line in lines)


@pytest.mark.parametrize("name", ["default", "production", "everything"])
def test_chart_haproxy_cfg_is_valid_as_deployed(tmp_path: Path, name: str) -> None:
    """The ConfigMap the cluster gets, with its paths pointed at throwaway files."""
    frontend, ca = throwaway_tls(tmp_path)
    config = by_name(render(name), "ConfigMap", "haproxy")["data"]["haproxy.cfg"]
    config = config.replace("/usr/local/etc/haproxy/tls/frontend.pem", str(frontend))
    config = config.replace("/usr/local/etc/haproxy/scout-ca/ca.crt", str(ca))
    result = haproxy_check(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ on the stack


@pytest.fixture(scope="module")
def chart_env(stack: Any) -> dict[str, str]:
    env = dict(os.environ)
    env.update(stack.env)
    return env


def kubectl(
    env: dict[str, str], *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("kubectl", path=env["PATH"]) or str(build.kubectl_bin())
    result = subprocess.run(
        [binary, *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result


@pytest.fixture(scope="module")
def release(chart_env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """The chart installed into a namespace of its own, without touching the CRD.

    The stack applied the CRD already (not through Helm), so this release leaves it
    out (crds.enabled=false); test_crd_lifecycle covers the CRD through Helm.
    """
    namespace = f"chart-{uuid.uuid4().hex[:8]}"
    name = "mwa"
    kubectl(chart_env, "create", "namespace", namespace)
    result = run_helm(
        "install",
        name,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "crds.enabled=false",
        "--set",
        "gateway.enabled=true",
        "--set",
        "gateway.auth.tokens.existingSecret=gateway-tokens",
        "--timeout",
        "120s",
        env=chart_env,
    )
    assert result.returncode == 0, result.stderr
    try:
        yield namespace, name
    finally:
        run_helm("uninstall", name, "--namespace", namespace, env=chart_env)
        kubectl(chart_env, "delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.stack
def test_helm_install_creates_every_component(
    chart_env: dict[str, str], release: tuple[str, str]
) -> None:
    namespace, name = release
    status = run_helm("status", name, "--namespace", namespace, env=chart_env)
    assert "STATUS: deployed" in status.stdout
    assert "get stagingjobs" in status.stdout, "NOTES.txt says what to do next"
    out = kubectl(
        chart_env,
        "-n",
        namespace,
        "get",
        "deployments,statefulsets,services,configmaps,serviceaccounts,roles,rolebindings",
        "-o",
        "name",
    ).stdout
    for expected in [
        f"deployment.apps/{name}-mwa-staging-operator",
        f"deployment.apps/{name}-mwa-staging-bridge",
        f"deployment.apps/{name}-mwa-staging-haproxy",
        f"statefulset.apps/{name}-mwa-staging-postgresql",
        f"service/{name}-mwa-staging-haproxy",
        f"configmap/{name}-mwa-staging-haproxy",
        f"role.rbac.authorization.k8s.io/{name}-mwa-staging-operator",
        f"role.rbac.authorization.k8s.io/{name}-mwa-staging-bridge",
        f"deployment.apps/{name}-mwa-staging-gateway",
        f"service/{name}-mwa-staging-gateway",
        f"role.rbac.authorization.k8s.io/{name}-mwa-staging-gateway",
    ]:
        assert expected in out.split(), expected


# (verb, resource, subresource, allowed) per ServiceAccount suffix.
CAN_I = {
    "operator": [
        ("get", "stagingjobs", "", True),
        ("watch", "stagingjobs", "", True),
        ("patch", "stagingjobs", "", True),
        ("delete", "stagingjobs", "", True),
        ("patch", "stagingjobs", "status", True),
        ("create", "events", "", True),
        ("create", "events.events.k8s.io", "", True),
        ("get", "secrets", "", True),
        ("get", "configmaps", "", True),
        ("create", "configmaps", "", False),
        ("create", "stagingjobs", "", False),
        ("list", "secrets", "", False),
        ("create", "pods", "", False),
        ("list", "namespaces", "", False),
        ("create", "customresourcedefinitions", "", False),
    ],
    "bridge": [
        ("get", "stagingjobs", "", True),
        ("list", "stagingjobs", "", True),
        ("patch", "stagingjobs", "status", True),
        ("create", "stagingjobs", "", False),
        ("delete", "stagingjobs", "", False),
        ("patch", "stagingjobs", "", False),
        ("update", "stagingjobs", "", False),
        ("get", "secrets", "", False),
        ("create", "events", "", False),
    ],
    "gateway": [
        ("create", "stagingjobs", "", True),
        ("get", "stagingjobs", "", True),
        ("list", "stagingjobs", "", True),
        ("delete", "stagingjobs", "", True),
        ("create", "configmaps", "", True),
        ("patch", "stagingjobs", "", False),
        ("update", "stagingjobs", "", False),
        ("patch", "stagingjobs", "status", False),
        ("get", "configmaps", "", False),
        ("delete", "configmaps", "", False),
        ("get", "secrets", "", False),
        ("create", "events", "", False),
        ("create", "pods", "", False),
    ],
    "haproxy": [
        ("get", "stagingjobs", "", False),
        ("get", "secrets", "", False),
        ("get", "configmaps", "", False),
    ],
}


@pytest.mark.stack
@pytest.mark.parametrize("component", list(CAN_I))
def test_service_accounts_can_do_only_what_they_need(
    chart_env: dict[str, str], release: tuple[str, str], component: str
) -> None:
    namespace, name = release
    account = f"system:serviceaccount:{namespace}:{name}-mwa-staging-{component}"
    wrong = []
    for verb, resource, subresource, allowed in CAN_I[component]:
        args = ["auth", "can-i", verb, resource, "--namespace", namespace, "--as", account]
        if subresource:
            args += ["--subresource", subresource]
        answer = kubectl(chart_env, *args, check=False).stdout.strip()
        if answer != ("yes" if allowed else "no"):
            wrong.append(f"{verb} {resource}/{subresource}: {answer}")
    # Namespaced mode: nothing outside the watched namespace.
    answer = kubectl(
        chart_env,
        "auth",
        "can-i",
        "get",
        "stagingjobs",
        "--namespace",
        "default",
        "--as",
        account,
        check=False,
    ).stdout.strip()
    if answer != "no":
        wrong.append(f"get stagingjobs in default: {answer}")
    assert not wrong, f"{component}: {wrong}"


@pytest.mark.stack
def test_service_account_token_works(
    chart_env: dict[str, str], release: tuple[str, str], tmp_path: Path
) -> None:
    """With a token of its ServiceAccount, the bridge reads StagingJobs, patches their
    status and can neither create nor delete one."""
    namespace, name = release
    job = {
        "apiVersion": "staging.mwatelescope.org/v1alpha1",
        "kind": "StagingJob",
        "metadata": {"name": "token-test"},
        "spec": {"jobId": 1, "files": ["a"], "callback": {"url": "http://127.0.0.1/cb"}},
    }
    kubectl(chart_env, "-n", namespace, "create", "-f", "-", stdin=yaml.safe_dump(job))
    token = kubectl(
        chart_env, "-n", namespace, "create", "token", f"{name}-mwa-staging-bridge"
    ).stdout.strip()
    config = chart.token_kubeconfig(
        Path(chart_env["KUBECONFIG"]), token, tmp_path / "bridge.kubeconfig", namespace
    )
    as_bridge = dict(chart_env, KUBECONFIG=str(config))
    try:
        who = kubectl(as_bridge, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
        assert who.stdout == f"system:serviceaccount:{namespace}:{name}-mwa-staging-bridge"
        assert kubectl(as_bridge, "get", "stagingjobs", "-o", "name").stdout.strip() == (
            "stagingjob.staging.mwatelescope.org/token-test"
        )
        patch = '{"status": {"phase": "Pending", "message": "patched by the bridge"}}'
        kubectl(
            as_bridge,
            "patch",
            "stagingjob",
            "token-test",
            "--subresource=status",
            "--type=merge",
            "-p",
            patch,
        )
        job["metadata"]["name"] = "refused"
        created = kubectl(as_bridge, "create", "-f", "-", stdin=yaml.safe_dump(job), check=False)
        assert created.returncode != 0 and "forbidden" in created.stderr, created.stderr
        deleted = kubectl(as_bridge, "delete", "stagingjob", "token-test", check=False)
        assert deleted.returncode != 0 and "forbidden" in deleted.stderr, deleted.stderr
    finally:
        kubectl(chart_env, "-n", namespace, "delete", "stagingjob", "token-test", check=False)


@pytest.mark.stack
def test_crd_lifecycle(chart_env: dict[str, str]) -> None:
    """Helm takes over the stack's CRD, keeps it Established, and uninstall leaves it.

    The CRD was applied by the stack (kubectl), so a plain install refuses it and
    says how to go on (crds.enabled=false, or adoption); an existing installation
    moves under Helm with --take-ownership and crds.takeOwnership. Its spec is the
    same file, so the shared CRD does not change; Helm's metadata is removed after.
    """
    namespace = f"chart-crd-{uuid.uuid4().hex[:8]}"
    name = "crd"
    kubectl(chart_env, "create", "namespace", namespace)
    before = kubectl(chart_env, "get", "crd", CRD_NAME, "-o", "jsonpath={.spec}").stdout
    common = [
        "--namespace",
        namespace,
        "--set",
        "haproxy.enabled=false",
        "--set",
        "scout.url=http://127.0.0.1:9",
        "--set",
        "postgresql.enabled=false",
        "--set",
        "database.existingSecret=none",
    ]
    try:
        refused = run_helm("install", name, str(CHART), *common, env=chart_env)
        assert refused.returncode != 0
        assert "no Helm release owns it" in refused.stderr, refused.stderr
        assert "crds.enabled=false" in refused.stderr, refused.stderr
        run_helm("uninstall", name, "--namespace", namespace, env=chart_env)

        taken = run_helm(
            "install", name, str(CHART), *common, "--take-ownership",
            "--set", "crds.takeOwnership=true", env=chart_env,
        )  # fmt: skip
        assert taken.returncode == 0, taken.stderr
        kubectl(
            chart_env, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}"
        )
        annotations = kubectl(
            chart_env, "get", "crd", CRD_NAME, "-o", "jsonpath={.metadata.annotations}"
        ).stdout
        assert "helm.sh/resource-policy" in annotations and namespace in annotations
        assert kubectl(chart_env, "get", "crd", CRD_NAME, "-o", "jsonpath={.spec}").stdout == before

        gone = run_helm("uninstall", name, "--namespace", namespace, env=chart_env)
        assert gone.returncode == 0, gone.stderr
        assert "kept due to the resource policy" in gone.stdout + gone.stderr
        kubectl(
            chart_env, "wait", "--for=condition=Established", "--timeout=10s", f"crd/{CRD_NAME}"
        )
    finally:
        run_helm("uninstall", name, "--namespace", namespace, env=chart_env)
        kubectl(
            chart_env,
            "annotate",
            "crd",
            CRD_NAME,
            "meta.helm.sh/release-name-",
            "meta.helm.sh/release-namespace-",
            "helm.sh/resource-policy-",
            check=False,
        )
        kubectl(chart_env, "label", "crd", CRD_NAME, "app.kubernetes.io/managed-by-", check=False)
        kubectl(chart_env, "delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.stack
def test_namespace_editors_and_viewers_through_the_aggregated_roles(
    chart_env: dict[str, str], release: tuple[str, str]
) -> None:
    """Bound to the default edit/view roles, users may create / only read StagingJobs.

    The aggregation itself is the controller manager's work (its ClusterRole
    aggregation controller); a stack without one cannot show it, and says so.
    """
    namespace, _ = release
    edit_rules = kubectl(
        chart_env, "get", "clusterrole", "edit", "-o", "jsonpath={.rules}"
    ).stdout.strip()
    if edit_rules in ("", "null", "[]"):
        pytest.skip("no ClusterRole aggregation here (no kube-controller-manager in this stack)")
    for user, role in (("alice", "edit"), ("bob", "view")):
        kubectl(
            chart_env, "-n", namespace, "create", "rolebinding", f"{user}-{role}",
            f"--clusterrole={role}", f"--user={user}",
        )  # fmt: skip

    def can(user: str, verb: str) -> str:
        return kubectl(
            chart_env, "auth", "can-i", verb, "stagingjobs.staging.mwatelescope.org",
            "-n", namespace, "--as", user, check=False,
        ).stdout.strip()  # fmt: skip

    wait_for(lambda: can("alice", "create") == "yes", timeout=30, message="aggregated edit")
    assert (can("alice", "create"), can("alice", "delete"), can("alice", "list")) == (
        "yes", "yes", "yes",
    )  # fmt: skip
    assert (can("bob", "get"), can("bob", "watch")) == ("yes", "yes")
    assert (can("bob", "create"), can("bob", "delete")) == ("no", "no")
