"""Start, find and stop the stack's processes: detached, with pid files and logs.

Choice of library: process *inspection* uses psutil (pid reuse checks, waiting for
a process that is not our child, listing listening sockets); process *start* and
*stop* are the few lines below rather than mirakuru. mirakuru's executors are
meant to live inside one Python process: it registers an ``atexit`` hook that
kills every process it started, and it keeps its state in memory. ``make up`` has
to return while the stack keeps running, and ``make down``/``status`` run in
other interpreters that only have the pid files. So processes are started with
``subprocess.Popen(start_new_session=True)`` (their own session and process group,
so a terminal's Ctrl-C or the launcher's exit does not reach them), and their
identity is recorded as a pid file plus a marker variable in their environment
(``DEVSTACK_PROCESS=<root>/<name>``), which psutil reads back to tell our process
from an unrelated one that reused the pid.

Stopping sends the component's graceful signal to the process, waits until it is
gone (a deadline, then SIGKILL), then kills whatever is left in its process group
(postgres backends, HAProxy workers), so no port stays bound.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

MARKER = "DEVSTACK_PROCESS"


class ProcessError(RuntimeError):
    """A process of the stack failed to start, to become ready or to stop."""


def marker_value(root: Path, name: str) -> str:
    return f"{root}/{name}"


def pid_file(root: Path, name: str) -> Path:
    return root / "pids" / f"{name}.pid"


def log_file(root: Path, name: str) -> Path:
    return root / "logs" / f"{name}.log"


# Popen objects of processes started by this interpreter, so they are reaped when
# they die (a zombie would otherwise look alive until the test session ends).
_children: dict[int, subprocess.Popen[bytes]] = {}


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)


def find(root: Path, name: str) -> psutil.Process | None:
    """The live process of ``name`` in this stack, or None (stale pid files are ignored)."""
    path = pid_file(root, name)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    _reap(pid)
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if _environ(proc).get(MARKER) != marker_value(root, name):
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return proc


def _environ(proc: psutil.Process) -> dict[str, str]:
    """The process environment; empty for a moment while it is in ``execve``, so retry."""
    for _ in range(40):
        env = proc.environ()
        if env:
            return env
        time.sleep(0.025)
    return {}


def drop_privileges(user: str | None) -> dict[str, Any]:
    """Popen arguments to run as ``user`` with its own group and no supplementary ones.

    Keeping root's group would make directories of group root deny access even
    where ``other`` may search them (the group class is checked before ``other``).
    """
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def start(
    root: Path,
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    user: str | None = None,
) -> int:
    """Start ``argv`` detached; stdout and stderr are appended to ``logs/<name>.log``."""
    log_path = log_file(root, name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_file(root, name).parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(env)
    full_env[MARKER] = marker_value(root, name)
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}\n".encode())
        log.flush()
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            **drop_privileges(user),
        )
    _children[child.pid] = child
    pid_file(root, name).write_text(f"{child.pid}\n")
    return child.pid


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop(
    root: Path,
    name: str,
    *,
    sig: int = signal.SIGTERM,
    timeout: float = 20.0,
) -> None:
    """Stop ``name`` and wait until it and its process group are gone."""
    proc = find(root, name)
    if proc is not None:
        pgid = proc.pid  # started with start_new_session: it leads its own group
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)
        _wait_gone(proc, timeout)
        if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
            _wait_gone(proc, 10.0)
        _signal_group(pgid, signal.SIGKILL)
        _wait_group_gone(pgid, 10.0)
        _reap(proc.pid)
    pid_file(root, name).unlink(missing_ok=True)


def kill(root: Path, name: str, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process (no waiting, no cleanup: tests use it to simulate crashes).

    For SIGKILL the rest of the process group is killed as well, like a crashed pod.
    """
    proc = find(root, name)
    if proc is None:
        raise ProcessError(f"{name} is not running")
    proc.send_signal(sig)
    if sig == signal.SIGKILL:
        _signal_group(proc.pid, signal.SIGKILL)
        _wait_gone(proc, 10.0)


def _wait_gone(proc: psutil.Process, timeout: float) -> None:
    with contextlib.suppress(psutil.TimeoutExpired, psutil.NoSuchProcess):
        proc.wait(timeout)
    _reap(proc.pid)


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return members


def _wait_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)


def wait_until(
    probe: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.2,
) -> None:
    """Poll ``probe`` until it is true; fail early when the process died meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except Exception:  # a probe failing is the same as "not yet"
            pass
        if alive is not None and not alive():
            raise ProcessError(f"{what}: the process exited before it was ready")
        if time.monotonic() > deadline:
            raise ProcessError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(interval)


def listening_ports(pids: Sequence[int]) -> set[int]:
    """TCP ports on which any of ``pids`` listens (for status and leak checks)."""
    wanted = set(pids)
    ports = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in wanted and conn.laddr:
            ports.add(conn.laddr.port)
    return ports


def ports_listening(ports: Sequence[int]) -> set[int]:
    """Which of ``ports`` some process still listens on (whoever it is)."""
    wanted = set(ports)
    return {
        conn.laddr.port
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in wanted
    }


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
