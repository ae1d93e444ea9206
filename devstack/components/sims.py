"""The simulators of what lives outside our control (``devstack.sim``).

Each is a command ``python -m devstack.sim.<module> --port P ...`` that answers
``GET /healthz`` with 200 once ready. A simulator whose module does not exist yet
is skipped with a warning, so the rest of the stack stays usable while it is being
written.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from devstack.components import http
from devstack.components.base import Component, python

if TYPE_CHECKING:
    from devstack.components.base import StackView as Stack


def module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class Simulator(Component):
    """A simulator on its own port (key ``port_key`` in ports.json)."""

    module = ""

    @property
    def port_key(self) -> str:
        return self.name

    def unavailable(self, stack: Stack) -> str | None:
        if not module_exists(self.module):
            return f"{self.module} does not exist yet"
        return None

    def port(self, stack: Stack) -> int:
        return stack.port(self.port_key)

    def args(self, stack: Stack) -> list[str]:
        return []

    def argv(self, stack: Stack) -> list[str]:
        return [python(), "-m", self.module, "--port", str(self.port(stack)), *self.args(stack)]

    def probe(self, stack: Stack) -> bool:
        return http.is_ok(f"http://127.0.0.1:{self.port(stack)}/healthz")

    def ports(self, stack: Stack) -> list[int]:
        return [self.port(stack)]


class Banksia(Simulator):
    """The archive's shared state, Kafka publisher and control endpoint."""

    kind = "banksia"
    module = "devstack.sim.banksia"

    def args(self, stack: Stack) -> list[str]:
        return [
            "--kafka-bootstrap",
            stack.env_value("KAFKA_BOOTSTRAP"),
            "--user",
            stack.env_value("SCOUT_API_USER"),
            "--password",
            stack.env_value("SCOUT_API_PASSWORD"),
        ]


class ScoutNode(Simulator):
    """One Scout API node (``scout-N``) forwarding to banksia's shared state."""

    kind = "scout"
    module = "devstack.sim.scout_node"

    def args(self, stack: Stack) -> list[str]:
        node_id = self.name.rsplit("-", 1)[-1]
        return ["--node-id", node_id, "--state-url", stack.env_value("SIM_CONTROL_URL")]


class DataFiles(Simulator):
    kind = "data-files"
    module = "devstack.sim.data_files"


class Callback(Simulator):
    kind = "callback"
    module = "devstack.sim.callback"

    def args(self, stack: Stack) -> list[str]:
        return [
            "--user",
            stack.env_value("RESULT_USERNAME"),
            "--password",
            stack.env_value("RESULT_PASSWORD"),
            "--log",
            stack.env_value("CALLBACK_LOG"),
        ]
