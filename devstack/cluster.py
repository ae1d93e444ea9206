"""The Helm chart installed on the stack's node: ``make cluster`` and tests/cluster.

A release runs the chart's own pods from the images built here
(devstack.images): the operator and the Kafka bridge from the project's image,
HAProxy and the bundled PostgreSQL from the local stand-ins. The simulators
(Scout nodes, data_files, the callback receiver) and Kafka stay processes of the
stack on loopback. The HTTP gateway runs as a pod too, with a token Secret holding
the stack's ``STAGING_API_TOKEN``; for release ``mwa-staging`` the stack's env
file points ``STAGING_API_URL`` at it. Pods use the host network (no pod network
here), so every component of a release gets ports of its own, picked free like the
stack's (``ports.json`` under ``<release>/...`` keys), and everything binds 127.0.0.1.

Values: ``charts/mwa-staging/ci/node-values.yaml`` (what every node release
shares: hostNetwork, pull policy Never, one replica each, loopback binds) plus
what :func:`release_values` derives from the stack (ports, image tags, the
simulators' addresses, the API server's loopback address for the in-cluster
configuration, Secrets of the stack's credentials).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from devstack import build, chart, images
from devstack.components.node import LOCAL_STORAGE_CLASS, import_images
from devstack.stack import NODE_RELEASE, Stack, StackError, release_port_key

RELEASE = NODE_RELEASE
NAMESPACE = "mwa-staging"
NODE_VALUES = chart.CHART_DIR / "ci" / "node-values.yaml"
COMPONENT_PORTS = ("operator", "bridge", "gateway", "haproxy", "haproxy-monitor", "postgresql")
#: Secret names a node release reads (created by :func:`ensure_secrets`).
SCOUT_SECRET = "devstack-scout"
CALLBACK_SECRET = "devstack-callback"
CA_SECRET = "devstack-ca"
HAPROXY_TLS_SECRET = "devstack-haproxy-tls"
GATEWAY_TOKENS_SECRET = "devstack-gateway-tokens"


def fullname(release: str) -> str:
    """The chart's resource name prefix for ``release`` (mwa-staging.fullname)."""
    return release if "mwa-staging" in release else f"{release}-mwa-staging"


def release_ports(stack: Stack, release: str) -> dict[str, int]:
    return {name: stack.port(release_port_key(release, name)) for name in COMPONENT_PORTS}


def release_values(
    stack: Stack,
    release: str,
    *,
    watch_namespaces: Sequence[str] = (),
    crds_enabled: bool = True,
    operator_env: Mapping[str, str] | None = None,
    pinned: images.ImageSet | None = None,
) -> dict[str, Any]:
    """The stack-specific values of a node release (on top of NODE_VALUES)."""
    ports = release_ports(stack, release)
    imgs = pinned or images.image_set()
    env = stack.env
    api = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(stack.port("kube-apiserver")),
    }

    def env_list(extra: Mapping[str, str]) -> list[dict[str, str]]:
        return [{"name": k, "value": v} for k, v in {**api, **extra}.items()]

    name = fullname(release)
    return {
        "crds": {"enabled": crds_enabled},
        "image": {"repository": imgs.project.repository, "tag": imgs.project.tag},
        "hostAliases": [
            {"ip": "127.0.0.1", "hostnames": [f"{name}-postgresql", f"{name}-haproxy"]}
        ],
        "watchNamespaces": list(watch_namespaces),
        "kafka": {"server": env["KAFKA_BOOTSTRAP"], "topic": env["KAFKA_TOPIC"]},
        "scout": {
            "url": f"https://127.0.0.1:{ports['haproxy']}",
            "credentials": {"existingSecret": SCOUT_SECRET},
            "ca": {"existingSecret": CA_SECRET},
            "nodes": [
                {"name": node, "address": "127.0.0.1", "port": stack.port(node)}
                for node in stack.scout_names()
            ],
        },
        "haproxy": {
            "port": ports["haproxy"],
            "monitor": {"port": ports["haproxy-monitor"]},
            "tls": {"enabled": True, "existingSecret": HAPROXY_TLS_SECRET},
            "image": {"repository": imgs.haproxy.repository, "tag": imgs.haproxy.tag},
        },
        "postgresql": {
            "port": ports["postgresql"],
            "image": {"repository": imgs.postgresql.repository, "tag": imgs.postgresql.tag},
            "persistence": {"enabled": True, "storageClass": LOCAL_STORAGE_CLASS, "size": "1Gi"},
        },
        "operator": {
            "httpPort": ports["operator"],
            "extraEnv": env_list(dict(operator_env or {})),
        },
        "bridge": {"httpPort": ports["bridge"], "extraEnv": env_list({})},
        "gateway": {
            "enabled": True,
            "port": ports["gateway"],
            "auth": {"tokens": {"existingSecret": GATEWAY_TOKENS_SECRET}},
            "extraEnv": env_list({}),
        },
        "dataFiles": {"url": env["DATA_FILES_URL"]},
        # The stack's callback receiver is on loopback, which callbacks may reach only
        # when allowed explicitly (mwa_staging.callback_policy).
        "callback": {
            "credentials": {"existingSecret": CALLBACK_SECRET},
            "allowedNetworks": ["127.0.0.0/8"],
        },
    }


def _secret(
    name: str, namespace: str, data: Mapping[str, str], kind: str = "Opaque"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": kind,
        "stringData": dict(data),
    }


