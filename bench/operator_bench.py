"""Benchmark of the whole system at scale (``python -m bench.operator_bench``).

Starts a stack with the operator, the bridge and the simulators (PostgreSQL with
production durability) and measures, each with a reference of the same run:

1. **many jobs** (``many``): ``--jobs`` StagingJobs of ``--files`` files created
   in one burst through the API (8 client threads); time of the creates alone,
   until every job is ``Staging``, until every job is ``Complete``, the lag from
   the last create to the last ``Complete`` (target < 30 s), the operator's and
   the bridge's peak memory (VmHWM; target: operator < 300 MB), the API
   requests the operator and the bridge make per job (the API server's
   ``apiserver_request_total`` for StagingJobs, Events and ConfigMaps, minus
   this benchmark's own creates and watch) and the callbacks: the most sent in
   any 60 s window against the configured rate. The operator runs with
   ``CALLBACK_RATE_PER_MINUTE=--callback-rate`` (raised from the default 200, so
   that the callbacks of thousands of jobs fit in a benchmark; said in the
   output), and completion is measured apart from the callbacks. Reference: the
   same with ``--ref-jobs`` jobs, first.
2. **idle cost** (``idle``): with those jobs finished (kept) and ``--waiting``
   jobs ``Staging`` whose files never come, the operator's and the bridge's CPU
   and API requests per minute over ``--idle-seconds`` (target: near zero, not
   growing with the jobs). Reference: the same after the reference workload.
3. **big job** (``big_job``): a ``--big-files``-file observation (resolved
   through the data_files simulator): create -> ``Staging`` (target < 5 s),
   -> ``Complete``, the Scout calls made. Reference: a row-by-row INSERT of the
   same paths on the same database (and the COPY the operator uses).
   **Restage pass** (``restage``): a job of ``--restage-files`` files that never
   arrive, with ``restageIntervalSeconds`` 1: its first pass' file-status calls
   (count, rate against ``SCOUT_STATUS_RATE_PER_SECOND=--status-rate``,
   duration) and stage calls, and a small probe job's create -> callback time
   while the pass runs against the same before it (a pass must not block
   other jobs).
4. **latency under load** (``latency``): while this process produces a steady
   ``--load-rate`` messages/s for other jobs' files (for ``--load-seconds``),
   ``--probe-jobs`` small jobs get their last message; p50/p99 from that
   message's acknowledgement by the broker to the callback's arrival at the
   receiver (target p99 < 2 s).
5. **API server's share** (``api_share``): the API server's (and etcd's) CPU
   and bytes per status patch of a StagingJob holding ``--share-files`` paths
   in ``spec.files`` against one whose list is in ``spec.filesFrom``
   ConfigMaps, ``--patches`` patches each, with a watcher receiving them.
   And the **end-to-end burst** (``end_to_end``): ``--e2e-jobs`` jobs of
   ``--e2e-files`` files in all created through the API (``filesFrom``), the
   operator running, then one message per file produced at once: messages/s
   until every job is ``Complete``, and the CPU of every process.

Prints one JSON object on stdout (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import random
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import Producer
from kubernetes import watch
from kubernetes.client import CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from bench.measure import (
    ApiRequests,
    CpuMeter,
    durability,
    load_average,
    log,
    peak_rss_mib,
    percentile,
)
from bench.preload import copy_files, message, producer
from devstack import procs
from devstack.sim.data_files import expected_paths
from devstack.stack import Stack
from mwa_staging import filelists, kube
from mwa_staging.db.connect import connect

NAMESPACE = "bench"
#: The operator process this benchmark runs (the stack's own, if any, is stopped).
OPERATOR = "operator-bench"
#: Not served by the operator (it watches NAMESPACE only): the API-share objects.
UNSERVED_NAMESPACE = "bench-unserved"
LAG_TARGET_S = 30.0
OPERATOR_RSS_TARGET_MIB = 300.0
BIG_STAGING_TARGET_S = 5.0
LATENCY_P99_TARGET_S = 2.0
FILES_MODULUS = 100_000  # the data_files simulator: observation X has X % 100000 files


def _log(text: str) -> None:
    log("operator-bench", text)


_ids = itertools.count(int(time.time()) % 100_000 * 100_000 + 1)


def next_job_id() -> int:
    return next(_ids)


# --------------------------------------------------------------------------- watching


class PhaseWatch(threading.Thread):
    """First time each StagingJob of a namespace showed ``Staging`` and ``Complete``.

    ``Complete`` counts as ``Staging`` too (a small job may go straight through).
    ``requests`` counts the watch requests it made (the benchmark's own API traffic).
    """

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        super().__init__(daemon=True, name=f"watch-{namespace}")
        self._api = CustomObjectsApi(kube.api_client(kubeconfig))
        self._ns = namespace
        self._cond = threading.Condition()
        self.staging: dict[str, float] = {}
        self.complete: dict[str, float] = {}
        self.phase: dict[str, str] = {}
        self.requests = 0
        self._stopping = False
        self._watch = watch.Watch()

    def run(self) -> None:
        while not self._stopping:
            self.requests += 1
            try:
                for event in self._watch.stream(
                    self._api.list_namespaced_custom_object,
                    kube.GROUP,
                    kube.VERSION,
                    self._ns,
                    kube.PLURAL,
                    timeout_seconds=600,
                ):
                    self._seen(event["object"], time.time())
            except Exception as exc:  # a dropped stream: list and watch again
                if not self._stopping:
                    _log(f"watch of {self._ns} restarted: {type(exc).__name__}")
                    time.sleep(0.2)

    def _seen(self, obj: dict[str, Any], now: float) -> None:
        name = obj["metadata"]["name"]
        phase = (obj.get("status") or {}).get("phase")
        if not phase:
            return
        with self._cond:
            self.phase[name] = phase
            if phase in ("Staging", "Complete") and name not in self.staging:
                self.staging[name] = now
            if phase in ("Complete", "Failed", "Expired") and name not in self.complete:
                self.complete[name] = now
            self._cond.notify_all()

    def wait(self, names: Iterable[str], which: str, timeout: float) -> float:
        """Wait until every name is in ``staging`` or ``complete``; return the latest time."""
        wanted = list(names)
        seen = self.staging if which == "staging" else self.complete
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                missing = [n for n in wanted if n not in seen]
                if not missing:
                    return max(seen[n] for n in wanted)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(missing)}/{len(wanted)} jobs not {which} in {timeout:.0f}s"
                        f" (e.g. {missing[0]}: {self.phase.get(missing[0])})"
                    )
                self._cond.wait(min(left, 1.0))

    def stop(self) -> None:
        self._stopping = True
        self._watch.stop()


class Callbacks:
    """The callback receiver's log (one JSON line per request), read incrementally."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self.times: dict[int, float] = {}  # job id -> arrival of its first callback
        self.all_times: list[float] = []

    def read(self) -> None:
        if not self._path.exists():
            return
        with self._path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            entry = json.loads(line)
            body = entry.get("body")
            if not isinstance(body, dict) or "job_id" not in body:
                continue
            self.all_times.append(float(entry["time"]))
            self.times.setdefault(int(body["job_id"]), float(entry["time"]))

    def wait(self, job_ids: Iterable[int], timeout: float) -> float:
        wanted = list(job_ids)
        deadline = time.monotonic() + timeout
        while True:
            self.read()
            missing = [j for j in wanted if j not in self.times]
            if not missing:
                return max(self.times[j] for j in wanted)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)}/{len(wanted)} callbacks missing")
            time.sleep(0.1)


