"""etcd: the API server's storage, one member on loopback ports, no fsync (throwaway)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from devstack import build
from devstack.components import http
from devstack.components.base import Component

if TYPE_CHECKING:
    from devstack.components.base import StackView as Stack


class Etcd(Component):
    kind = "etcd"

    def client_url(self, stack: Stack) -> str:
        return f"http://127.0.0.1:{stack.port('etcd-client')}"

    def argv(self, stack: Stack) -> list[str]:
        peer = f"http://127.0.0.1:{stack.port('etcd-peer')}"
        client = self.client_url(stack)
        return [
            str(build.etcd_bin()),
            "--name=devstack",
            f"--data-dir={stack.root / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=devstack={peer}",
            "--unsafe-no-fsync=true",
            "--quota-backend-bytes=2147483648",
            "--log-level=warn",
        ]

    def probe(self, stack: Stack) -> bool:
        return http.is_ok(self.client_url(stack) + "/health")

    def ports(self, stack: Stack) -> list[int]:
        return [stack.port("etcd-client"), stack.port("etcd-peer")]
