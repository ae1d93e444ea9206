"""Test helpers shared by every test package.

Synchronisation in tests is always "poll a condition until a deadline", never a
bare sleep: a sleep is either too short on a loaded CI machine or wastes time on a
fast one, and when it fails it says nothing about what was awaited.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from devstack.stack import Stack

T = TypeVar("T")


@contextlib.contextmanager
def stack_dir(request: pytest.FixtureRequest, name: str) -> Iterator[Path]:
    """A directory for a test stack, outside pytest's temporary tree.

    Run as root, PostgreSQL runs as the ``postgres`` user, so every ancestor of its
    data directory must be searchable by others; but pytest resets
    ``/tmp/pytest-of-<user>`` to mode 0700 whenever any pytest session starts, so a
    unit-test run started during ``make test`` took the stack's database away. The
    directory is removed afterwards when no test failed, and kept (and named on
    stderr) for inspection when one did.
    """
    root = Path(tempfile.mkdtemp(prefix=f"mwa-staging-test-{name}-"))
    root.chmod(0o711)
    raised = True  # the stack failed to start or stop: keep its logs
    try:
        yield root
        raised = False
    finally:
        if raised or request.session.testsfailed:
            print(f"\nkept the {name} stack's directory for inspection: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running_stack(request: pytest.FixtureRequest, name: str, **options: Any) -> Iterator[Stack]:
    """A stack (``Stack(root, **options)``) in a :func:`stack_dir`, up for the ``with`` block.

    It is stopped whatever happens (failure, Ctrl-C), and leaving the block fails if
    any process or port of the stack is left behind after ``down()``.
    """
    with stack_dir(request, name) as root:
        stack = Stack(root, **options)
        try:
            stack.up()
            yield stack
        finally:
            stack.down()
        left = stack.leftovers()
        assert not left, f"the {name} stack left these behind after down(): {left}"


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