def max_in_window(times: Sequence[float], window: float = 60.0) -> int:
    """The most events in any interval of ``window`` seconds."""
    ordered = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# --------------------------------------------------------------------------- the bench


class Bench:
    """The stack, its clients and the figures' shared instruments."""

    def __init__(self, stack: Stack, args: argparse.Namespace) -> None:
        self.stack = stack
        self.args = args
        env = stack.env
        self.dsn, self.kubeconfig = env["DATABASE_URL"], env["KUBECONFIG"]
        client = kube.api_client(self.kubeconfig, pool_maxsize=8)
        self.custom = CustomObjectsApi(client)
        self.core = CoreV1Api(client)
        self.callback_url = env["CALLBACK_URL"]
        self.sim = env["SIM_CONTROL_URL"]
        self.api = ApiRequests(stack)
        self.callbacks = Callbacks(Path(env["CALLBACK_LOG"]))
        self.watch = PhaseWatch(self.kubeconfig, NAMESPACE)
        self.own_requests = 0  # the benchmark's own API requests (creates, deletes, reads)

    # -- helpers -------------------------------------------------------------------

    def job_body(self, name: str, job_id: int, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": f"{kube.GROUP}/{kube.VERSION}",
            "kind": kube.KIND,
            "metadata": {"name": name},
            "spec": {"jobId": job_id, "callback": {"url": self.callback_url}, **spec},
        }

    def create(self, bodies: Sequence[dict[str, Any]], namespace: str = NAMESPACE) -> float:
        """Create the objects with 8 client threads; return the seconds it took."""

        def one(body: dict[str, Any]) -> None:
            self.custom.create_namespaced_custom_object(
                kube.GROUP, kube.VERSION, namespace, kube.PLURAL, body
            )

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(one, bodies))
        self.own_requests += len(bodies)
        return time.monotonic() - started

    def list_job(self, name: str, paths: Sequence[str], job_id: int, **spec: Any) -> dict[str, Any]:
        """A job whose paths are in ``filesFrom`` ConfigMaps (created here, first)."""
        refs = [
            {"configMapRef": {"name": self.list_configmap(NAMESPACE, f"{name}-files-{i}", data)}}
            for i, data in enumerate(filelists.configmap_payloads(paths))
        ]
        return self.job_body(name, job_id, {"filesFrom": refs, **spec})

    def list_configmap(self, namespace: str, name: str, data: dict[str, str]) -> str:
        """Create one file-list ConfigMap (format of mwa_staging.filelists); return its name."""
        body: Any = {"metadata": {"name": name, "labels": {filelists.LABEL: "true"}}}
        body["binaryData"] = data
        self.core.create_namespaced_config_map(namespace, body)
        self.own_requests += 1
        return name

    def quiet(self, timeout: float, sample_s: float = 2.0) -> float:
        """Wait until the operator and the bridge make no API request for ``sample_s``.

        A job shows Staging before the operator has finished with it (kopf's own
        annotation patch, the queued Events): that backlog is the creates' cost,
        not idle cost. Returns the seconds waited.
        """
        started = time.monotonic()
        last = self.api.counts()
        while time.monotonic() - started < timeout:
            time.sleep(sample_s)  # the sampling interval of the condition
            now = self.api.counts()
            if not ApiRequests.delta(last, now):
                return time.monotonic() - started
            last = now
        raise TimeoutError("the operator and the bridge never went quiet")

    def sim_calls(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.sim + "/control/calls", timeout=120) as answer:
            calls: list[dict[str, Any]] = json.loads(answer.read())
        return calls

    def clear_sim_calls(self) -> None:
        request = urllib.request.Request(self.sim + "/control/calls", method="DELETE")
        urllib.request.urlopen(request, timeout=30).read()

    def operator_metric(self, name: str, match: str = "") -> float:
        port = self.stack.port(f"{OPERATOR}-http")
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and match in line
        )

    def warm_up(self) -> None:
        """One small job through the whole path before anything is measured.

        The operator's first watch request can be refused while the API server's
        storage is still initialising (kopf retries it after a pause): without this,
        the first measured workload (the 200-job reference) paid for that pause.
        """
        name = f"warm-up-{uuid.uuid4().hex[:8]}"
        body = self.job_body(name, next_job_id(), {"files": [f"mwa/{name}/f.fits"]})
        self.create([body])
        self.watch.wait([name], "complete", self.args.timeout)
        _log("warm-up job complete")

    # -- 1. many jobs --------------------------------------------------------------

    def many_jobs(self, count: int, files: int) -> dict[str, Any]:
        tag = uuid.uuid4().hex[:8]
        names = [f"many-{tag}-{i}" for i in range(count)]
        ids = [next_job_id() for _ in names]
        bodies = [
            self.job_body(
                name, job_id, {"files": [f"mwa/m{tag}/{i}/f{j:03d}.fits" for j in range(files)]}
            )
            for i, (name, job_id) in enumerate(zip(names, ids, strict=True))
        ]
        timeout = self.args.timeout
        before = self.api.counts()
        own_before = self.own_requests + self.watch.requests
        meter = CpuMeter(self.stack)
        meter.start()
        load = load_average()
        _log(f"many jobs: creating {count} jobs x {files} files")
        t0 = time.time()
        create_s = self.create(bodies)
        created = time.time()
        staging = self.watch.wait(names, "staging", timeout)
        complete = self.watch.wait(names, "complete", timeout)
        cpu = meter.report()
        _log(f"many jobs: {count} complete {complete - t0:.1f}s after the first create")
        last_callback = self.callbacks.wait(ids, timeout * 4)
        time.sleep(2.0)  # let the callbacks' status patches land before counting
        after = self.api.counts()
        own = self.own_requests + self.watch.requests - own_before
        delta = ApiRequests.delta(before, after)
        theirs = sum(delta.values()) - own
        delta["POST stagingjobs"] = delta.get("POST stagingjobs", 0) - count  # ours
        window_max = max_in_window([self.callbacks.times[j] for j in ids])
        return {
            "jobs": count,
            "files_per_job": files,
            "create_s": round(create_s, 2),
            "creates_per_s": round(count / create_s, 1),
            "all_staging_s": round(staging - t0, 2),
            "all_complete_s": round(complete - t0, 2),
            "lag_last_create_to_last_complete_s": round(complete - created, 2),
            "lag_target_s": LAG_TARGET_S,
            "lag_target_met": complete - created < LAG_TARGET_S,
            "all_callbacks_s": round(last_callback - t0, 2),
            "callbacks_max_in_any_60s": window_max,
            "callback_rate_per_minute_configured": self.args.callback_rate,
            "callback_rate_respected": window_max <= self.args.callback_rate,
            "operator_peak_rss_mib": peak_rss_mib(self.stack, OPERATOR),
            "bridge_peak_rss_mib": peak_rss_mib(self.stack, "kafka-bridge"),
            "api_requests_operator_and_bridge": theirs,
            "api_requests_per_job": round(theirs / count, 2),
            "api_requests_by_kind_per_job": {
                k: round(v / count, 2) for k, v in delta.items() if v >= count / 10
            },
            "load_average_at_start": load,
            "to_complete": cpu,
        }

    # -- 2. idle cost --------------------------------------------------------------

    def idle(self, waiting: int, seconds: float) -> dict[str, Any]:
        tag = uuid.uuid4().hex[:8]
        names = [f"wait-{tag}-{i}" for i in range(waiting)]
        bodies = [
            self.job_body(
                name,
                next_job_id(),
                {"files": [f"mwa/w{tag}/{i}/NEVER_{j}.fits" for j in range(5)]},
            )
            for i, name in enumerate(names)
        ]
        _log(f"idle: creating {waiting} jobs that wait forever")
        self.create(bodies)
        self.watch.wait(names, "staging", self.args.timeout)
        settled_s = self.quiet(self.args.timeout)
        phases = list(self.watch.phase.values())
        before = self.api.counts()
        own_before = self.own_requests + self.watch.requests
        meter = CpuMeter(self.stack)
        meter.start()
        load = load_average()
        _log(f"idle: measuring {seconds:.0f}s with nothing happening")
        time.sleep(seconds)  # the measurement window itself
        used = meter.used()
        delta = ApiRequests.delta(before, self.api.counts())
        requests = sum(delta.values()) - (self.own_requests + self.watch.requests - own_before)
        per_min = 60.0 / seconds
        return {
            "jobs_finished": sum(1 for p in phases if p in ("Complete", "Failed", "Expired")),
            "jobs_waiting": sum(1 for p in phases if p == "Staging"),
            "seconds": seconds,
            "settled_after_staging_s": round(settled_s, 1),
            "operator_cpu_s_per_min": round(used.get(OPERATOR, 0.0) * per_min, 3),
            "bridge_cpu_s_per_min": round(used.get("kafka-bridge", 0.0) * per_min, 3),
            "apiserver_cpu_s_per_min": round(used.get("kube-apiserver", 0.0) * per_min, 3),
            "postgres_cpu_s_per_min": round(used.get("postgres", 0.0) * per_min, 3),
            "api_requests_per_min": round(requests * per_min, 1),
            "api_requests_by_kind": delta,
            "load_average_at_start": load,
        }

    # -- 3. big job and its restage pass ---------------------------------------------

    def big_job(self, files: int) -> dict[str, Any]:
        obs = (13_000 + random.randrange(9_000)) * FILES_MODULUS + files
        job_id = next_job_id()
        name = f"big-{job_id}"
        self.clear_sim_calls()
        _log(f"big job: observation {obs} ({files} files)")
        t0 = time.time()
        self.create([self.job_body(name, job_id, {"observation": {"obsId": obs}})])
        staging = self.watch.wait([name], "staging", self.args.timeout)
        complete = self.watch.wait([name], "complete", self.args.timeout * 2)
        calls = [c for c in self.sim_calls() if c.get("key") == str(job_id)]
        by_path: dict[str, int] = {}
        for call in calls:
            by_path[call["path"]] = by_path.get(call["path"], 0) + 1
        _log("big job: the reference, a row-by-row INSERT of the same paths")
        paths = expected_paths(obs)
        row_by_row_s, copy_s = self.insert_reference(paths)
        return {
            "files": files,
            "create_to_staging_s": round(staging - t0, 2),
            "staging_target_s": BIG_STAGING_TARGET_S,
            "staging_target_met": staging - t0 < BIG_STAGING_TARGET_S,
            "create_to_complete_s": round(complete - t0, 2),
            "scout_calls": by_path,
            "reference_row_by_row_insert_s": round(row_by_row_s, 2),
            "reference_copy_s": round(copy_s, 2),
            "row_by_row_over_copy": round(row_by_row_s / copy_s, 1),
        }

    def insert_reference(self, paths: Sequence[str]) -> tuple[float, float]:
        """Seconds to insert ``paths`` as a job's files row by row, and with COPY (rolled back)."""
        conn = connect(self.dsn, application_name="bench-reference")
        try:
            times = []
            for way in ("rows", "copy"):
                with conn.cursor() as cur:
                    cur.execute(
                        "INSERT INTO jobs (uid, namespace, name, job_id, notify_url)"
                        " VALUES (%s, 'bench-reference', 'reference', 1, '') RETURNING id",
                        (uuid.uuid4().hex,),
                    )
                    row = cur.fetchone()
                    assert row is not None
                    started = time.monotonic()
                    if way == "rows":
                        for path in paths:
                            cur.execute(
                                "INSERT INTO job_files (job, path) VALUES (%s, %s)", (row[0], path)
                            )
                    else:
                        copy_files(cur, int(row[0]), paths)
                conn.commit()
                times.append(time.monotonic() - started)
                with conn.cursor() as cur:
                    cur.execute("DELETE FROM jobs WHERE id = %s", (row[0],))
                conn.commit()
        finally:
            conn.close()
        return times[0], times[1]

    def probe(self, label: str) -> float:
        """A 10-file job's create -> callback seconds (its files are staged as usual)."""
        job_id = next_job_id()
        name = f"probe-{label}-{job_id}"
        t0 = time.time()
        tag = uuid.uuid4().hex[:8]
        self.create(
            [self.job_body(name, job_id, {"files": [f"mwa/p{tag}/f{j}.fits" for j in range(10)]})]
        )
        done = self.callbacks.wait([job_id], self.args.timeout)
        return done - t0

    def restage(self, files: int) -> dict[str, Any]:
        tag = uuid.uuid4().hex[:8]
        paths = [f"mwa/r{tag}/NEVER_{i:06d}.fits" for i in range(files)]
        job_id = next_job_id()
        name = f"restage-{job_id}"
        before_probe = self.probe("before")
        self.clear_sim_calls()
        status_calls_before = self.operator_metric(
            "mwa_staging_operator_scout_calls_total", 'endpoint="file"'
        )
        _log(f"restage: a job of {files} files that never arrive, restaged after 1 s")
        self.create([self.list_job(name, paths, job_id, restageIntervalSeconds=1)])
        self.watch.wait([name], "staging", self.args.timeout)
        deadline = time.monotonic() + self.args.timeout
        while (
            self.operator_metric("mwa_staging_operator_scout_calls_total", 'endpoint="file"')
            <= status_calls_before
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("the restage pass did not start")
            time.sleep(0.2)
        during_probe = self.probe("during")
        # The pass is over when its files have been staged again.
        while self.operator_metric("mwa_staging_operator_restage_files_total", "restaged") < files:
            if time.monotonic() > deadline:
                raise TimeoutError("the restage pass did not finish")
            time.sleep(0.5)
        self.custom.delete_namespaced_custom_object(
            kube.GROUP, kube.VERSION, NAMESPACE, kube.PLURAL, name
        )
        self.own_requests += 1
        calls = self.sim_calls()
        status = sorted(
            c["time"] for c in calls if c["path"].endswith("/v1/file") and tag in c.get("file", "")
        )
        stages = sorted(
            c["time"]
            for c in calls
            if c.get("key") == str(job_id) and c["path"].endswith("batchstage")
        )
        restages = [t for t in stages if status and t >= status[0]]
        span = (status[-1] - status[0]) if len(status) > 1 else float("nan")
        rate = (len(status) - 1) / span if len(status) > 1 and span > 0 else float("nan")
        return {
            "files_pending": files,
            "status_calls": len(status),
            "status_calls_per_s": round(rate, 1),
            "status_rate_setting_per_s": self.args.status_rate,
            "rate_bounded_by_setting": rate <= self.args.status_rate * 1.05,
            "stage_calls_in_pass": len(restages),
            "pass_duration_s": round((max(restages or status) - status[0]) if status else 0, 2),
            "probe_job_create_to_callback_before_s": round(before_probe, 2),
            "probe_job_create_to_callback_during_pass_s": round(during_probe, 2),
        }

    # -- 4. latency under load -------------------------------------------------------

    def latency(self, rate: float, seconds: float, probes: int) -> dict[str, Any]:
        tag = uuid.uuid4().hex[:8]
        total = int(rate * seconds)
        per_job = 10_000
        load_paths = [f"mwa/l{tag}/NEVER_{i:07d}.fits" for i in range(total)]
        load_jobs = [load_paths[i : i + per_job] for i in range(0, total, per_job)]
        probe_paths = [[f"mwa/q{tag}/{k}/NEVER_{j}.fits" for j in range(5)] for k in range(probes)]
        probe_ids = [next_job_id() for _ in range(probes)]
        names = []
        bodies = []
        for paths in load_jobs:
            job_id = next_job_id()
            names.append(f"load-{job_id}")
            bodies.append(self.list_job(names[-1], paths, job_id))
        for job_id, paths in zip(probe_ids, probe_paths, strict=True):
            names.append(f"lat-{job_id}")
            bodies.append(self.job_body(names[-1], job_id, {"files": paths}))
        _log(f"latency: {len(load_jobs)} load jobs ({total} files), {probes} probe jobs")
        self.create(bodies)
        self.watch.wait(names, "staging", self.args.timeout)
        # One message sequence: the load in order, a probe job's five every seconds/probes.
        plan: list[tuple[str, int | None]] = [(p, None) for p in load_paths]
        step = max(1, total // (probes + 1))
        for k, paths in enumerate(probe_paths):
            at = min(len(plan), (k + 1) * step + k * 5)
            plan[at:at] = [(p, probe_ids[k] if j == 4 else None) for j, p in enumerate(paths)]
        acked: dict[int, float] = {}

        def on_last(job_id: int) -> Callable[[Any, Any], None]:
            def delivered(err: Any, _msg: Any) -> None:
                if err is None:
                    acked[job_id] = time.time()

            return delivered

        prod = producer(self.stack.env["KAFKA_BOOTSTRAP"], **{"linger.ms": 1})
        topic = self.stack.env["KAFKA_TOPIC"]
        meter = CpuMeter(self.stack)
        meter.start()
        load = load_average()
        _log(f"latency: producing {len(plan)} messages at {rate:,.0f}/s")
        t0 = time.perf_counter()
        sent = 0
        while sent < len(plan):
            due = min(len(plan), int((time.perf_counter() - t0) * rate) + 1)
            while sent < due:
                path, last_of = plan[sent]
                cb = on_last(last_of) if last_of is not None else None
                _produce(prod, topic, path.encode(), message(path), cb)
                sent += 1
            prod.poll(0.001)
        prod.flush(60)
        produced_s = time.perf_counter() - t0
        self.callbacks.wait(probe_ids, self.args.timeout)
        cpu = meter.report()
        lat = [self.callbacks.times[j] - acked[j] for j in probe_ids]
        p99 = percentile(lat, 99)
        return {
            "load_messages": total,
            "load_rate_asked_per_s": rate,
            "load_rate_produced_per_s": round(len(plan) / produced_s),
            "probe_jobs": probes,
            "last_message_to_callback_p50_s": round(percentile(lat, 50), 3),
            "last_message_to_callback_p99_s": round(p99, 3),
            "last_message_to_callback_max_s": round(max(lat), 3),
            "p99_target_s": LATENCY_P99_TARGET_S,
            "p99_target_met": p99 < LATENCY_P99_TARGET_S,
            "load_average_at_start": load,
            **cpu,
        }

    # -- 5. the API server's share -------------------------------------------------------

    def api_share(self, files: int, patches: int) -> dict[str, Any]:
        """CPU and bytes per status patch: the paths in spec.files against spec.filesFrom."""
        ns = UNSERVED_NAMESPACE
        namespace: Any = {"metadata": {"name": ns}}
        with contextlib.suppress(ApiException):
            self.core.create_namespace(namespace)
        tag = uuid.uuid4().hex[:8]
        paths = [f"mwa/s{tag}/1234567890_{i:06d}_ch{i % 24:03d}.fits" for i in range(files)]
        inline = self.job_body(f"inline-{tag}", next_job_id(), {"files": paths})
        refs = [
            {"configMapRef": {"name": self.list_configmap(ns, f"listed-{tag}-files-{i}", data)}}
            for i, data in enumerate(filelists.configmap_payloads(paths))
        ]
        listed = self.job_body(f"listed-{tag}", next_job_id(), {"filesFrom": refs})
        out: dict[str, Any] = {"files": files, "patches": patches}
        apiserver = procs.find(self.stack.root, "kube-apiserver")
        etcd = procs.find(self.stack.root, "etcd")
        assert apiserver is not None and etcd is not None
        for label, body in (("files_inline", inline), ("files_from", listed)):
            self.create([body], namespace=ns)
            name = body["metadata"]["name"]
            counter = WatchBytes(self.kubeconfig, ns, name)
            counter.start()
            counter.ready.wait(30)
            cpu0 = _cpu(apiserver), _cpu(etcd)
            sent = received = 0
            for n in range(patches):
                status = {"phase": "Staging", "readyFiles": n, "totalFiles": files}
                answer: Any = self.custom.patch_namespaced_custom_object_status(
                    kube.GROUP, kube.VERSION, ns, kube.PLURAL, name, {"status": status},
                    _content_type=kube.MERGE_PATCH, _preload_content=False,
                )  # fmt: skip
                received += len(answer.read() if hasattr(answer, "read") else answer.data)
                sent += len(json.dumps({"status": status}))
            counter.wait_for(patches, 30)
            cpu1 = _cpu(apiserver), _cpu(etcd)
            counter.stop()
            obj_bytes = len(json.dumps(body))
            out[label] = {
                "object_bytes": obj_bytes,
                "apiserver_cpu_ms_per_patch": round((cpu1[0] - cpu0[0]) * 1000 / patches, 2),
                "etcd_cpu_ms_per_patch": round((cpu1[1] - cpu0[1]) * 1000 / patches, 2),
                "response_bytes_per_patch": received // patches,
                "watch_bytes_per_patch": counter.bytes // max(1, counter.events),
                "request_bytes_per_patch": sent // patches,
            }
        a, b = out["files_inline"], out["files_from"]
        out["inline_over_files_from_apiserver_cpu"] = round(
            a["apiserver_cpu_ms_per_patch"] / max(b["apiserver_cpu_ms_per_patch"], 0.01), 1
        )
        out["inline_over_files_from_watch_bytes"] = round(
            a["watch_bytes_per_patch"] / max(b["watch_bytes_per_patch"], 1), 1
        )
        return out

    def end_to_end(self, jobs: int, files: int) -> dict[str, Any]:
        """Jobs created through the API, operator running; one burst of all their messages."""
        per_job = files // jobs
        tag = uuid.uuid4().hex[:8]
        all_paths = [
            [f"mwa/e{tag}/{k}/NEVER_{i:06d}.fits" for i in range(per_job)] for k in range(jobs)
        ]
        names, bodies = [], []
        for paths in all_paths:
            job_id = next_job_id()
            names.append(f"e2e-{job_id}")
            bodies.append(self.list_job(names[-1], paths, job_id))
        _log(f"end to end: {jobs} jobs x {per_job} files through the API (filesFrom)")
        self.create(bodies)
        self.watch.wait(names, "staging", self.args.timeout)
        time.sleep(2.0)  # the creates' own patches and Events are not the burst's
        order = [p for group in zip(*all_paths, strict=True) for p in group]
        # The archive's messages are encoded and its producer connected before the
        # clock starts, as in the bridge bench: the figure is the system's, not the
        # benchmark's Python building 200,000 JSON documents.
        values = [(p.encode(), message(p)) for p in order]
        prod = producer(self.stack.env["KAFKA_BOOTSTRAP"])
        topic = self.stack.env["KAFKA_TOPIC"]
        before = self.api.counts()
        meter = CpuMeter(self.stack)
        meter.start()
        load = load_average()
        t0 = time.time()
        produce_all(prod, topic, values)
        produced = time.time()
        done = self.watch.wait(names, "complete", self.args.timeout)
        cpu = meter.report()
        delta = ApiRequests.delta(before, self.api.counts())
        rate = len(order) / (done - t0)
        _log(f"end to end: {rate:,.0f} messages/s")
        return {
            "jobs": jobs,
            "files": len(order),
            "messages_per_s": round(rate),
            "elapsed_s": round(done - t0, 2),
            "produce_s": round(produced - t0, 2),
            "api_requests_during_burst": delta,
            "load_average_at_start": load,
            **cpu,
        }


class WatchBytes(threading.Thread):
    """Bytes a watcher of one object receives (raw watch stream, one line per event)."""

    def __init__(self, kubeconfig: str, namespace: str, name: str) -> None:
        super().__init__(daemon=True, name="watch-bytes")
        self._api = CustomObjectsApi(kube.api_client(kubeconfig))
        self._ns, self._name = namespace, name
        self.bytes = 0
        self.events = 0
        self.ready = threading.Event()
        self._response: Any = None
        self._cond = threading.Condition()

    def run(self) -> None:
        self._response = self._api.list_namespaced_custom_object(
            kube.GROUP,
            kube.VERSION,
            self._ns,
            kube.PLURAL,
            watch=True,
            field_selector=f"metadata.name={self._name}",
            _preload_content=False,
            timeout_seconds=300,
        )
        first = True
        with contextlib.suppress(Exception):
            for line in self._response:
                if first:  # the ADDED event of the object itself
                    first = False
                    self.ready.set()
                    continue
                with self._cond:
                    self.bytes += len(line)
                    self.events += 1
                    self._cond.notify_all()

    def wait_for(self, events: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.events < events and time.monotonic() < deadline:
                self._cond.wait(0.5)

    def stop(self) -> None:
        """End the stream (``shutdown`` interrupts the reading thread; ``close`` would wait)."""
        with contextlib.suppress(Exception):
            self._response.shutdown()


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _produce(prod: Producer, topic: str, key: bytes, value: bytes, callback: Any) -> None:
    while True:
        try:
            prod.produce(topic, value=value, key=key, on_delivery=callback)
            return
        except BufferError:
            prod.poll(0.01)


def produce_all(prod: Producer, topic: str, values: Sequence[tuple[bytes, bytes]]) -> None:
    """Produce already-encoded (key, value) messages and wait until all are acknowledged."""
    for key, value in values:
        _produce(prod, topic, key, value, None)
    if prod.flush(120):
        raise RuntimeError("messages left undelivered")


# --------------------------------------------------------------------------- running


def operator_env(args: argparse.Namespace) -> dict[str, str]:
    """The operator's settings for the benchmark (what differs from the defaults, and why)."""
    return {
        "WATCH_NAMESPACE": NAMESPACE,
        # Raised from 200 a minute: at 200 the callbacks of 5,000 jobs take 25 minutes.
        "CALLBACK_RATE_PER_MINUTE": str(args.callback_rate),
        "SCOUT_STATUS_RATE_PER_SECOND": str(args.status_rate),
    }


def run(args: argparse.Namespace, stack: Stack | None = None) -> dict[str, Any]:
    own = stack is None
    if stack is None:
        root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="operator-bench-"))
        stack = Stack(root, services=("kafka-bridge",), durable_db=True)
        _log(f"starting a stack in {root}")
    load_at_start = load_average()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            if own:
                stack.up()  # inside the try: a failed start is torn down too
            if stack.is_running("operator"):
                stack.stop("operator")
            stack.kubectl("create", "namespace", NAMESPACE, check=False)
            stack.spawn(OPERATOR, "operator", operator_env(args))
        bench = Bench(stack, args)
        bench.watch.start()
        bench.warm_up()
        out: dict[str, Any] = {
            "database": durability(bench.dsn),
            "load_average_at_start": load_at_start,
            "operator_settings_changed": operator_env(args),
        }
        only = set(args.only.split(",")) if args.only else None

        def want(part: str) -> bool:
            return only is None or part in only

        if want("many") or want("idle"):
            out["many_reference"] = bench.many_jobs(args.ref_jobs, args.files)
            out["idle_reference"] = bench.idle(args.ref_waiting, args.idle_seconds)
            out["many"] = bench.many_jobs(args.jobs, args.files)
            out["idle"] = bench.idle(args.waiting, args.idle_seconds)
            ref, big = out["many_reference"], out["many"]
            out["many_growth"] = {
                "jobs_ratio": round(big["jobs"] / ref["jobs"], 1),
                "lag_ratio": round(
                    big["lag_last_create_to_last_complete_s"]
                    / max(ref["lag_last_create_to_last_complete_s"], 0.01),
                    1,
                ),
                "api_requests_per_job_ratio": round(
                    big["api_requests_per_job"] / max(ref["api_requests_per_job"], 0.01), 2
                ),
                "idle_operator_cpu_ratio": round(
                    out["idle"]["operator_cpu_s_per_min"]
                    / max(out["idle_reference"]["operator_cpu_s_per_min"], 0.001),
                    1,
                ),
                "idle_api_requests_ratio": round(
                    out["idle"]["api_requests_per_min"]
                    / max(out["idle_reference"]["api_requests_per_min"], 0.1),
                    1,
                ),
            }
        if want("big"):
            out["big_job"] = bench.big_job(args.big_files)
        if want("restage"):
            out["restage"] = bench.restage(args.restage_files)
        if want("latency"):
            out["latency"] = bench.latency(args.load_rate, args.load_seconds, args.probe_jobs)
        if want("share"):
            out["api_share"] = bench.api_share(args.share_files, args.patches)
        if want("e2e"):
            out["end_to_end"] = bench.end_to_end(args.e2e_jobs, args.e2e_files)
        out["operator_peak_rss_mib"] = peak_rss_mib(stack, OPERATOR)
        out["bridge_peak_rss_mib"] = peak_rss_mib(stack, "kafka-bridge")
        out["load_average_at_end"] = load_average()
        bench.watch.stop()
        return out
    finally:
        with contextlib.redirect_stdout(sys.stderr):
            if own and not args.keep:
                stack.down()
            elif not own:
                stack.stop(OPERATOR)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.operator_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--jobs", type=int, default=5000)
    p.add_argument("--ref-jobs", type=int, default=200)
    p.add_argument("--files", type=int, default=50, help="files per job (many jobs)")
    p.add_argument("--waiting", type=int, default=2000, help="waiting jobs (idle cost)")
    p.add_argument("--ref-waiting", type=int, default=200)
    p.add_argument("--idle-seconds", type=float, default=60.0)
    p.add_argument("--callback-rate", type=int, default=3000, help="callbacks per minute")
    p.add_argument("--big-files", type=int, default=99_999)
    p.add_argument("--restage-files", type=int, default=20_000)
    p.add_argument("--status-rate", type=float, default=1000.0, help="file-status calls/s")
    p.add_argument("--load-rate", type=float, default=5000.0)
    p.add_argument("--load-seconds", type=float, default=30.0)
    p.add_argument("--probe-jobs", type=int, default=20)
    p.add_argument("--share-files", type=int, default=10_000)
    p.add_argument("--patches", type=int, default=50)
    p.add_argument("--e2e-jobs", type=int, default=20)
    p.add_argument("--e2e-files", type=int, default=200_000)
    p.add_argument("--only", help="comma-separated parts: many,idle,big,restage,latency,share,e2e")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--root", help="stack directory (default: a new temporary one)")
    p.add_argument("--keep", action="store_true", help="leave the stack running")
    return p


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(run(parser().parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
