"""Render the Helm chart (charts/mwa-staging) with the pinned helm binary.

The chart's ``files/haproxy.cfg.tpl`` is the one source of HAProxy's
configuration. :func:`haproxy_config` renders it with values for a process
outside Kubernetes (loopback node addresses, a bind address and port, a
certificate path), so the local stack can run exactly what the chart deploys.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from devstack import build

CHART_DIR = build.REPO_DIR / "charts" / "mwa-staging"


def helm_bin() -> Path:
    """The pinned helm binary (``make build`` builds it)."""
    return build.helm_bin()


def template(
    values: Mapping[str, Any] | None = None,
    *,
    values_files: Sequence[Path | str] = (),
    show_only: Sequence[str] = (),
    release: str = "mwa-staging",
    namespace: str = "mwa-staging",
    extra_args: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``helm template``; ``values`` are given as one JSON values file on stdin."""
    args = [str(helm_bin()), "template", release, str(CHART_DIR), "--namespace", namespace]
    for path in values_files:
        args += ["--values", str(path)]
    if values:
        args += ["--values", "-"]
    for name in show_only:
        args += ["--show-only", name]
    args += list(extra_args)
    return subprocess.run(
        args,
        input=json.dumps(dict(values or {})),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def render(values: Mapping[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """The rendered manifests as objects; raises with helm's message on failure."""
    result = template(values, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"helm template failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def haproxy_config(
    *,
    bind: str,
    nodes: Sequence[tuple[str, str, int]],
    monitor_bind: str,
    cert_file: str | None = None,
    stats_socket: str | None = None,
    check_interval: str = "5s",
    backend_ca_file: str | None = None,
) -> str:
    """haproxy.cfg as the chart renders it, for a local HAProxy.

    ``bind`` and ``monitor_bind`` are ``address:port``; ``nodes`` are
    ``(name, address, port)``; ``cert_file`` (a PEM with the certificate and key)
    turns TLS on at the front, ``backend_ca_file`` turns it on to the nodes.
    """
    address, _, port = bind.rpartition(":")
    monitor_address, _, monitor_port = monitor_bind.rpartition(":")
    haproxy: dict[str, Any] = {
        "bindAddress": address,
        "port": int(port),
        "monitor": {"bindAddress": monitor_address, "port": int(monitor_port)},
        "healthCheck": {"interval": check_interval},
        "statsSocket": stats_socket or "",
    }
    if cert_file:
        haproxy["tls"] = {"enabled": True, "existingSecret": "unused", "certFile": cert_file}
    scout: dict[str, Any] = {
        "nodes": [{"name": n, "address": a, "port": p} for n, a, p in nodes],
    }
    if backend_ca_file:
        scout["backendTls"] = {"enabled": True, "caFile": backend_ca_file}
    docs = render({"haproxy": haproxy, "scout": scout}, show_only=["templates/haproxy.yaml"])
    for doc in docs:
        if doc.get("kind") == "ConfigMap":
            return str(doc["data"]["haproxy.cfg"])
    raise RuntimeError("the chart rendered no HAProxy ConfigMap")


def token_kubeconfig(kubeconfig: Path, token: str, path: Path, namespace: str) -> Path:
    """Write a kubeconfig that authenticates with ``token`` only.

    It has the server and CA of ``kubeconfig`` (its current context) but none of
    its client credentials: the API server authenticates a client certificate
    before a bearer token, so ``kubectl --token`` with the admin kubeconfig would
    still act as admin. For running the operator or the bridge, or kubectl, as a
    chart ServiceAccount (``kubectl create token``).
    """
    config = yaml.safe_load(kubeconfig.read_text())
    context_name = config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    if "certificate-authority" in cluster:
        ca_path = Path(cluster["certificate-authority"])
        if not ca_path.is_absolute():
            cluster = dict(cluster, **{"certificate-authority": str(kubeconfig.parent / ca_path)})
    minimal = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": "token", "user": {"token": token}}],
        "contexts": [
            {
                "name": "token",
                "context": {"cluster": "cluster", "user": "token", "namespace": namespace},
            }
        ],
        "current-context": "token",
    }
    path.write_text(yaml.safe_dump(minimal))
    path.chmod(0o600)
    return path
