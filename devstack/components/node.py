"""The node mode: containerd, a kubelet, kube-controller-manager and kube-scheduler.

With them beside the stack's kube-apiserver, the Helm chart's pods really run
(``make cluster``, ``tests/cluster``). Everything a node owns is under
``root/node/``:

* **containerd** (Debian's) with its own root, state, sockets and CNI directories.
  CRI settings this machine needs: ``restrict_oom_score_adj`` (the VM withholds
  CAP_SYS_RESOURCE, so runc cannot lower a container's oom_score_adj), no
  AppArmor, the local pause image as the sandbox image. The CNI "plugin" answers
  every call with an empty result: pods use the host network (the chart's
  ``hostNetwork``), no bridge, no pod address range; it exists because containerd
  reports the network not ready, and the kubelet the node NotReady, without one.
* **kubelet** registered as node ``127.0.0.1`` (``--hostname-override``, with a
  client certificate ``system:node:127.0.0.1``), so its InternalIP, and the pods'
  IPs, are loopback; serving on loopback with a certificate of the stack CA,
  webhook authentication and authorization; cgroupfs driver on cgroup v1, pods
  under a cgroup root of its own (``/mwa-staging-<id>``); no swap check, no
  iptables chains, no eviction, no image garbage collection (the images are
  imported, never pulled), oom_score_adj 0.
* **kube-controller-manager** with the service-account token controller
  (``--service-account-private-key-file``, ``--root-ca-file``, per-controller
  credentials) and **kube-scheduler**, both on the admin kubeconfig, no leader
  election, secure ports on loopback with stack-CA certificates.

Host-wide state the kubelet insists on, and how it is handled: the sysctls it
sets are recorded before the first node starts and restored when the last one
stops (``/run/mwa-staging/``); ``/var/lib/kubelet/device-plugins`` (a fixed path)
is bind-mounted from the node's directory in a mount namespace of the kubelet's
own, so two nodes (``make cluster`` and the test suite) never share it;
``/var/log/containers`` holds only per-container links (distinct names); the
rest (volume plugin dir, pod logs, certificates, root) is under ``root/node/``.
``make down`` (:func:`teardown`) stops every pod sandbox through the CRI, stops
the processes, unmounts what lies under the node's directory and removes its
cgroups.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import yaml

from devstack import build, host, images, procs
from devstack.components import http
from devstack.components.base import Component, inherited_env

if TYPE_CHECKING:
    from devstack.components.base import StackView as Stack

NODE_NAME = "127.0.0.1"
HOST_STATE = Path("/run/mwa-staging")
DEVICE_PLUGINS = Path("/var/lib/kubelet/device-plugins")
CONTAINER_LOGS = Path("/var/log/containers")
SHIM_SOCKETS = Path("/run/containerd/s")

CNI_PLUGIN = """#!/bin/sh
# A CNI plugin for host-network pods only: every call succeeds with an empty
# result (no interface, no address). Written by devstack (components/node.py).
read -r _ 2>/dev/null || true
case "$CNI_COMMAND" in
  VERSION) echo '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0"]}' ;;
  ADD) echo '{"cniVersion":"0.4.0","interfaces":[],"ips":[],"dns":{}}' ;;
  *) : ;;