def ensure_secrets(stack: Stack, namespace: str) -> None:
    """The namespace and the Secrets a node release reads, from the stack's credentials."""
    env = stack.env
    pki = stack.pki
    tls = pki.issue("haproxy-pod", common_name="127.0.0.1")
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        _secret(
            SCOUT_SECRET,
            namespace,
            {"username": env["SCOUT_API_USER"], "password": env["SCOUT_API_PASSWORD"]},
        ),
        _secret(
            CALLBACK_SECRET,
            namespace,
            {"username": env["RESULT_USERNAME"], "password": env["RESULT_PASSWORD"]},
        ),
        _secret(CA_SECRET, namespace, {"ca.crt": pki.ca.cert.read_text()}),
        _secret(GATEWAY_TOKENS_SECRET, namespace, {"tokens": env["STAGING_API_TOKEN"] + "\n"}),
        _secret(
            HAPROXY_TLS_SECRET,
            namespace,
            {
                "tls.crt": tls.cert.read_text() + pki.ca.cert.read_text(),
                "tls.key": tls.key.read_text(),
            },
            kind="kubernetes.io/tls",
        ),
    ]
    path = stack.root / "node" / f"secrets-{namespace}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs))
    path.chmod(0o600)
    stack.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))


def helm_env(stack: Stack) -> dict[str, str]:
    """helm with the stack's kubeconfig and its caches under the stack root."""
    base = stack.root / "helm"
    return dict(
        os.environ,
        KUBECONFIG=str(stack.root / "kubeconfig"),
        HELM_CACHE_HOME=str(base / "cache"),
        HELM_CONFIG_HOME=str(base / "config"),
        HELM_DATA_HOME=str(base / "data"),
    )


def helm(stack: Stack, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(build.helm_bin()), *args],
        env=helm_env(stack),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_values(stack: Stack, release: str, values: Mapping[str, Any]) -> Path:
    path = stack.root / "node" / f"values-{release}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values, indent=2))
    return path


def install(
    stack: Stack,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    *,
    values: Mapping[str, Any] | None = None,
    extra_args: Sequence[str] = (),
    wait: bool = True,
    timeout: str = "10m",
    pinned: images.ImageSet | None = None,
) -> subprocess.CompletedProcess[str]:
    """``helm upgrade --install`` a node release (images, namespace, Secrets and values first)."""
    import_images(stack, pinned)
    ensure_secrets(stack, namespace)
    path = write_values(
        stack, release, values if values is not None else release_values(stack, release)
    )
    args = ["upgrade", "--install", release, str(chart.CHART_DIR), "--namespace", namespace]
    args += ["--values", str(NODE_VALUES), "--values", str(path)]
    if wait:
        args += ["--wait", "--timeout", timeout]
    return helm(stack, *args, *extra_args)


def pods_ready(stack: Stack, namespace: str) -> tuple[bool, str]:
    """Whether every pod of the namespace is Ready (and a one-line summary)."""
    result = stack.kubectl("get", "pods", "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return False, result.stderr.strip()
    pods = json.loads(result.stdout)["items"]
    states = []
    ready = bool(pods)
    for pod in pods:
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        ok = conditions.get("Ready") == "True"
        ready = ready and ok and pod["metadata"].get("deletionTimestamp") is None
        states.append(f"{pod['metadata']['name']}={'Ready' if ok else pod['status'].get('phase')}")
    return ready, ", ".join(states)


def wait_pods_ready(stack: Stack, namespace: str, timeout: float = 300) -> float:
    """Wait until every pod of ``namespace`` is Ready; returns the seconds it took."""
    start = time.monotonic()
    summary = ""
    while time.monotonic() - start < timeout:
        ready, summary = pods_ready(stack, namespace)
        if ready:
            return time.monotonic() - start
        time.sleep(1)
    raise StackError(f"pods of {namespace} not Ready after {timeout:.0f} s: {summary}")


def main(argv: list[str] | None = None) -> int:
    """``make cluster``: the stack with a node, the chart installed, every pod Ready."""
    parser = argparse.ArgumentParser(prog="python -m devstack.cluster", description=main.__doc__)
    parser.add_argument("--root", type=Path, default=build.REPO_DIR / ".stack")
    args = parser.parse_args(argv)
    stack = Stack(args.root, node=True)
    try:
        stack.up()
        # Jobs from `kubectl apply -f examples/` land in the kubeconfig's namespace.
        # The stack applied the CRD (kubectl, as `make up` does): the release does not own it.
        values = release_values(
            stack, RELEASE, watch_namespaces=[NAMESPACE, "default"], crds_enabled=False
        )
        start = time.monotonic()
        result = install(stack, values=values)
        if result.returncode != 0:
            raise StackError(f"helm upgrade --install {RELEASE} failed:\n{result.stderr}")
        waited = wait_pods_ready(stack, NAMESPACE)
        stack.log(
            f"release {RELEASE} in namespace {NAMESPACE}: every pod Ready"
            f" {time.monotonic() - start:.1f} s after helm upgrade --install"
            f" ({waited:.1f} s after helm returned)"
        )
    except StackError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        print(
            f"devstack: logs are in {stack.root / 'logs'}; stop with `make down`", file=sys.stderr
        )
        return 1
    stack.write_env()
    print(stack.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide").stdout)
    print(
        f"Use it:  source {stack.root / 'env'}  (then kubectl apply -f examples/ ...);"
        " stop with make down"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
