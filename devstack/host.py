"""What container engines and a kubelet leave on the host, and how it is put back.

The node mode (``devstack.components.node``) and the image build engine
(``devstack.images``) run real container software, which changes state outside
their own directories: mounts (overlay snapshots, shm, tmpfs volumes, network
namespace files, the kubelet's bind mount of its root), cgroups, kernel settings
(the kubelet sets ``kernel.panic``, ``kernel.panic_on_oops`` and
``vm.overcommit_memory`` and has no option to leave them alone). This module
holds the small, careful operations that undo that: unmount what lies under a
directory, remove a cgroup tree, record and restore sysctls.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import subprocess
import time
from pathlib import Path

CGROUP_V1_ROOT = Path("/sys/fs/cgroup")
#: The kernel settings the kubelet changes (kubelet/cm/container_manager_linux.go).
KUBELET_SYSCTLS = ("kernel.panic", "kernel.panic_on_oops", "vm.overcommit_memory")
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _unescape(field: str) -> str:
    """Mount points in /proc/self/mountinfo escape space, tab, newline, backslash."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below ``directory``, deepest first."""
    prefix = str(directory.resolve())
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = _unescape(line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_under(directory: Path) -> list[Path]:
    """Unmount everything at or below ``directory`` (lazily if busy); returns what was."""
    undone = []
    for _ in range(5):  # a mount may be stacked several times (kubelet's bind of its root)
        points = mounts_under(directory) if directory.exists() else []
        if not points:
            break
        for point in points:
            if _libc.umount2(str(point).encode(), 0) != 0:
                _libc.umount2(str(point).encode(), MNT_DETACH)
            undone.append(point)
    return undone


def shared_bind(directory: Path) -> None:
    """Make ``directory`` a mount point of its own with shared propagation (idempotent).

    Mounts made below it in another mount namespace (the kubelet's) then appear
    on the host too.
    """
    if Path(directory).resolve() not in mounts_under(directory):
        subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    subprocess.run(["mount", "--make-shared", str(directory)], check=True)


def cgroup_controllers() -> list[Path]:
    """The cgroup v1 hierarchies mounted under /sys/fs/cgroup (one directory each)."""
    if not CGROUP_V1_ROOT.is_dir():
        return []
    return [p for p in sorted(CGROUP_V1_ROOT.iterdir()) if p.is_dir() and not p.is_symlink()]


def create_cgroup(name: str) -> None:
    """``/<name>`` in every hierarchy (the kubelet's --cgroup-root must exist)."""
    for controller in cgroup_controllers():
        path = controller / name
        with contextlib.suppress(OSError):
            path.mkdir(exist_ok=True)
            if controller.name == "cpuset":
                # A new cpuset cgroup starts with no CPUs and no memory nodes.
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (path / knob).write_text((controller / knob).read_text())


def remove_cgroup(name: str, timeout: float = 10.0) -> list[str]:
    """Remove ``/<name>`` and everything below it in every hierarchy; returns leftovers.

    A cgroup can only be removed once empty; processes of killed containers may
    take a moment to leave, so this retries until ``timeout``.
    """
    deadline = time.monotonic() + timeout
    left: list[str] = []
    while True:
        left = []
        for controller in cgroup_controllers():
            top = controller / name
            if not top.exists():
                continue
            below = sorted(
                (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
            )
            for path in [*below, top]:
                with contextlib.suppress(FileNotFoundError):
                    try:
                        path.rmdir()
                    except OSError:
                        left.append(str(path))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def read_sysctl(name: str) -> str:
    return Path("/proc/sys", *name.split(".")).read_text().strip()


def write_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value + "\n")


def save_sysctls(path: Path, names: tuple[str, ...] = KUBELET_SYSCTLS) -> None:
    """Record the current values once (a restarted kubelet must not record its own)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({n: read_sysctl(n) for n in names}, indent=2) + "\n")


def restore_sysctls(path: Path) -> dict[str, str]:
    """Put back the values recorded by :func:`save_sysctls`; returns what changed back."""
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    changed = {}
    for name, value in saved.items():
        with contextlib.suppress(OSError):
            if read_sysctl(name) != value:
                write_sysctl(name, value)
                changed[name] = value
    path.unlink()
    return changed


def remove_empty_dirs(*paths: Path) -> None:
    """``rmdir`` each path that exists and is empty (shared host directories)."""
    for path in paths:
        with contextlib.suppress(OSError):
            path.rmdir()


def is_root() -> bool:
    return os.geteuid() == 0
