"""What every benchmark measures the stack with: CPU per process, peak memory, the API
server's request counters, percentiles, the load average and the database's durability.

One place for these, so the figures of every module of ``make bench`` mean the
same thing.
"""

from __future__ import annotations

import os
import re
import ssl
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil

from devstack import procs
from devstack.components.apiserver import KubeApiserver
from devstack.stack import Stack
from mwa_staging.db.connect import connect


def log(tag: str, text: str) -> None:
    print(f"[{tag} {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100.0 * (len(ordered) - 1))))
    return ordered[index]


def _cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


class CpuMeter:
    """CPU seconds used by each process of the stack (and this one) over a phase."""

    def __init__(self, stack: Stack) -> None:
        self._procs: dict[str, psutil.Process] = {"bench": psutil.Process()}
        for pid_file in sorted((stack.root / "pids").glob("*.pid")):
            proc = procs.find(stack.root, pid_file.stem)
            if proc is not None:
                self._procs[pid_file.stem] = proc
        self._start: dict[str, float] = {}
        self._wall = 0.0

    def _cpu(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, proc in self._procs.items():
            try:
                total = _cpu_seconds(proc)
                if name != "bench":  # its children are the stack's processes
                    for child in proc.children(recursive=True):  # postgres backends
                        total += _cpu_seconds(child)
            except psutil.Error:
                continue
            out[name] = total
        return out

    def start(self) -> None:
        self._start = self._cpu()
        self._wall = time.monotonic()

    def used(self) -> dict[str, float]:
        """CPU seconds per process since :meth:`start` (unrounded)."""
        end = self._cpu()
        return {n: end[n] - self._start[n] for n in end if n in self._start}

    def report(self) -> dict[str, Any]:
        """CPU seconds per process since :meth:`start`, busiest first, and the wall time."""
        wall = time.monotonic() - self._wall
        used = self.used()
        busy = {n: round(s, 2) for n, s in sorted(used.items(), key=lambda x: -x[1]) if s >= 0.05}
        return {"wall_s": round(wall, 2), "cpu_s": busy}


def peak_rss_mib(stack: Stack, name: str) -> float | None:
    """The process' peak resident memory (VmHWM), MiB."""
    proc = procs.find(stack.root, name)
    if proc is None:
        return None
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024.0, 1)
    return None


_REQUEST_TOTAL = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
#: The resources the operator, the bridge and the gateway touch (the API server's own
#: traffic -- leases, priority-and-fairness objects -- is left out of the counts).
OUR_RESOURCES = frozenset({"stagingjobs", "events", "configmaps"})


class ApiRequests:
    """The API server's ``apiserver_request_total``, read from its /metrics (admin cert)."""

    def __init__(self, stack: Stack) -> None:
        api = KubeApiserver("kube-apiserver")
        self._url = api.url(stack) + "/metrics"
        self._context: ssl.SSLContext = api.ssl_context(stack)

    def counts(self, resources: Iterable[str] = OUR_RESOURCES) -> dict[str, float]:
        """``verb resource[/subresource]`` -> requests so far, for ``resources``."""
        wanted = set(resources)
        with urllib.request.urlopen(self._url, context=self._context, timeout=30) as answer:
            text = answer.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            m = _REQUEST_TOTAL.match(line)
            if not m:
                continue
            labels = dict(_LABEL.findall(m.group("labels")))
            if labels.get("resource") not in wanted:
                continue
            key = labels.get("verb", "?") + " " + labels["resource"]
            if labels.get("subresource"):
                key += "/" + labels["subresource"]
            out[key] = out.get(key, 0.0) + float(m.group("value"))
        return out

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
        keys = set(before) | set(after)
        diff = {k: int(after.get(k, 0) - before.get(k, 0)) for k in keys}
        return {k: v for k, v in sorted(diff.items()) if v}


def durability(dsn: str) -> dict[str, str]:
    """The database's durability settings as it runs (stated in every benchmark's output)."""
    conn = connect(dsn, application_name="bench-durability")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT name, setting FROM pg_settings"
                " WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes')"
            )
            return {str(k): str(v) for k, v in cur.fetchall()}
    finally:
        conn.close()