esac
exit 0
"""


def node_dir(stack: Stack) -> Path:
    return stack.root / "node"


def node_id(stack: Stack) -> str:
    """A short name of this node, unique per stack root (cgroup root, host records)."""
    return hashlib.sha256(str(stack.root).encode()).hexdigest()[:10]


def cgroup_root(stack: Stack) -> str:
    return f"mwa-staging-{node_id(stack)}"


def containerd_socket(stack: Stack) -> Path:
    return node_dir(stack) / "run" / "containerd.sock"


def crictl_endpoint(stack: Stack) -> str:
    return f"unix://{containerd_socket(stack)}"


def _ctr(stack: Stack, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", "--address", str(containerd_socket(stack)), "--namespace", "k8s.io", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Containerd(Component):
    kind = "containerd"
    ready_timeout = 60.0

    def unavailable(self, stack: Stack) -> str | None:
        if not shutil.which("containerd") or not shutil.which("runc"):
            return "containerd or runc is not installed (make apt)"
        if not host.is_root():
            return "the node mode runs as root (containers, mounts, cgroups)"
        return None

    def prepare(self, stack: Stack) -> None:
        base = node_dir(stack)
        for sub in ("containerd", "run", "cni/bin", "cni/net.d", "opt"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        plugin = base / "cni" / "bin" / "host-only"
        plugin.write_text(CNI_PLUGIN)
        plugin.chmod(0o755)
        loopback = base / "cni" / "bin" / "loopback"  # containerd always adds a lo network
        loopback.write_text(CNI_PLUGIN)
        loopback.chmod(0o755)
        (base / "cni" / "net.d" / "10-host-only.conflist").write_text(
            json.dumps(
                {"cniVersion": "0.4.0", "name": "host-only", "plugins": [{"type": "host-only"}]}
            )
        )
        cri = "\n".join(
            [
                '[plugins."io.containerd.internal.v1.opt"]',
                f'  path = "{base / "opt"}"',
                '[plugins."io.containerd.grpc.v1.cri"]',
                f'  sandbox_image = "{images.image_set().pause.ref}"',
                "  restrict_oom_score_adj = true",
                "  disable_apparmor = true",
                "  enable_selinux = false",
                "  disable_tcp_service = true",
                '  stream_server_address = "127.0.0.1"',
                '  stream_server_port = "0"',
                "  max_container_log_line_size = 16384",
                '[plugins."io.containerd.grpc.v1.cri".containerd]',
                '  snapshotter = "overlayfs"',
                '  default_runtime_name = "runc"',
                '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
                '  runtime_type = "io.containerd.runc.v2"',
                '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
                "  SystemdCgroup = false",
                f'  Root = "{base / "run" / "runc"}"',
                '[plugins."io.containerd.grpc.v1.cri".cni]',
                f'  bin_dir = "{base / "cni" / "bin"}"',
                f'  conf_dir = "{base / "cni" / "net.d"}"',
            ]
        )
        (base / "containerd.toml").write_text(
            images.containerd_config(
                base / "containerd", base / "run" / "state", containerd_socket(stack), cri
            )
        )

    def argv(self, stack: Stack) -> list[str]:
        return [
            shutil.which("containerd") or "containerd",
            "--config",
            str(node_dir(stack) / "containerd.toml"),
        ]

    def probe(self, stack: Stack) -> bool:
        return _ctr(stack, "version", timeout=5).returncode == 0

    def after_ready(self, stack: Stack) -> None:
        import_images(stack)


def _normalized(ref: str) -> str:
    """The name containerd (and the kubelet) give an image reference without a registry."""
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/{ref}" if "/" in ref else f"docker.io/library/{ref}"


def import_images(stack: Stack, pinned: images.ImageSet | None = None) -> images.ImageSet:
    """Build what is missing (devstack.images) and import it into the node's containerd.

    The CRI plugin sees the ``k8s.io`` namespace only. Quick when nothing changed.
    ``pinned``: exactly these images (a test session keeps the set it started with,
    even if the working tree changes meanwhile).
    """
    wanted = images.ensure(pinned, only=["project", "haproxy", "postgresql", "pause"])
    present = _ctr(stack, "images", "list", "-q").stdout.split()
    for image in wanted.for_node():
        if _normalized(image.ref) in present:
            continue
        result = _ctr(stack, "images", "import", str(image.archive))
        if result.returncode != 0:
            raise RuntimeError(f"ctr images import {image.archive}: {result.stderr}")
        stack.log(f"imported {image.ref} into the node's containerd")
    return wanted


def _kubeconfig(stack: Stack, name: str, cert: Path, key: Path) -> Path:
    path = node_dir(stack) / f"{name}.kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "devstack",
                "cluster": {
                    "server": f"https://127.0.0.1:{stack.port('kube-apiserver')}",
                    "certificate-authority": str(stack.pki.ca.cert),
                },
            }
        ],
        "users": [
            {"name": name, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [{"name": name, "context": {"cluster": "devstack", "user": name}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


class Kubelet(Component):
    kind = "kubelet"
    ready_timeout = 120.0

    def unavailable(self, stack: Stack) -> str | None:
        if not build.kubelet_bin().exists():
            return "kubelet is not built (make build)"
        return None

    def prepare(self, stack: Stack) -> None:
        base = node_dir(stack) / "kubelet"
        for sub in ("root", "manifests", "pod-logs", "volume-plugins", "device-plugins", "pki"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        pki = stack.pki
        client = pki.issue(
            "kubelet-client",
            common_name=f"system:node:{NODE_NAME}",
            organizations=("system:nodes",),
            server=False,
            client=True,
        )
        serving = pki.issue("kubelet-serving", common_name=NODE_NAME)
        _kubeconfig(stack, "kubelet", client.cert, client.key)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": stack.port("kubelet"),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": stack.port("kubelet-healthz"),
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki.ca.cert)},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": "/" + cgroup_root(stack),
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": crictl_endpoint(stack),
            "makeIPTablesUtilChains": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "0%"},
            "staticPodPath": str(base / "manifests"),
            "podLogsDir": str(base / "pod-logs"),
            "volumePluginDir": str(base / "volume-plugins"),
            "oomScoreAdj": 0,
            "serializeImagePulls": False,
            "registerNode": True,
            "maxPods": 40,
            "resolvConf": "/etc/resolv.conf",
            "localStorageCapacityIsolation": True,
            "protectKernelDefaults": False,
            "syncFrequency": "10s",
            "fileCheckFrequency": "20s",
            "nodeStatusUpdateFrequency": "10s",
            "nodeStatusReportFrequency": "1m",
            "shutdownGracePeriod": "0s",
            "containerLogMaxSize": "10Mi",
            "containerLogMaxFiles": 2,
        }
        (base / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        self._host_setup(stack)

    def _host_setup(self, stack: Stack) -> None:
        """Record the host's sysctls (first node only) and make the node's cgroup root."""
        HOST_STATE.mkdir(parents=True, exist_ok=True)
        nodes = HOST_STATE / "nodes"
        nodes.mkdir(exist_ok=True)
        if not any(nodes.iterdir()):
            # No node runs: the current values are the machine's own.
            (HOST_STATE / "sysctls.json").unlink(missing_ok=True)
        host.save_sysctls(HOST_STATE / "sysctls.json")
        (nodes / node_id(stack)).write_text(str(stack.root) + "\n")
        host.create_cgroup(cgroup_root(stack))
        host.shared_bind(node_dir(stack) / "kubelet" / "root")
        DEVICE_PLUGINS.mkdir(parents=True, exist_ok=True)
        CONTAINER_LOGS.mkdir(parents=True, exist_ok=True)

    def argv(self, stack: Stack) -> list[str]:
        base = node_dir(stack) / "kubelet"
        kubelet = [
            str(build.kubelet_bin()),
            f"--config={base / 'config.yaml'}",
            f"--kubeconfig={node_dir(stack) / 'kubelet.kubeconfig'}",
            f"--root-dir={base / 'root'}",
            f"--cert-dir={base / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            "--oom-score-adj=0",
            "--v=1",
        ]
        # /var/lib/kubelet/device-plugins is a fixed path: give this kubelet its own
        # (a bind mount in a private mount namespace; the host's stays empty). The
        # root dir is made a shared mount first, so the volumes the kubelet mounts
        # under it (secrets, tokens, emptyDirs) propagate to the host, where runc
        # mounts them into the containers.
        script = (
            'set -e; mount --make-private "$(findmnt -n -o TARGET -T "$2")"; '
            'mount --bind "$1" "$2"; shift 2; exec "$@"'
        )
        return [
            "unshare",
            "--mount",
            "--propagation",
            "unchanged",
            "sh",
            "-c",
            script,
            "kubelet-ns",
            str(base / "device-plugins"),
            str(DEVICE_PLUGINS),
            *kubelet,
        ]

    def env(self, stack: Stack) -> dict[str, str]:
        return {**inherited_env(), **self.extra_env}

    def probe(self, stack: Stack) -> bool:
        if not http.is_ok(f"http://127.0.0.1:{stack.port('kubelet-healthz')}/healthz"):
            return False
        result = stack.kubectl(
            "get",
            "node",
            NODE_NAME,
            "-o",
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            check=False,
        )
        return result.stdout.strip() == "True"

    def ports(self, stack: Stack) -> list[int]:
        return [stack.port("kubelet"), stack.port("kubelet-healthz")]


class ControlPlaneComponent(Component):
    """kube-controller-manager or kube-scheduler: admin kubeconfig, secure port on loopback."""

    binary = ""
    ready_timeout = 60.0

    def unavailable(self, stack: Stack) -> str | None:
        if not (build.k8s_node_bin_dir() / self.binary).exists():
            return f"{self.binary} is not built (make build)"
        return None

    def common_args(self, stack: Stack) -> list[str]:
        serving = stack.pki.issue(self.kind, common_name=self.kind)
        kubeconfig = str(stack.root / "kubeconfig")
        return [
            str(build.k8s_node_bin_dir() / self.binary),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={stack.port(self.kind)}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            "--v=1",
        ]

    def probe(self, stack: Stack) -> bool:
        return http.is_ok(
            f"https://127.0.0.1:{stack.port(self.kind)}/healthz", context=stack.tls_context()
        )

    def ports(self, stack: Stack) -> list[int]:
        return [stack.port(self.kind)]


class ControllerManager(ControlPlaneComponent):
    kind = "kube-controller-manager"
    binary = "kube-controller-manager"

    def argv(self, stack: Stack) -> list[str]:
        pki = stack.pki
        return [
            *self.common_args(stack),
            f"--service-account-private-key-file={pki.service_account_key().key}",
            f"--root-ca-file={pki.ca.cert}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            # No Endpoints: pods have loopback addresses, which Endpoints refuse, and
            # there is no kube-proxy to use them.
            "--controllers=*,-node-ipam-controller,-node-route-controller,-service-lb-controller,"
            "-cloud-node-lifecycle-controller,-endpoints-controller,-endpointslice-controller,"
            "-endpointslice-mirroring-controller",
            "--concurrent-gc-syncs=5",
            "--node-monitor-grace-period=40s",
        ]

    def after_ready(self, stack: Stack) -> None:
        """Local storage for StatefulSets: a StorageClass and hostPath volumes under the node."""
        volumes = node_dir(stack) / "volumes"
        docs: list[dict[str, object]] = [
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": LOCAL_STORAGE_CLASS},
                "provisioner": "kubernetes.io/no-provisioner",
                "volumeBindingMode": "WaitForFirstConsumer",
                "reclaimPolicy": "Retain",
            }
        ]
        for index in range(LOCAL_VOLUMES):
            path = volumes / f"pv-{index}"
            path.mkdir(parents=True, exist_ok=True)
            # hostPath volumes get no fsGroup: owned by the stand-in PostgreSQL's uid.
            os.chown(path, POSTGRES_UID, POSTGRES_UID)
            path.chmod(0o700)
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": f"devstack-local-{index}"},
                    "spec": {
                        "capacity": {"storage": "10Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": LOCAL_STORAGE_CLASS,
                        "hostPath": {"path": str(path), "type": "Directory"},
                    },
                }
            )
        manifest = node_dir(stack) / "storage.yaml"
        manifest.write_text(yaml.safe_dump_all(docs))
        stack.kubectl("apply", "--server-side", "-f", str(manifest))


LOCAL_STORAGE_CLASS = "devstack-local"
POSTGRES_UID = 999
LOCAL_VOLUMES = 6


class Scheduler(ControlPlaneComponent):
    kind = "kube-scheduler"
    binary = "kube-scheduler"

    def argv(self, stack: Stack) -> list[str]:
        return self.common_args(stack)


# --------------------------------------------------------------------------- teardown


def stop_pods(stack: Stack) -> None:
    """Stop and remove every pod sandbox through the CRI (while containerd still runs)."""
    if procs.find(stack.root, "containerd") is None:
        return
    crictl = shutil.which("crictl")
    if crictl:
        subprocess.run(
            [crictl, "--runtime-endpoint", crictl_endpoint(stack), "rmp", "-af"],
            capture_output=True,
            check=False,
            timeout=120,
        )
        return
    # No crictl: the containerd task and container API does the same job.
    for _ in range(2):
        tasks = _ctr(stack, "tasks", "list", "-q").stdout.split()
        for task in tasks:
            _ctr(stack, "tasks", "kill", "-s", "SIGKILL", task, timeout=30)
        for task in tasks:
            _ctr(stack, "tasks", "delete", "-f", task, timeout=30)
        containers = _ctr(stack, "containers", "list", "-q").stdout.split()
        for container in containers:
            _ctr(stack, "containers", "delete", container, timeout=30)
        if not containers:
            break


def leftovers(stack: Stack) -> list[str]:
    """What of the node is still on the host (empty after a clean teardown)."""
    found = [f"mount {p}" for p in host.mounts_under(node_dir(stack))]
    if CONTAINER_LOGS.is_dir():
        found += [
            f"log link {link}"
            for link in CONTAINER_LOGS.iterdir()
            if link.is_symlink() and str(os.readlink(link)).startswith(f"{node_dir(stack)}/")
        ]
    for controller in host.cgroup_controllers():
        if (controller / cgroup_root(stack)).exists():
            found.append(f"cgroup {controller / cgroup_root(stack)}")
    marker = f"{node_dir(stack)}/"
    for proc in _shims():
        with contextlib.suppress(Exception):
            if marker in " ".join(proc.cmdline()):
                found.append(f"process {proc.pid} {proc.name()}")
    return found


def _shims() -> list[psutil.Process]:
    """containerd's shim processes (each keeps a pod's containers alive)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        if (proc.info["name"] or "").startswith("containerd-shim"):
            found.append(proc)
    return found


