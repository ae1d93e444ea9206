"""kube-apiserver, started the way controller-runtime's envtest starts it.

TLS with the stack CA, an admin client certificate (``O=system:masters``) in
``root/kubeconfig``, RBAC authorization and a service-account token signer, so
tests can act as a ServiceAccount through ``kubectl create token``. Without the node mode
there is no scheduler, controller manager or kubelet: ServiceAccount admission is
disabled (nothing would create the default ServiceAccounts); with it
(``Stack(node=True)``, devstack.components.node) the Node authorizer, NodeRestriction
and ServiceAccount admission are on. The endpoint reconciler is off in both
(it would try to publish the loopback address, which Endpoints forbid).
After it is ready, the repo's CRDs (``crds/*.yaml``) are applied and awaited.
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from devstack import build, procs
from devstack.components import http
from devstack.components.base import Component

if TYPE_CHECKING:
    from devstack.components.base import StackView as Stack

CRDS_DIR = build.REPO_DIR / "crds"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


class KubeApiserver(Component):
    kind = "kube-apiserver"
    ready_timeout = 90.0

    def url(self, stack: Stack) -> str:
        return f"https://127.0.0.1:{stack.port('kube-apiserver')}"

    def prepare(self, stack: Stack) -> None:
        pki = stack.pki
        pki.ensure_ca()
        pki.issue("kube-apiserver", common_name="kube-apiserver")
        admin = pki.issue(
            "admin",
            common_name="admin",
            organizations=("system:masters",),
            server=False,
            client=True,
        )
        pki.service_account_key()
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "devstack",
                    "cluster": {
                        "server": self.url(stack),
                        "certificate-authority-data": _b64(pki.ca.cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": _b64(admin.cert),
                        "client-key-data": _b64(admin.key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "devstack",
                    "context": {"cluster": "devstack", "user": "admin", "namespace": "default"},
                }
            ],
            "current-context": "devstack",
        }
        path = stack.root / "kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
        path.chmod(0o600)

    def argv(self, stack: Stack) -> list[str]:
        pki = stack.pki
        serving = pki.issue("kube-apiserver", common_name="kube-apiserver")
        sa = pki.service_account_key()
        cert_dir = stack.root / "kube-apiserver"
        cert_dir.mkdir(exist_ok=True)
        if stack.node:
            # A kubelet registers: the Node authorizer and NodeRestriction confine it to
            # its own node and pods; ServiceAccount admission (the controller-manager
            # creates the default ServiceAccounts) gives pods projected tokens; the API
            # server reaches the kubelet (logs, exec) with a client certificate.
            kubelet_client = pki.issue(
                "kube-apiserver-kubelet-client",
                common_name="kube-apiserver-kubelet-client",
                organizations=("system:masters",),
                server=False,
                client=True,
            )
            mode = [
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={kubelet_client.cert}",
                f"--kubelet-client-key={kubelet_client.key}",
                f"--kubelet-certificate-authority={pki.ca.cert}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
            ]
        else:
            mode = ["--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount"]
        return [
            str(build.kube_apiserver_bin()),
            f"--etcd-servers=http://127.0.0.1:{stack.port('etcd-client')}",
            f"--cert-dir={cert_dir}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--secure-port={stack.port('kube-apiserver')}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            *mode,
            "--endpoint-reconciler-type=none",
            f"--service-account-issuer={self.url(stack)}",
            f"--service-account-key-file={sa.cert}",
            f"--service-account-signing-key-file={sa.key}",
        ]

    def ssl_context(self, stack: Stack) -> ssl.SSLContext:
        """Verifies the server with the stack CA and authenticates as the admin."""
        pki = stack.pki
        context = ssl.create_default_context(cafile=str(pki.ca.cert))
        admin = pki.issue(
            "admin",
            common_name="admin",
            organizations=("system:masters",),
            server=False,
            client=True,
        )
        context.load_cert_chain(str(admin.cert), str(admin.key))
        return context

    def probe(self, stack: Stack) -> bool:
        return http.is_ok(self.url(stack) + "/readyz", context=self.ssl_context(stack))

    def after_ready(self, stack: Stack) -> None:
        if not stack.apply_crds:
            return
        crds = sorted(CRDS_DIR.glob("*.yaml")) if CRDS_DIR.is_dir() else []
        if not crds:
            stack.log(f"no CRDs in {CRDS_DIR}: nothing to apply")
            return
        for crd in crds:
            _until_ok(stack, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
        for crd in crds:
            _until_ok(stack, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(crd))

    def ports(self, stack: Stack) -> list[int]:
        return [stack.port("kube-apiserver")]


def _until_ok(stack: Stack, *args: str, seconds: float = 60.0) -> None:
    """``kubectl args`` until it succeeds: right after /readyz the API server can still
    answer 429 "storage is (re)initializing" for a moment (seen as a rare failed start)."""
    last: list[str] = []

    def ok() -> bool:
        result = stack.kubectl(*args, check=False)
        last[:] = [result.stderr.strip()]
        return result.returncode == 0

    try:
        procs.wait_until(ok, timeout=seconds, what=f"kubectl {args[0]}", interval=0.5)
    except procs.ProcessError as exc:
        raise RuntimeError(f"{exc}: {''.join(last)}") from None
