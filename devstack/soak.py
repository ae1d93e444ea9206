"""The chaos soak: jobs flowing while the stack's processes die, stall and run out of disk.

Usage::

    python -m devstack.soak --minutes 10 [--seed N]      # make soak [SOAK_MINUTES=10] [SOAK_SEED=N]

It prints the seed first (``{"seed": N, "replay": "..."}``), starts a stack of its
own in a temporary directory (PostgreSQL's directory on a size-limited tmpfs of
its own when the machine allows a mount), and for ``--minutes``:

* **jobs**: a new StagingJob every ``--job-interval`` seconds (seeded), file lists
  of 1-40 paths mixing plain, ``ERROR``, ``LOST``, ``DUP`` and ``NEVER`` files, or
  observations (1-60 files, through data_files); jobs holding a ``NEVER`` file and
  some others get a short deadline; about one in eight is deleted mid-flight;
* **a flaky callback receiver**: every few seconds the next 1-3 callbacks get 500;
* **faults**, at times drawn from the seed (two independent streams, so faults
  overlap): SIGKILL and restart of the operator, the bridge, a Scout node,
  HAProxy, Kafka, PostgreSQL, etcd or the API server; SIGSTOP of the operator,
  the bridge, PostgreSQL, Kafka or HAProxy for longer than the peers' timeouts
  (Kafka's 45 s session, HAProxy's 30 s), then SIGCONT; PostgreSQL's disk full
  (a ballast file fills its tmpfs and a WAL switch makes the next write need new
  space) for 10-25 s, then the ballast is removed.

Then every process is brought back, the jobs are left to finish, and the
invariants are checked and printed as one JSON line (``"ok": true|false``):

* every job is final (Complete/Failed with its callback delivered) or deleted;
* each final job's delivered callback carries the counts of its database row,
  and for jobs that ended with code 0 or 5 those counts are what the simulator
  published on Kafka for its paths (read back from the topic);
* no job got two delivered callbacks, or each duplicate is explained by a fault
  of the operator or the database during that job's delivery (at least once);
* no valid message was lost: no file that the simulator published while its job
  was live (more than 5 s before the job ended) is still pending in the database,
  unless a fault of the bridge, Kafka or PostgreSQL between the message and the
  job's end explains why the job ended first (its deadline while the bridge was
  stalled), or it was published too late for it: counted as ``pending_explained``);
* nothing leaked: after ``down`` no process or port of the stack is left, the
  tmpfs is unmounted and the stack directory is gone.

On failure it prints the seed and the command that replays the same schedule
(the faults' and the jobs' times and choices; the interleaving with the
processes' own timing is not replayable).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg2

from devstack import build, procs
from devstack.stack import Stack

OPERATOR = "operator-soak"
#: Operator settings sized for a soak (as the e2e tests' FAST_ENV, plus a short lease).
OPERATOR_ENV = {
    "SCOUT_RETRY_BUDGET_SECONDS": "60",
    "SCOUT_RETRY_INITIAL_SECONDS": "0.5",
    "SCOUT_RETRY_MAX_SECONDS": "3",
    "CALLBACK_BACKOFF_INITIAL_SECONDS": "0.5",
    "CALLBACK_BACKOFF_MAX_SECONDS": "3",
    "CALLBACK_TIMEOUT_SECONDS": "10",
    "DATA_FILES_ATTEMPTS": "5",
    "DATA_FILES_RETRY_SECONDS": "0.5",
    "SCHEDULER_MAX_SLEEP_SECONDS": "3",
}
KILLABLE = ["operator", "bridge", "scout", "haproxy", "kafka", "postgres", "etcd", "kube-apiserver"]
STALLABLE = ["operator", "bridge", "postgres", "kafka", "haproxy"]
FINAL_PHASES = ("Complete", "Failed")
#: librdkafka's default session.timeout.ms, which the bridge keeps.
KAFKA_SESSION_SECONDS = 45.0
NS = "soak"


@dataclass
class Job:
    name: str
    job_id: int
    kind: str  # "files" or "observation"
    paths: list[str]
    obs_id: int | None = None
    deadline: int | None = None
    delete_after: float | None = None
    created: bool = False
    deleted: bool = False


@dataclass
class Fault:
    kind: str  # kill, stall, disk-full
    target: str
    start: float
    end: float = 0.0
    error: str | None = None


@dataclass
class Soak:
    stack: Stack
    seed: int
    minutes: float
    job_interval: float
    log: list[str] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    disk: Path | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def say(self, message: str) -> None:
        line = f"[soak {time.strftime('%H:%M:%S')}] {message}"
        print(line, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ kubectl

    def kubectl(
        self, *args: str, stdin: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KUBECONFIG=str(self.stack.root / "kubeconfig"))
        try:
            return subprocess.run(
                [str(build.kubectl_bin()), "--request-timeout=20s", *args],
                env=env,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", "timed out")

    # --------------------------------------------------------------------- jobs

    def make_job(self, rng: random.Random, number: int) -> Job:
        job_id = self.seed % 10_000 * 100_000 + number
        name = f"soak-{number:05d}"
        if rng.random() < 0.3:
            count = rng.randint(1, 60)
            obs_id = rng.randint(10_000, 99_999) * 100_000 + count
            job = Job(name, job_id, "observation", [], obs_id=obs_id)
        else:
            markers = ["", "", "", "", "", "_ERROR", "_LOST", "_DUP", "_DUP_ERROR", "_NEVER"]
            weights = [30, 0, 0, 0, 0, 3, 2, 2, 1, 1]
            paths = []
            for i in range(rng.randint(1, 40)):
                marker = rng.choices(markers, weights)[0]
                paths.append(f"mwa/soak/{job_id}/{job_id}_{i:03d}{marker}.fits")
            job = Job(name, job_id, "files", paths)
        if any("_NEVER" in p for p in job.paths) or rng.random() < 0.1:
            job.deadline = rng.randint(20, 60)
        if rng.random() < 0.12:
            job.delete_after = rng.uniform(0.5, 15)
        return job

    def manifest(self, job: Job) -> str:
        spec: dict[str, Any] = {
            "jobId": job.job_id,
            "callback": {"url": self.stack.env["CALLBACK_URL"] + f"/{job.job_id}"},
            "restageIntervalSeconds": 8,
        }
        if job.kind == "files":
            spec["files"] = job.paths
        else:
            spec["observation"] = {"obsId": job.obs_id}
        if job.deadline:
            spec["activeDeadlineSeconds"] = job.deadline
        body = {
            "apiVersion": "staging.mwatelescope.org/v1alpha1",
            "kind": "StagingJob",
            "metadata": {"name": job.name, "namespace": NS},
            "spec": spec,
        }
        return json.dumps(body)

    def create(self, job: Job, until: float) -> None:
        """Create the job, retrying while the API server is away; AlreadyExists is success."""
        while time.monotonic() < until:
            result = self.kubectl("create", "-f", "-", stdin=self.manifest(job))
            if result.returncode == 0 or "AlreadyExists" in result.stderr:
                job.created = True
                return
            time.sleep(1.0)

    def delete(self, job: Job, until: float) -> None:
        while time.monotonic() < until:
            result = self.kubectl("delete", "stagingjob", job.name, "-n", NS, "--wait=false")
            if result.returncode == 0 or "NotFound" in result.stderr:
                job.deleted = True
                return
            time.sleep(1.0)

    def run_jobs(self, rng: random.Random, end: float) -> None:
        pending_deletes: list[tuple[float, Job]] = []
        number = 0
        next_at = time.monotonic()
        while not self.stop.is_set() and time.monotonic() < end:
            now = time.monotonic()
            for due, job in [d for d in pending_deletes if d[0] <= now]:
                pending_deletes.remove((due, job))
                self.delete(job, now + 120)
            if now >= next_at:
                number += 1
                job = self.make_job(rng, number)
                self.create(job, now + 120)
                with self.lock:
                    self.jobs.append(job)
                if job.created and job.delete_after is not None:
                    pending_deletes.append((time.monotonic() + job.delete_after, job))
                next_at = now + rng.expovariate(1 / self.job_interval)
            time.sleep(0.1)
        for _due, job in pending_deletes:
            self.delete(job, time.monotonic() + 120)

    def run_flaky_callbacks(self, rng: random.Random, end: float) -> None:
        base = self.stack.env["CALLBACK_URL"].rsplit("/callback", 1)[0]
        while not self.stop.wait(rng.uniform(3, 10)) and time.monotonic() < end:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(
                    f"{base}/_control/fail",
                    json={"status": 500, "count": rng.randint(1, 3)},
                    timeout=5,
                )

    # ------------------------------------------------------------------- faults

    def component_for(self, role: str, rng: random.Random) -> str:
        if role == "operator":
            return OPERATOR
        if role == "bridge":
            return "kafka-bridge"
        if role == "scout":
            return rng.choice(self.stack.scout_names())
        return role

    def run_faults(self, rng: random.Random, end: float, mean_gap: float) -> None:
        while not self.stop.is_set():
            if self.stop.wait(rng.expovariate(1 / mean_gap)) or time.monotonic() >= end:
                return
            roll = rng.random()
            if roll < 0.6:
                target = self.component_for(rng.choice(KILLABLE), rng)
                fault = Fault("kill", target, time.monotonic())
                pause = rng.uniform(0.5, 5)
            elif roll < 0.85 or self.disk is None:
                target = self.component_for(rng.choice(STALLABLE), rng)
                fault = Fault("stall", target, time.monotonic())
                pause = rng.uniform(46, 60)
            else:
                fault = Fault("disk-full", "postgres", time.monotonic())
                pause = rng.uniform(10, 25)
            with self.lock:
                busy = {f.target for f in self.faults if not f.end}
                if fault.target in busy:
                    continue
                self.faults.append(fault)
            self.say(f"fault: {fault.kind} {fault.target} for {pause:.1f} s")
            try:
                self.inject(fault, pause)
            except Exception as exc:  # recorded and reported; the soak goes on
                fault.error = f"{type(exc).__name__}: {exc}"
                self.say(f"fault {fault.kind} {fault.target} failed: {fault.error}")
            fault.end = time.monotonic()

    def inject(self, fault: Fault, pause: float) -> None:
        stack = self.stack
        if fault.kind == "kill":
            stack.kill(fault.target, signal.SIGKILL)
            time.sleep(pause)
            self.restart(fault.target)
        elif fault.kind == "stall":
            self.signal_group(fault.target, signal.SIGSTOP)
            try:
                time.sleep(pause)
            finally:
                self.signal_group(fault.target, signal.SIGCONT)
        else:
            self.disk_full(pause)

    def signal_group(self, name: str, sig: int) -> None:
        """The whole process group: PostgreSQL's backends stall with their postmaster."""
        proc = procs.find(self.stack.root, name)
        if proc is None:
            raise RuntimeError(f"{name} is not running")
        os.killpg(proc.pid, sig)

    def restart(self, name: str) -> None:
        for attempt in range(5):
            try:
                if not self.stack.is_running(name):
                    self.stack.start(name)
                return
            except Exception as exc:
                self.say(f"restart of {name} failed ({exc}); attempt {attempt + 1}")
                time.sleep(2)
        raise RuntimeError(f"{name} did not come back")

    def disk_full(self, seconds: float) -> None:
        assert self.disk is not None
        ballast = self.disk / "ballast"
        chunk = b"\1" * (1 << 20)
        with contextlib.suppress(OSError), ballast.open("wb", buffering=0) as out:
            while True:
                out.write(chunk)
        try:  # the next WAL write needs a new segment, for which there is no room
            conn = self.superuser()
            with conn.cursor() as cur:
                cur.execute("SELECT pg_switch_wal()")
            conn.close()
        except psycopg2.Error as exc:
            self.say(f"pg_switch_wal: {str(exc).strip()[:200]}")
        time.sleep(seconds)
        ballast.unlink()
        time.sleep(1)
        self.restart("postgres")  # if the full disk made it give up (a PANIC on WAL write)

    def superuser(self) -> Any:
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=self.stack.port("postgres"),
            user="postgres",
            password=self.stack.secret("postgres-superuser-password"),
            dbname="postgres",
            connect_timeout=5,
        )
        conn.autocommit = True
        return conn

    def prepare_disk(self) -> None:
        """No recycled WAL segments: after a WAL switch on a full disk, PostgreSQL needs room."""
        conn = self.superuser()
        with conn.cursor() as cur:
            cur.execute("ALTER SYSTEM SET wal_recycle = off")
            cur.execute("ALTER SYSTEM SET min_wal_size = '32MB'")
            cur.execute("SELECT pg_reload_conf()")
        conn.close()

    # --------------------------------------------------------------- the soak

    def run(self) -> dict[str, Any]:
        rng = random.Random(self.seed)
        seeds = [rng.randrange(2**63) for _ in range(4)]
        started = time.monotonic()
        end = started + self.minutes * 60
        threads = [
            threading.Thread(target=self.run_jobs, args=(random.Random(seeds[0]), end)),
            threading.Thread(target=self.run_flaky_callbacks, args=(random.Random(seeds[1]), end)),
            threading.Thread(target=self.run_faults, args=(random.Random(seeds[2]), end, 12.0)),
            threading.Thread(target=self.run_faults, args=(random.Random(seeds[3]), end, 20.0)),
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        finally:
            self.stop.set()
        self.say("faults over; bringing everything back and letting the jobs finish")
        self.heal()
        return self.settle(time.monotonic() - started)

    def heal(self) -> None:
        for name in [n for n, _pid, _ports in self.stack.status()]:
            with contextlib.suppress(Exception):
                self.signal_group(name, signal.SIGCONT)
        if self.disk is not None:
            (self.disk / "ballast").unlink(missing_ok=True)
        for name in [
            "etcd",
            "kube-apiserver",
            "postgres",
            "kafka",
            "banksia",
            "haproxy",
            *self.stack.scout_names(),
            "kafka-bridge",
            OPERATOR,
        ]:
            self.restart(name)

    def settle(self, seconds: float) -> dict[str, Any]:
        created = [j for j in self.jobs if j.created]
        longest = max([j.deadline or 0 for j in created] + [0])
        deadline = time.monotonic() + max(240.0, longest + 120.0)
        objects: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            objects = self.objects()
            if objects is not None and all(self.done(j, objects) for j in created):
                break
            time.sleep(3)
        return self.check(created, objects, seconds)

    def objects(self) -> dict[str, dict[str, Any]]:
        result = self.kubectl("get", "stagingjobs", "-n", NS, "-o", "json", timeout=60)
        if result.returncode != 0:
            return {}
        return {o["metadata"]["name"]: o for o in json.loads(result.stdout)["items"]}

    @staticmethod
    def done(job: Job, objects: dict[str, dict[str, Any]]) -> bool:
        obj = objects.get(job.name)
        if obj is None:
            return job.deleted
        if job.deleted:
            return False  # the finalizer has not finished
        status = obj.get("status") or {}
        return status.get("phase") in FINAL_PHASES and bool(
            (status.get("callback") or {}).get("deliveredTime")
        )

    # ------------------------------------------------------------- invariants

    def check(
        self, created: list[Job], objects: dict[str, dict[str, Any]], seconds: float
    ) -> dict[str, Any]:
        base = self.stack.env["CALLBACK_URL"].rsplit("/callback", 1)[0]
        entries = httpx.get(f"{base}/_control/log", timeout=30).json()
        delivered: dict[int, list[dict[str, Any]]] = {}
        for entry in entries:
            body = entry.get("body")
            if entry.get("status") == 200 and isinstance(body, dict) and "job_id" in body:
                delivered.setdefault(int(body["job_id"]), []).append(entry)
        rows = self.db_rows()
        published = self.published()
        problems: list[str] = []
        not_final = [j.name for j in created if not self.done(j, objects)]
        if not_final:
            problems.append(f"{len(not_final)} jobs neither final nor deleted: {not_final[:10]}")
        duplicates, explained = [], []
        count_mismatch, lost = [], []
        files_total = 0
        pending_explained = 0
        for job in created:
            obj = objects.get(job.name)
            got = delivered.get(job.job_id, [])
            if len(got) > 1:
                duplicates.append(job.job_id)
                if self.explains_duplicate(got):
                    explained.append(job.job_id)
            if obj is None or job.deleted:
                continue
            row = rows.get(job.job_id)
            if row is None or not got:
                count_mismatch.append(f"{job.name}: no row or no callback")
                continue
            files_total += row["total"]
            body = got[0]["body"]
            counts = (body["total_files"], body["ready_files"], body["error_files"])
            if counts != (row["total"], row["ready"], row["error"]):
                count_mismatch.append(f"{job.name}: callback {counts} != db {row}")
            if body["return_code"] in (0, 5):
                ready = sum(1 for p in row["paths"] if published.get(p) == "ok")
                failed = sum(1 for p in row["paths"] if published.get(p) == "error")
                lost_files = [p for p in row["paths"] if p not in published and "_LOST" not in p]
                expected = (
                    row["total"],
                    ready + sum(1 for p in row["paths"] if p not in published and "_LOST" in p),
                    failed,
                )
                if counts != expected:
                    count_mismatch.append(
                        f"{job.name}: callback {counts} != published {expected}"
                        f" (unpublished: {lost_files[:3]})"
                    )
            for path in row["pending_published"]:
                if self.explains_late(self.published_at[path], row["completion"]):
                    pending_explained += 1
                else:
                    ago = row["completion"] - self.published_at[path]
                    lost.append(
                        f"{job.name} (code {row['code']}): {path} published {ago:.1f} s"
                        " before the job ended"
                    )
        unexplained = sorted(set(duplicates) - set(explained))
        if count_mismatch:
            problems.append(f"{len(count_mismatch)} count mismatches: {count_mismatch[:5]}")
        if unexplained:
            problems.append(f"unexplained duplicate callbacks for jobs {unexplained[:10]}")
        if lost:
            problems.append(f"{len(lost)} published files still pending: {lost[:5]}")
        kinds = Counter(
            f"{f.kind}:{f.target.split('-')[0] if f.target.startswith('scout') else f.target}"
            for f in self.faults
        )
        phases = Counter(
            ((objects.get(j.name) or {}).get("status") or {}).get("phase", "deleted")
            for j in created
        )
        return {
            "seed": self.seed,
            "minutes": self.minutes,
            "seconds": round(seconds, 1),
            "jobs": len(created),
            "jobs_by_end": dict(phases),
            "deleted_mid_flight": sum(1 for j in created if j.deleted),
            "files": files_total,
            "faults": len(self.faults),
            "faults_by_kind": dict(sorted(kinds.items())),
            "fault_errors": [f"{f.kind} {f.target}: {f.error}" for f in self.faults if f.error],
            "callbacks_delivered": sum(len(v) for v in delivered.values()),
            "duplicate_callbacks": len(duplicates),
            "duplicates_explained": len(explained),
            "paths_published": len(published),
            "pending_explained": pending_explained,
            "problems": problems,
        }

    def explains_duplicate(self, got: list[dict[str, Any]]) -> bool:
        """A second delivery is at-least-once if the operator or the database had a fault then."""
        first, last = got[0]["time"], got[-1]["time"]
        wall = time.time() - time.monotonic()
        for fault in self.faults:
            start, stop = fault.start + wall, (fault.end or time.monotonic()) + wall
            if fault.target in (OPERATOR, "postgres") and start <= last and stop >= first - 15:
                return True
        return False

    def explains_late(self, published: float, completion: float | None) -> bool:
        """A file pending in an ended job: was it published while its job could still use it,
        with no fault of the path message -> database between then and the job's end?"""
        if completion is None or published > completion - 5:
            return True  # published too late for the job: not a loss
        wall = time.time() - time.monotonic()
        for fault in self.faults:
            start, stop = fault.start + wall, (fault.end or time.monotonic()) + wall
            # A dead or stalled group member keeps its partitions until its Kafka session
            # times out (45 s) and the group rebalances: the fault's shadow lasts that long.
            stop += KAFKA_SESSION_SECONDS + 15
            if fault.target in ("kafka-bridge", "kafka", "postgres") and (
                start <= completion and stop >= published - 5
            ):
                return True
        return False

    def db_rows(self) -> dict[int, dict[str, Any]]:
        with psycopg2.connect(self.stack.env["DATABASE_URL"]) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT j.id, j.job_id, j.total_files, j.ready_files, j.error_files,"
                " extract(epoch FROM j.completion_time), j.return_code"
                " FROM jobs j WHERE j.namespace = %s",
                (NS,),
            )
            rows = {
                job_id: {
                    "id": pk,
                    "total": t,
                    "ready": r,
                    "error": e,
                    "paths": [],
                    "pending_published": [],
                    "completion": None if _done is None else float(_done),
                    "code": code,
                }
                for pk, job_id, t, r, e, _done, code in cur.fetchall()
            }
            by_pk = {row["id"]: row for row in rows.values()}
            cur.execute(
                "SELECT f.job, f.path, f.state FROM job_files f JOIN jobs j ON j.id = f.job"
                " WHERE j.namespace = %s",
                (NS,),
            )
            published = self.published()
            for pk, path, state in cur.fetchall():
                row = by_pk.get(pk)
                if row is None:
                    continue
                row["paths"].append(path)
                if state == 0 and path in published:
                    row["pending_published"].append(path)
        conn.close()
        return rows

    _published: dict[str, str] | None = None
    published_at: dict[str, float] = field(default_factory=dict)

    def published(self) -> dict[str, str]:
        """path -> "ok" or "error": every message the simulator got onto the topic."""
        if self._published is not None:
            return self._published
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.stack.env["KAFKA_BOOTSTRAP"],
                "group.id": f"soak-check-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
        topic = self.stack.env["KAFKA_TOPIC"]
        metadata = consumer.list_topics(topic, timeout=30)
        parts = []
        for number in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, number), timeout=30)
            parts.append((number, low, high))
        consumer.assign([TopicPartition(topic, n, low) for n, low, _high in parts])
        remaining = {n: high for n, _low, high in parts if high > _low}
        found: dict[str, str] = {}
        deadline = time.monotonic() + 120
        while remaining and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=1.0):
                if message.error():
                    continue
                with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
                    value = json.loads(message.value() or b"")
                    found[value["Filename"]] = "error" if value.get("Error") else "ok"
                    at = message.timestamp()[1] / 1000
                    name = value["Filename"]
                    self.published_at[name] = min(at, self.published_at.get(name, at))
                offset, partition = message.offset() or 0, message.partition() or 0
                if offset + 1 >= remaining.get(partition, 0):
                    remaining.pop(partition, None)
        consumer.close()
        self._published = found
        return found


