"""What every process kind of the stack provides to the launcher.

A component is one process (etcd, kube-apiserver, a Scout node...). The launcher
(:class:`devstack.stack.Stack`) owns the lifecycle; a component only says how to
prepare its files, what command to run, how to tell it is ready and what to do once
it is. Keeping each kind in its own small module keeps the launcher generic, and
lets the Helm chart issue reuse pieces (e.g. the HAProxy configuration) directly.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from devstack.pki import PKI


class StackView(Protocol):
    """What a component may ask of the launcher (:class:`devstack.stack.Stack` provides it).

    Components depend on this, the launcher on the components: the imports go
    one way. Component modules import it under the name ``Stack`` (to them it
    is the stack); a component that needs more of the launcher adds it here.
    """

    root: Path
    pki: PKI
    #: A stack with a node (kubelet, containerd, controller-manager, scheduler).
    node: bool
    #: Whether the API server applies crds/ when it starts (tests of the chart's CRD say no).
    apply_crds: bool
    #: PostgreSQL with fsync, synchronous_commit and full_page_writes on (benchmarks).
    durable_db: bool

    @property
    def kafka_user(self) -> str: ...

    def port(self, key: str) -> int: ...

    def secret(self, key: str, factory: Callable[[], str] = ...) -> str: ...

    def scout_names(self, *, running_only: bool = False) -> list[str]: ...

    def env_value(self, name: str) -> str: ...

    def service_env(self, kind: str) -> dict[str, str]: ...

    def tls_context(self) -> ssl.SSLContext: ...

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]: ...

    def log(self, message: str) -> None: ...


class Component:
    """One process of the stack. Subclasses override what differs."""

    kind: str = ""
    #: Seconds to wait for readiness after the start (JVMs and API servers are slow).
    ready_timeout: float = 30.0
    #: The graceful stop signal (postgres wants SIGINT: SIGTERM waits for clients).
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 20.0
    #: Run as this user (postgres refuses root); None: as the launcher's user.
    user: str | None = None

    def __init__(self, name: str, deps: tuple[str, ...] = ()) -> None:
        self.name = name
        self.deps = deps
        #: Extra variables on top of the launcher's environment (``Stack.spawn``).
        self.extra_env: dict[str, str] = {}

    def unavailable(self, stack: StackView) -> str | None:
        """Why this component cannot run here (it is then skipped), or None."""
        return None

    def prepare(self, stack: StackView) -> None:
        """Write config and data files; idempotent (runs before every start)."""

    def argv(self, stack: StackView) -> list[str]:
        raise NotImplementedError

    def env(self, stack: StackView) -> dict[str, str]:
        return {**inherited_env(), **self.extra_env}

    def cwd(self, stack: StackView) -> Path:
        return stack.root

    def probe(self, stack: StackView) -> bool:
        """One readiness check; exceptions count as "not ready yet"."""
        raise NotImplementedError

    def after_ready(self, stack: StackView) -> None:
        """Work that needs the running process (topics, databases, CRDs); idempotent."""

    def ports(self, stack: StackView) -> list[int]:
        """The TCP ports this component listens on (checked free after a stop)."""
        return []


#: Variables of a stack's env file and of the services' settings. They are not
#: inherited from the launcher's environment: after ``source .stack/env``, a test
#: stack's operator must not pick up the other stack's ``SCOUT_LOGIN_URL``.
STACK_VARIABLE_PREFIXES = (
    "KUBECONFIG",
    "DATABASE_URL",
    "DBUSER",
    "DBPASSWORD",
    "DBHOST",
    "DBNAME",
    "DBPORT",
    "KAFKA_",
    "SCOUT_",
    "SIM_",
    "DATA_FILES_URL",
    "CALLBACK_",
    "RESULT_",
    "OPERATOR_",
    "BRIDGE_",
    "JOB_EXPIRY_TIME",
    "FILE_RESTAGE_INTERVAL",
    "REPORT_EXPIREDAYS",
    "STACK_ROOT",
    "LOG_LEVEL",
)


def inherited_env() -> dict[str, str]:
    """The launcher's environment without any stack or service setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith(STACK_VARIABLE_PREFIXES)}


def python() -> str:
    """The interpreter running the launcher (the project's .venv under make)."""
    return sys.executable
