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
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devstack.stack import Stack


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

    def unavailable(self, stack: Stack) -> str | None:
        """Why this component cannot run here (it is then skipped), or None."""
        return None

    def prepare(self, stack: Stack) -> None:
        """Write config and data files; idempotent (runs before every start)."""

    def argv(self, stack: Stack) -> list[str]:
        raise NotImplementedError

    def env(self, stack: Stack) -> dict[str, str]:
        return {**os.environ, **self.extra_env}

    def cwd(self, stack: Stack) -> Path:
        return stack.root

    def probe(self, stack: Stack) -> bool:
        """One readiness check; exceptions count as "not ready yet"."""
        raise NotImplementedError

    def after_ready(self, stack: Stack) -> None:
        """Work that needs the running process (topics, databases, CRDs); idempotent."""

    def ports(self, stack: Stack) -> list[int]:
        """The TCP ports this component listens on (checked free after a stop)."""
        return []


def python() -> str:
    """The interpreter running the launcher (the project's .venv under make)."""
    return sys.executable