def mount_disk(root: Path, size: str) -> tuple[Path | None, str]:
    """A size-limited tmpfs for PostgreSQL's directory; (None, why) when not possible."""
    target = root / "postgres"
    target.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return None, "not root: no mount, so no disk-full fault"
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(target)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        return None, f"mount failed ({result.stderr.strip()}): no disk-full fault"
    return target, f"PostgreSQL's directory on a {size} tmpfs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 10)))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--job-interval", type=float, default=1.5, help="mean seconds between jobs")
    parser.add_argument("--disk-size", default="768m", help="PostgreSQL's tmpfs")
    args = parser.parse_args(argv)
    env_seed = os.environ.get("SOAK_SEED")
    seed = (
        args.seed
        if args.seed is not None
        else int(env_seed)
        if env_seed
        else random.randrange(10**9)
    )
    replay = f"make soak SOAK_MINUTES={args.minutes:g} SOAK_SEED={seed}"
    print(json.dumps({"seed": seed, "replay": replay}), flush=True)

    root = Path(tempfile.mkdtemp(prefix="mwa-soak-"))
    disk, disk_note = mount_disk(root, args.disk_size)
    stack = Stack(root, services=("kafka-bridge",))
    soak = Soak(stack, seed, args.minutes, args.job_interval, disk=disk)
    soak.say(f"seed {seed}; stack in {root}; {disk_note}")
    result: dict[str, Any] = {"seed": seed}
    try:
        stack.up()
        if disk is not None:
            soak.prepare_disk()
        stack.spawn(OPERATOR, "operator", OPERATOR_ENV)
        soak.kubectl("create", "namespace", NS)
        result = soak.run()
    except Exception as exc:
        result["problems"] = [f"the soak itself failed: {type(exc).__name__}: {exc}"]
    finally:
        with contextlib.suppress(Exception):
            stack.down()
        left = stack.leftovers()
        if disk is not None:
            umount = subprocess.run(["umount", str(disk)], capture_output=True, text=True)
            if umount.returncode != 0:
                left.append(f"tmpfs {disk}: {umount.stderr.strip()}")
        if result.get("problems"):  # the logs outlive the stack, for the replay's reader
            kept = Path(tempfile.mkdtemp(prefix="mwa-soak-logs-"))
            with contextlib.suppress(OSError):
                shutil.copytree(root / "logs", kept / "logs")
                result["logs_kept"] = str(kept / "logs")
        shutil.rmtree(root, ignore_errors=True)
        if root.exists():
            left.append(f"directory {root}")
    result["disk_full"] = disk_note
    result["leaked"] = left
    if left:
        result.setdefault("problems", []).append(f"left behind: {left}")
    result["ok"] = not result.get("problems")
    print(json.dumps(result, sort_keys=True), flush=True)
    if not result["ok"]:
        print(f"soak FAILED with seed {seed}; replay: {replay}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
