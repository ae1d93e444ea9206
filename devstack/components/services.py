"""The project's own services, run from the working tree: the operator, the bridge and the
HTTP gateway.

They get their whole configuration from the environment (``Stack.service_env``),
the same variable names the Helm chart sets, and answer ``GET /healthz`` on their
HTTP port once ready. A service whose package has no ``__main__`` yet is skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from devstack.build import REPO_DIR
from devstack.components import http
from devstack.components.base import Component, python
from devstack.components.sims import module_exists

if TYPE_CHECKING:
    from devstack.components.base import StackView as Stack


class Service(Component):
    module = ""
    port_var = ""
    ready_timeout = 60.0

    def __init__(
        self, name: str, deps: tuple[str, ...] = (), extra_env: dict[str, str] | None = None
    ) -> None:
        super().__init__(name, deps)
        self.extra_env.update(extra_env or {})

    def unavailable(self, stack: Stack) -> str | None:
        if not module_exists(f"{self.module}.__main__"):
            return f"{self.module}.__main__ does not exist yet"
        return None

    def http_port(self, stack: Stack) -> int:
        if self.port_var in self.extra_env:
            return int(self.extra_env[self.port_var])
        return stack.port(f"{self.name}-http")

    def env(self, stack: Stack) -> dict[str, str]:
        env = super().env(stack)
        env.update(stack.service_env(self.kind))
        env[self.port_var] = str(self.http_port(stack))
        env.update(self.extra_env)
        return env

    def argv(self, stack: Stack) -> list[str]:
        return [python(), "-m", self.module]

    def cwd(self, stack: Stack) -> Path:
        return REPO_DIR

    def probe(self, stack: Stack) -> bool:
        return http.is_ok(f"http://127.0.0.1:{self.http_port(stack)}/healthz")

    def ports(self, stack: Stack) -> list[int]:
        return [self.http_port(stack)]


class Operator(Service):
    kind = "operator"
    module = "mwa_staging_operator"
    port_var = "OPERATOR_HTTP_PORT"


class KafkaBridge(Service):
    kind = "kafka-bridge"
    module = "kafka_bridge"
    port_var = "BRIDGE_HTTP_PORT"


class Gateway(Service):
    """The HTTP gateway (the original API), serving the stack's ``GATEWAY_NAMESPACE``."""

    kind = "gateway"
    module = "mwa_staging_gateway"
    port_var = "GATEWAY_PORT"

    def prepare(self, stack: Stack) -> None:
        namespace = stack.env_value("GATEWAY_NAMESPACE")
        if stack.kubectl("get", "namespace", namespace, check=False).returncode != 0:
            stack.kubectl("create", "namespace", namespace, check=False)
