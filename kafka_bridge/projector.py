"""The status projector: a thread that writes dirty jobs' status onto their StagingJobs.

The consumer thread never talks to the Kubernetes API: it only commits rows
(bumping ``jobs.version``) and wakes this thread, so an API server outage never
slows consumption. This thread, with its own database connection, reads the
jobs whose row is newer than their status (``status_queries.dirty_jobs``) and
writes each with :func:`mwa_staging.projection.write_status`, at most once per
``min_interval`` unless the job just finished (a completion is shown at once).
The dirty mark (``version > projected_version``) is cleared only by a
successful patch, so after an outage the marks are still there and status
converges when the API server is back.

Completions jump the queue: the consumer passes the ids of the jobs a batch
completed to :meth:`Projector.wake`, and this thread patches them before
anything else, also in the middle of a round of coalesced progress patches (a
burst touching many jobs makes rounds of many API calls). A job's Complete
status is thus one status patch after its batch committed, not one round.
Completions are written ``writers`` at a time (``BRIDGE_COMPLETION_WRITERS``),
each writer with its own database connection: a write holds its job's lock
while the API server answers, and one at a time the projector managed a few
dozen completions a second on a loaded machine, so with thousands of jobs
finishing together their Complete status trailed the database by minutes
(issue 12's 5,000-job run).

Progress patches are also bounded all jobs together: with ``patch_rate`` per
second and N dirty jobs, each job waits ``max(min_interval, N / patch_rate)``
between progress patches. A burst over twenty jobs at once then costs the API
server (and this process) a steady few patches a second instead of forty,
which on a small machine is CPU the database and the consumer need.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import psycopg2
from psycopg2.extensions import connection as Connection

from kafka_bridge import metrics
from mwa_staging.db import status_queries
from mwa_staging.db.connect import KeptConnection
from mwa_staging.kube import StagingJobs
from mwa_staging.observability import RateLimitedLog
from mwa_staging.projection import Outcome, write_status
from mwa_staging.retry import Backoff

log = logging.getLogger(__name__)

# Jobs projected per database round; more are taken in the next round at once.
PASS_LIMIT = 200
# Longest sleep without a wake-up: picks up marks left by other processes.
IDLE_RECHECK_S = 2.0
# Pause when a pass made no progress because other projectors held the jobs.
BUSY_PAUSE_S = 0.05
#: Pauses while the database or the API server fails.
FAILURE_BACKOFF = Backoff(0.2, 15.0, jitter=0.2)


def _outcome_label(outcome: Outcome) -> str:
    if outcome.busy:
        return "busy"
    if outcome.patched:
        return "patched"
    return "gone"


class Projector(threading.Thread):
    """Coalescing status writer; :meth:`wake` after every committed batch."""

    def __init__(
        self,
        dsn: str,
        jobs: StagingJobs,
        *,
        min_interval_s: float,
        patch_rate: float | None = None,
        writers: int = 1,
    ) -> None:
        super().__init__(name="projector", daemon=True)
        self._jobs = jobs
        self._writers = max(1, writers)
        # The completion writers' connections (the thread's own is for its queries).
        self._writer_conns: queue.SimpleQueue[KeptConnection] = queue.SimpleQueue()
        for _ in range(self._writers):
            self._writer_conns.put(
                KeptConnection(dsn, application_name="mwa-kafka-bridge-projector")
            )
        self._pool = ThreadPoolExecutor(self._writers, thread_name_prefix="projector-write")
        self._min_interval = min_interval_s
        self._patch_rate = patch_rate
        self._interval = min_interval_s  # the coalescing interval of this pass
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._conn = KeptConnection(dsn, application_name="mwa-kafka-bridge-projector")
        self._delays = FAILURE_BACKOFF.delays()
        self._rlog = RateLimitedLog(log, 15.0)
        self._busy = 0
        self._lock = threading.Lock()
        self._urgent: set[int] = set()  # jobs just completed: patched before anything else

    def wake(self, completed: Iterable[int] = ()) -> None:
        """A batch committed; ``completed``: the jobs it finished (projected first)."""
        if completed:
            with self._lock:
                self._urgent.update(completed)
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to finish its current pass and exit; wait up to ``timeout``."""
        self._stopping.set()
        self._wake.set()
        self.join(timeout)

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                delay = self._pass()
            except psycopg2.Error as exc:
                self._conn.drop()
                self._rlog.warning("db", "projector: database error, retrying: %s", exc)
            except Exception as exc:  # the API server, network, TLS: keep the marks, retry
                metrics.PATCHES.labels("error").inc()
                self._rlog.warning("api", "projector: status patch failed, will retry: %s", exc)
                self._conn.rollback()
            else:
                self._delays.reset()
                self._wake.wait(delay)
                self._wake.clear()
                continue
            # Failing: back off, and do not let the consumer's wake-ups shorten it.
            self._stopping.wait(next(self._delays))
            self._wake.clear()
        self._pool.shutdown(wait=True)
        self._conn.drop()
        while not self._writer_conns.empty():
            self._writer_conns.get().drop()

    def _on_outcome(self, outcome: Outcome) -> None:
        metrics.PATCHES.labels(_outcome_label(outcome)).inc()
        if outcome.busy:
            self._busy += 1

    def _write(self, conn: Connection, job_pk: int) -> bool:
        outcome = write_status(conn, self._jobs, job_pk)
        self._on_outcome(outcome)
        return outcome.patched

    def _write_with_own_connection(self, job_pk: int) -> Outcome:
        """One completion, on a writer's connection (run in the writers' pool)."""
        kept = self._writer_conns.get()
        try:
            return write_status(kept.get(), self._jobs, job_pk)
        except psycopg2.Error:
            kept.drop()
            raise
        finally:
            self._writer_conns.put(kept)

    def _write_completions(self, job_pks: list[int]) -> None:
        """Write these jobs' status, ``writers`` at a time; the first error is raised."""
        for outcome in self._pool.map(self._write_with_own_connection, job_pks):
            self._on_outcome(outcome)

    def _project_urgent(self, conn: Connection) -> None:
        """Patch the jobs completed since the last call whose status is still behind."""
        with self._lock:
            if not self._urgent:
                return
            urgent = sorted(self._urgent)
            self._urgent.clear()
        try:
            with conn.cursor() as cur:
                due = status_queries.still_dirty(cur, urgent)
            conn.commit()
            self._write_completions(due)
        except Exception:
            with self._lock:  # not lost: retried first after the backoff
                self._urgent.update(urgent)
            raise

    def _pass(self) -> float:
        """Project what is due; return how long to sleep before the next pass."""
        conn = self._conn.get()
        dirty_count = self._count_dirty(conn)  # first: the gauge shows marks piling up in an outage
        self._interval = self._min_interval
        if self._patch_rate:
            self._interval = max(self._min_interval, dirty_count / self._patch_rate)
        self._busy = 0
        self._project_urgent(conn)
        while not self._stopping.is_set():
            with conn.cursor() as cur:
                dirty = status_queries.dirty_jobs(
                    cur, min_interval_s=self._interval, limit=PASS_LIMIT
                )
            conn.commit()
            patched = 0
            for job_pk in dirty:
                self._project_urgent(conn)  # completions do not wait for the round
                if self._write(conn, job_pk):
                    patched += 1
            if len(dirty) < PASS_LIMIT or not patched:
                break
        self._project_urgent(conn)
        with conn.cursor() as cur:
            dirty_count, due = status_queries.dirty_summary(cur, min_interval_s=self._interval)
        conn.commit()
        metrics.DIRTY_JOBS.set(dirty_count)
        if self._busy:
            return BUSY_PAUSE_S
        return IDLE_RECHECK_S if due is None else min(max(due, 0.01), IDLE_RECHECK_S)

    def _count_dirty(self, conn: Connection) -> int:
        with conn.cursor() as cur:
            count, _due = status_queries.dirty_summary(cur, min_interval_s=self._min_interval)
        conn.commit()
        metrics.DIRTY_JOBS.set(count)
        return count
