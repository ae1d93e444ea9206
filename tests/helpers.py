"""Test helpers shared by every test package.

Synchronisation in tests is always "poll a condition until a deadline", never a
bare sleep: a sleep is either too short on a loaded CI machine or wastes time on a
fast one, and when it fails it says nothing about what was awaited.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    Exceptions raised by the predicate count as "not yet"; the last one is chained
    to the ``AssertionError`` raised when ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
            last_exc = None
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(
                f"timed out after {timeout:.1f} s waiting for {message}{detail}"
            ) from last_exc
        time.sleep(interval)


def free_port() -> int:
    """A local port nothing listens on now (e.g. for a broker that is away)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
