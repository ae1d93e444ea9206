"""Benchmark of the Kafka bridge on its own real stack (``python -m bench.bridge_bench``).

Starts a stack with the bridge and no operator in a temporary directory and
preloads the jobs of two phases (COPY), pushes a warm-up burst through first
(``--warmup-jobs``, not measured: a fresh broker JVM and cold caches are not
what production runs on), then measures, on the same bridge and database:

1. **Burst** (throughput): one message per file of ``--jobs`` jobs holding
   ``--files`` files, produced as fast as a producer can (jobs interleaved,
   each job's files in order, as the archive finishes them), until every job's
   status shows Complete. The producer is done long before the bridge, so every
   job's last message waits behind the backlog of all the others: the
   last-message -> Complete delays of this phase include that queueing and are
   reported as such (``complete_delay_incl_backlog_*``), not as the bridge's
   completion latency.
2. **Paced** (completion latency): ``--paced-jobs`` jobs holding
   ``--paced-files`` files, produced one job after another (each job's files in
   order) at ``--paced-rate`` messages/s, by default half the burst throughput
   just measured, so the bridge keeps up. The delay from a job's last message
   (acknowledged by the broker) to its Complete status (seen through a watch)
   is then the bridge's own latency: batch window, transaction, status patch,
   watch delivery. Target: p99 < 1 s.

Then it times the original design -- one UPDATE and one COMMIT per message --
over a sample, on the same database: an ordinary logged table (``job_files``),
and PostgreSQL runs with production durability (fsync, synchronous_commit and
full_page_writes on; ``database`` in the output says so), which is what a
per-message commit costs in production. ``--listener SASL_SSL`` runs the bridge
and the producer on the broker's SASL_SSL/SCRAM-SHA-512 listener (Banksia's).

Prints one JSON object on stdout (the stack's progress goes to stderr):

* ``messages_per_s``: burst files / (last Complete seen - first message produced);
* ``baseline_messages_per_s``, ``speedup``; ``bridge_peak_rss_mib`` (VmHWM);
* ``paced_complete_latency_p99_s``: the latency target's figure;
* ``burst``: throughput, ``complete_delay_incl_backlog_p50_s``/``_p99_s``;
* ``paced``: ``complete_latency_p50_s``/``_p99_s`` and ``latency_breakdown``
  (last message acknowledged -> the completing transaction -> its status patch
  -> seen by the watch);
* per phase, the load average and ``cpu_s``, CPU seconds per process of the
  stack (this machine is shared: the figures move with the load).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from kubernetes import watch
from kubernetes.client import CustomObjectsApi

from bench.measure import CpuMeter, durability, load_average, log, peak_rss_mib, percentile
from bench.preload import Job, message, preload_jobs, producer, unique_paths
from devstack.stack import Stack
from mwa_staging import kube
from mwa_staging.db.connect import connect
from mwa_staging.db.migrate import migrate

P99_TARGET_S = 1.0


def _log(text: str) -> None:
    log("bench", text)


class CompletionWatch(threading.Thread):
    """Records when each StagingJob's status first shows phase Complete.

    :attr:`ready` is set once the watch has listed every job (so nothing that
    happens after it is missed or seen late).
    """

    def __init__(self, kubeconfig: str, names: set[str], namespace: str = "default") -> None:
        super().__init__(daemon=True, name="watch")
        self._api = CustomObjectsApi(kube.api_client(kubeconfig))
        self._names = names
        self._ns = namespace
        self._seen: set[str] = set()
        self.done: dict[str, float] = {}
        self.ready = threading.Event()
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
                timeout_seconds=300,
            ):
                now = time.time()
                obj = event["object"]
                name = obj["metadata"]["name"]
                if name not in self._names:
                    continue
                self._seen.add(name)
                if len(self._seen) == len(self._names):
                    self.ready.set()
                phase = (obj.get("status") or {}).get("phase")
                if phase == "Complete" and name not in self.done:
                    self.done[name] = now
                    if len(self.done) == len(self._names):
                        self.all_done.set()
                        self._watch.stop()
                        return

    def stop(self) -> None:
        self.all_done.set()
        self._watch.stop()


def _ack_recorder(last_of: dict[str, str], acked: dict[str, float]) -> Callable[[Any, Any], None]:
    def on_last(err: Any, msg: Any) -> None:
        if err is None:
            acked[last_of[msg.key().decode()]] = time.time()
        else:
            _log(f"delivery failed: {err}")

    return on_last


def _produce(prod: Producer, topic: str, key: bytes, value: bytes, callback: Any) -> None:
    while True:
        try:
            prod.produce(topic, value=value, key=key, on_delivery=callback)
            return
        except BufferError:
            prod.poll(0.01)


def produce_burst(stack: Stack, jobs: Sequence[Job]) -> tuple[float, float, dict[str, float]]:
    """Produce every file's message at once, jobs interleaved.

    Returns (first produce time, all acknowledged time, job -> its last message's ack time).
    """
    order = [p for group in zip(*(j.paths for j in jobs), strict=False) for p in group]
    values = [(p.encode(), message(p)) for p in order]
    last_of = {j.paths[-1]: j.name for j in jobs}
    acked: dict[str, float] = {}
    on_last = _ack_recorder(last_of, acked)
    prod = producer(**kafka_client(stack, LISTENER[0]))
    topic = stack.env["KAFKA_TOPIC"]
    started = time.time()
    for key, value in values:
        _produce(prod, topic, key, value, on_last if key.decode() in last_of else None)
    if prod.flush(120):
        raise RuntimeError("burst: messages left undelivered")
    flushed = time.time()
    _log(f"burst: produced {len(values)} messages in {flushed - started:.2f}s")
    return started, flushed, acked


def produce_paced(
    stack: Stack, jobs: Sequence[Job], rate: float
) -> tuple[float, float, dict[str, float]]:
    """Produce the jobs one after another (each job's files in order) at ``rate`` messages/s.

    Delivery reports are served every millisecond or so, so a job's ack time is
    within about a millisecond of the broker's acknowledgement. Returns (first
    produce time, all acknowledged time, job -> its last message's ack time).
    """
    values = [(p.encode(), message(p)) for j in jobs for p in j.paths]
    last_of = {j.paths[-1]: j.name for j in jobs}
    acked: dict[str, float] = {}
    on_last = _ack_recorder(last_of, acked)
    prod = producer(**kafka_client(stack, LISTENER[0]))
    topic = stack.env["KAFKA_TOPIC"]
    total = len(values)
    started = time.time()
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - t0) * rate) + 1)
        while sent < due:
            key, value = values[sent]
            _produce(prod, topic, key, value, on_last if key.decode() in last_of else None)
            sent += 1
        prod.poll(0.001)
    if prod.flush(120):
        raise RuntimeError("paced: messages left undelivered")
    flushed = time.time()
    _log(f"paced: produced {total} messages in {flushed - started:.2f}s (asked {rate:,.0f}/s)")
    return started, flushed, acked


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


def _delays(jobs: Sequence[Job], done: dict[str, float], acked: dict[str, float]) -> list[float]:
    return [done[j.name] - acked[j.name] for j in jobs]


def latency_breakdown(
    dsn: str, jobs: Sequence[Job], done: dict[str, float], acked: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Where a job's completion latency goes, per segment (p50/p99 seconds).

    From the database: the transaction that completed the job (``completion_time``
    is its start) and the projection that showed it (``projected_at``, the start
    of the patch's transaction). Segments: last message acknowledged -> the
    completing transaction; -> its status patch started; -> seen by the watch.
    """
    conn = connect(dsn, application_name="bench-breakdown")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT id, extract(epoch FROM completion_time), extract(epoch FROM projected_at)"
                " FROM jobs WHERE id = ANY(%s)",
                ([j.pk for j in jobs],),
            )
            rows = {int(r[0]): (float(r[1]), float(r[2])) for r in cur.fetchall()}
    finally:
        conn.close()
    segments: dict[str, list[float]] = {
        "ack_to_recorded": [], "recorded_to_patch": [], "patch_to_watch": []
    }  # fmt: skip
    for j in jobs:
        recorded, patched = rows[j.pk]
        segments["ack_to_recorded"].append(recorded - acked[j.name])
        segments["recorded_to_patch"].append(patched - recorded)
        segments["patch_to_watch"].append(done[j.name] - patched)
    return {
        name: {"p50_s": round(percentile(v, 50), 3), "p99_s": round(percentile(v, 99), 3)}
        for name, v in segments.items()
    }


def _run_phase(
    name: str,
    kubeconfig: str,
    jobs: Sequence[Job],
    meter: CpuMeter,
    timeout: float,
    produce: Callable[[], tuple[float, float, dict[str, float]]],
) -> tuple[float, float, float, dict[str, float], dict[str, float], dict[str, Any]]:
    watcher = CompletionWatch(kubeconfig, {j.name for j in jobs})
    watcher.start()
    if not watcher.ready.wait(60):
        raise RuntimeError(f"{name}: the watch did not list the jobs")
    load = load_average()
    meter.start()
    first, flushed, acked = produce()
    if not watcher.all_done.wait(timeout):
        watcher.stop()
        raise RuntimeError(f"{name}: only {len(watcher.done)}/{len(jobs)} jobs completed in time")
    last = max(watcher.done.values())
    cpu = meter.report()
    cpu["load_average_at_start"] = load
    cpu["load_average_at_end"] = load_average()
    return first, flushed, last, acked, watcher.done, cpu


#: The listener of this run (set by :func:`run`): the bridge and the producer use it.
LISTENER = ["PLAINTEXT"]


def kafka_client(stack: Stack, listener: str) -> dict[str, Any]:
    """librdkafka settings of a client of ``listener`` (PLAINTEXT or SASL_SSL/SCRAM-SHA-512)."""
    env = stack.env
    if listener == "PLAINTEXT":
        return {"bootstrap": env["KAFKA_BOOTSTRAP"]}
    return {
        "bootstrap": env["KAFKA_SASL_BOOTSTRAP"],
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": env["KAFKA_USER"],
        "sasl.password": env["KAFKA_PASSWORD"],
        "ssl.ca.location": env["KAFKA_CA"],
    }


def bridge_env(stack: Stack, listener: str) -> dict[str, str]:
    """The bridge's extra settings for ``listener``."""
    if listener == "PLAINTEXT":
        return {}
    env = stack.env
    return {
        "KAFKA_SERVER": env["KAFKA_SASL_BOOTSTRAP"],
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    }


def run(args: argparse.Namespace, stack: Stack | None = None) -> dict[str, Any]:
    """The bridge benchmark; on ``stack`` (already up, bridge running) or on its own one."""
    listener = LISTENER[0] = args.listener
    own = stack is None
    if stack is None:
        root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="bridge-bench-"))
        stack = Stack(root, services=(), durable_db=True)
        _log(f"starting a bridge-only stack in {root} (Kafka listener {listener})")
    load_at_start = load_average()
    try:
        if own:  # inside the try: a failed start is torn down too
            with contextlib.redirect_stdout(sys.stderr):  # stdout is for the JSON alone
                stack.up()
                stack.spawn("kafka-bridge", "kafka-bridge", bridge_env(stack, listener))
        dsn, kubeconfig = stack.env["DATABASE_URL"], stack.env["KUBECONFIG"]
        # The bridge answers /healthz before its migrations are done; the preload needs them.
        conn = connect(dsn, application_name="bench-migrate")
        try:
            migrate(conn)
        finally:
            conn.close()
        per_job = max(1, args.files // args.jobs)
        paced_per_job = max(1, args.paced_files // args.paced_jobs)
        _log(
            f"preloading {args.jobs} jobs x {per_job} files (burst), "
            f"{args.paced_jobs} jobs x {paced_per_job} files (paced)"
        )
        jobs = preload_jobs(kubeconfig, dsn, [unique_paths(per_job) for _ in range(args.jobs)])
        paced_jobs = preload_jobs(
            kubeconfig, dsn, [unique_paths(paced_per_job) for _ in range(args.paced_jobs)]
        )
        baseline_jobs = preload_jobs(kubeconfig, dsn, [unique_paths(args.baseline_sample)])
        warmup_jobs = (
            preload_jobs(kubeconfig, dsn, [unique_paths(per_job) for _ in range(args.warmup_jobs)])
            if args.warmup_jobs
            else []
        )
        conn = connect(dsn)
        conn.autocommit = True
        conn.cursor().execute("VACUUM ANALYZE job_files")
        conn.close()
        meter = CpuMeter(stack)

        # Phase 0: a warm-up burst, not measured. A fresh stack's broker (a JVM) and
        # database caches are cold; production's are not. The figures below are the
        # steady state.
        if warmup_jobs:
            _log(f"warm-up: {len(warmup_jobs)} jobs x {per_job} files (not measured)")
            _run_phase(
                "warm-up",
                kubeconfig,
                warmup_jobs,
                meter,
                args.timeout,
                lambda: produce_burst(stack, warmup_jobs),
            )

        # Phase 1: burst.
        total = per_job * len(jobs)
        first, flushed, last, acked, done, cpu = _run_phase(
            "burst", kubeconfig, jobs, meter, args.timeout, lambda: produce_burst(stack, jobs)
        )
        rate = total / (last - first)
        backlog = _delays(jobs, done, acked)
        _log(f"burst: {rate:,.0f} messages/s")
        burst = {
            "files": total,
            "jobs": len(jobs),
            "messages_per_s": round(rate),
            "elapsed_s": round(last - first, 3),
            "produce_s": round(flushed - first, 3),
            "complete_delay_incl_backlog_p50_s": round(percentile(backlog, 50), 3),
            "complete_delay_incl_backlog_p99_s": round(percentile(backlog, 99), 3),
            "complete_delay_incl_backlog_max_s": round(max(backlog), 3),
            **cpu,
        }

        # Phase 2: paced below capacity; the completion latency of the bridge itself.
        paced_rate = args.paced_rate or max(1000.0, round(rate * args.paced_fraction, -3))
        paced_total = paced_per_job * len(paced_jobs)
        time.sleep(1.0)  # let the burst's last status patches settle
        first, flushed, last, acked, done, cpu = _run_phase(
            "paced",
            kubeconfig,
            paced_jobs,
            meter,
            args.timeout,
            lambda: produce_paced(stack, paced_jobs, paced_rate),
        )
        latency = _delays(paced_jobs, done, acked)
        p99 = percentile(latency, 99)
        _log(f"paced: completion latency p50 {percentile(latency, 50):.3f}s p99 {p99:.3f}s")
        paced = {
            "files": paced_total,
            "jobs": len(paced_jobs),
            "rate_asked_messages_per_s": round(paced_rate),
            "rate_produced_messages_per_s": round(paced_total / (flushed - first)),
            "complete_latency_p50_s": round(percentile(latency, 50), 3),
            "complete_latency_p99_s": round(p99, 3),
            "complete_latency_max_s": round(max(latency), 3),
            "p99_target_s": P99_TARGET_S,
            "p99_target_met": p99 < P99_TARGET_S,
            "latency_breakdown": latency_breakdown(dsn, paced_jobs, done, acked),
            **cpu,
        }
        rss = peak_rss_mib(stack, "kafka-bridge")

        _log("running the one-commit-per-message baseline")
        baseline = naive_baseline(dsn, baseline_jobs)
        return {
            "messages_per_s": round(rate),
            "baseline_messages_per_s": round(baseline),
            "speedup": round(rate / baseline, 1),
            "paced_complete_latency_p99_s": round(p99, 3),
            "bridge_peak_rss_mib": round(rss, 1) if rss is not None else None,
            "load_average_at_start": load_at_start,
            "burst": burst,
            "paced": paced,
            "baseline_sample": args.baseline_sample,
            "warmup_messages": per_job * len(warmup_jobs),
            "kafka_listener": listener if listener == "PLAINTEXT" else "SASL_SSL/SCRAM-SHA-512",
            "database": durability(dsn),
        }
    finally:
        if own and not args.keep:
            with contextlib.redirect_stdout(sys.stderr):
                stack.down()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bridge_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--files", type=int, default=200_000, help="burst messages (files)")
    parser.add_argument("--jobs", type=int, default=20, help="burst jobs sharing the files")
    parser.add_argument("--paced-files", type=int, default=100_000, help="paced messages")
    parser.add_argument("--paced-jobs", type=int, default=100, help="paced jobs, one after another")
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=None,
        help="paced messages/s (default: --paced-fraction of the burst throughput)",
    )
    parser.add_argument("--paced-fraction", type=float, default=0.5)
    parser.add_argument("--baseline-sample", type=int, default=20_000)
    parser.add_argument(
        "--warmup-jobs",
        type=int,
        default=4,
        help="jobs (of the burst's size) pushed through first, not measured; 0 for none",
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--root", help="stack directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    parser.add_argument(
        "--listener",
        choices=("PLAINTEXT", "SASL_SSL"),
        default="PLAINTEXT",
        help="Kafka listener of the bridge and the producer (SASL_SSL: SCRAM-SHA-512, TLS)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(run(parser().parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