def teardown(stack: Stack) -> list[str]:
    """After the processes stopped: unmount, remove cgroups, restore the host; leftovers."""
    for proc in _shims():
        with contextlib.suppress(Exception):
            if f"{node_dir(stack)}/" in " ".join(proc.cmdline()):
                proc.kill()
    host.unmount_under(node_dir(stack))
    host.remove_cgroup(cgroup_root(stack))
    # The kubelet's per-container links in /var/log/containers point into the node.
    if CONTAINER_LOGS.is_dir():
        for link in CONTAINER_LOGS.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and str(os.readlink(link)).startswith(f"{node_dir(stack)}/"):
                    link.unlink()
    nodes = HOST_STATE / "nodes"
    (nodes / node_id(stack)).unlink(missing_ok=True)
    if nodes.is_dir() and not any(nodes.iterdir()):
        restored = host.restore_sysctls(HOST_STATE / "sysctls.json")
        if restored:
            stack.log(f"restored sysctls {restored}")
        host.remove_empty_dirs(
            nodes, HOST_STATE, DEVICE_PLUGINS, DEVICE_PLUGINS.parent, CONTAINER_LOGS
        )
    host.remove_empty_dirs(SHIM_SOCKETS, SHIM_SOCKETS.parent)
    return leftovers(stack)


def node_env(stack: Stack) -> dict[str, str]:
    """Variables of ``root/env`` for a stack with a node."""
    return {
        "CONTAINER_RUNTIME_ENDPOINT": crictl_endpoint(stack),
        "CONTAINERD_ADDRESS": str(containerd_socket(stack)),
        "CONTAINERD_NAMESPACE": "k8s.io",
    }
