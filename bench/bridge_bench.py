"""Benchmark of the Kafka bridge on its own real stack (``python -m bench.bridge_bench``).

Starts a stack with the bridge and no operator in a temporary directory,
preloads jobs holding ``--files`` files between them (COPY), produces one
message per file as fast as a producer can (jobs interleaved, each job's files
in order, as the archive finishes them), and watches the StagingJobs until all
are Complete. Then, on the same database, it times the original design -- one
UPDATE and one COMMIT per message -- over a sample. Prints one JSON object:

* ``messages_per_s``: files / (last Complete status seen - first message produced);
* ``complete_delay_p50_s`` / ``_p99_s``: per job, from its last message being
  acknowledged by the broker to its Complete status being observed (watch);
* ``bridge_peak_rss_mib``: VmHWM of the bridge process;
* ``baseline_messages_per_s`` and ``speedup``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubernetes import watch
from kubernetes.client import CustomObjectsApi

from bench.preload import Job, message, preload_jobs, producer, unique_paths
from devstack import procs
from devstack.stack import Stack
from mwa_staging import kube
from mwa_staging.db.connect import connect


def _log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class CompletionWatch(threading.Thread):
    """Records when each StagingJob's status first shows phase Complete."""

    def __init__(self, kubeconfig: str, names: set[str], namespace: str = "default") -> None:
        super().__init__(daemon=True, name="watch")
        self._api = CustomObjectsApi(kube.api_client(kubeconfig))
        self._names = names
        self._ns = namespace
        self.done: dict[str, float] = {}
        self.all_done = threading.Event()
        self._watch = watch.Watch()

    def run(self) -> None:
        while not self.all_done.is_set():
            for event in self._watch.stream(
                self._api.list_namespaced_custom_object,
                kube.GROUP,
                kube.VERSION,
                self._ns,
                kube.PLURAL,
                timeout_seconds=60,
            ):
                obj = event["object"]
                name = obj["metadata"]["name"]
                phase = (obj.get("status") or {}).get("phase")
                if name in self._names and phase == "Complete" and name not in self.done:
                    self.done[name] = time.time()
                    if len(self.done) == len(self._names):
                        self.all_done.set()
                        self._watch.stop()
                        return


def produce_burst(stack: Stack, jobs: Sequence[Job]) -> tuple[float, dict[str, float]]:
    """Produce every file's message; return (first produce time, job -> last ack time)."""
    order = [p for group in zip(*(j.paths for j in jobs), strict=False) for p in group]
    values = [(p.encode(), message(p)) for p in order]
    last_of = {j.paths[-1]: j.name for j in jobs}
    acked: dict[str, float] = {}

    def on_last(err: Any, msg: Any) -> None:
        if err is None:
            acked[last_of[msg.key().decode()]] = time.time()

    prod = producer(stack.env["KAFKA_BOOTSTRAP"])
    topic = stack.env["KAFKA_TOPIC"]
    started = time.time()
    for key, value in values:
        callback = on_last if key.decode() in last_of else None
        while True:
            try:
                prod.produce(topic, value=value, key=key, on_delivery=callback)
                break
            except BufferError:
                prod.poll(0.01)
    prod.flush(120)
    _log(f"produced {len(values)} messages in {time.time() - started:.2f}s")
    return started, acked


def naive_baseline(dsn: str, jobs: Sequence[Job]) -> float:
    """The original design: per message, parse, one UPDATE, one COMMIT. Returns messages/s."""
    values = [message(p) for j in jobs for p in j.paths]
    conn = connect(dsn, application_name="bench-baseline")
    try:
        cur = conn.cursor()
        started = time.perf_counter()
        for value in values:
            body = json.loads(value)
            state = 1 if not body.get("Error") else 2
            cur.execute(
                "UPDATE job_files SET state = %s, error = %s, updated_at = now()"
                " WHERE path = %s AND state <> 1",
                (state, body.get("Error") or None, body["Filename"]),
            )
            conn.commit()
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    return len(values) / elapsed


def peak_rss_mib(stack: Stack, name: str = "kafka-bridge") -> float | None:
    proc = procs.find(stack.root, name)
    if proc is None:
        return None
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return None


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100.0 * (len(ordered) - 1))))
    return ordered[index]


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    stack = Stack(root, services=("kafka-bridge",))
    _log(f"starting a bridge-only stack in {root}")
    stack.up()
    try:
        dsn, kubeconfig = stack.env["DATABASE_URL"], stack.env["KUBECONFIG"]
        per_job = max(1, args.files // args.jobs)
        _log(f"preloading {args.jobs} jobs x {per_job} files")
        jobs = preload_jobs(kubeconfig, dsn, [unique_paths(per_job) for _ in range(args.jobs)])
        baseline_jobs = preload_jobs(
            kubeconfig, dsn, [unique_paths(args.baseline_sample)], namespace="default"
        )
        conn = connect(dsn)
        conn.autocommit = True
        conn.cursor().execute("VACUUM ANALYZE job_files")
        conn.close()

        watcher = CompletionWatch(kubeconfig, {j.name for j in jobs})
        watcher.start()
        first, acked = produce_burst(stack, jobs)
        if not watcher.all_done.wait(args.timeout):
            raise RuntimeError(f"only {len(watcher.done)}/{len(jobs)} jobs completed in time")
        last = max(watcher.done.values())
        delays = [watcher.done[j.name] - acked[j.name] for j in jobs]
        total = per_job * len(jobs)
        rate = total / (last - first)
        rss = peak_rss_mib(stack)
        _log(f"bridge: {rate:,.0f} messages/s; running the one-commit-per-message baseline")
        baseline = naive_baseline(dsn, baseline_jobs)
        return {
            "files": total,
            "jobs": len(jobs),
            "messages_per_s": round(rate),
            "elapsed_s": round(last - first, 3),
            "complete_delay_p50_s": round(percentile(delays, 50), 3),
            "complete_delay_p99_s": round(percentile(delays, 99), 3),
            "complete_delay_max_s": round(max(delays), 3),
            "bridge_peak_rss_mib": round(rss, 1) if rss is not None else None,
            "baseline_sample": args.baseline_sample,
            "baseline_messages_per_s": round(baseline),
            "speedup": round(rate / baseline, 1),
        }
    finally:
        if not args.keep:
            stack.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bridge_bench", description=__doc__)
    parser.add_argument("--files", type=int, default=200_000, help="messages (files) in total")
    parser.add_argument("--jobs", type=int, default=20, help="jobs sharing the files")
    parser.add_argument("--baseline-sample", type=int, default=20_000)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--root", help="stack directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    result = run(parser.parse_args(argv))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
