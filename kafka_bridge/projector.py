"""The status projector: a thread that writes dirty jobs' status onto their StagingJobs.

The consumer thread never talks to the Kubernetes API: it only commits rows
(bumping ``jobs.version``) and wakes this thread, so an API server outage never
slows consumption. This thread, with its own database connection, calls
:func:`mwa_staging.projection.project_dirty`, which patches each job whose row
is newer than its status, at most once per ``min_interval`` unless the job just
finished (a completion is shown at once). The dirty mark (``version >
projected_version``) is cleared only by a successful patch, so after an outage
the marks are still there and status converges when the API server is back.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import psycopg2
from psycopg2.extensions import connection as Connection

from kafka_bridge import metrics
from kafka_bridge.ratelimit import RateLimitedLog
from kafka_bridge.recorder import Backoff
from mwa_staging.db import status_queries
from mwa_staging.db.connect import connect
from mwa_staging.kube import StagingJobs
from mwa_staging.projection import Outcome, project_dirty

log = logging.getLogger(__name__)

# Jobs projected per database round; more are taken in the next round at once.
PASS_LIMIT = 200
# Longest sleep without a wake-up: picks up marks left by other processes.
IDLE_RECHECK_S = 2.0
# Pause when a pass made no progress because other projectors held the jobs.
BUSY_PAUSE_S = 0.05


def _outcome_label(outcome: Outcome) -> str:
    if outcome.busy:
        return "busy"
    if outcome.patched:
        return "patched"
    return "gone"


class Projector(threading.Thread):
    """Coalescing status writer; :meth:`wake` after every committed batch."""

    def __init__(self, dsn: str, jobs: StagingJobs, *, min_interval_s: float) -> None:
        super().__init__(name="projector", daemon=True)
        self._dsn = dsn
        self._jobs = jobs
        self._min_interval = min_interval_s
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._conn: Connection | None = None
        self._backoff = Backoff(0.2, 15.0)
        self._rlog = RateLimitedLog(log, 15.0)
        self._busy = 0

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to finish its current pass and exit; wait up to ``timeout``."""
        self._stopping.set()
        self._wake.set()
        self.join(timeout)

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                import time  # DBG
                _t0 = time.perf_counter()  # DBG
                delay = self._pass()
                log.info("DBG pass %.1f ms patches=%s", (time.perf_counter() - _t0) * 1e3, self._npatched)  # DBG
            except psycopg2.Error as exc:
                self._drop()
                self._rlog.warning("db", "projector: database error, retrying: %s", exc)
            except Exception as exc:  # the API server, network, TLS: keep the marks, retry
                metrics.PATCHES.labels("error").inc()
                self._rlog.warning("api", "projector: status patch failed, will retry: %s", exc)
                self._rollback()
            else:
                self._backoff.reset()
                self._wake.wait(delay)
                self._wake.clear()
                continue
            # Failing: back off, and do not let the consumer's wake-ups shorten it.
            self._stopping.wait(self._backoff.next())
            self._wake.clear()
        self._drop()

    def _on_outcome(self, outcome: Outcome) -> None:
        metrics.PATCHES.labels(_outcome_label(outcome)).inc()
        if outcome.busy:
            self._busy += 1

    def _pass(self) -> float:
        """Project what is due; return how long to sleep before the next pass."""
        conn = self._connection()
        self._count_dirty(conn)  # first: the gauge must show marks piling up during an outage
        while not self._stopping.is_set():
            self._busy = 0
            patched = project_dirty(
                conn,
                self._jobs,
                min_interval_s=self._min_interval,
                limit=PASS_LIMIT,
                on_outcome=self._on_outcome,
            )
            self._npatched = patched  # DBG
            if patched + self._busy < PASS_LIMIT:
                break
        self._count_dirty(conn)
        with conn.cursor() as cur:
            due = status_queries.next_dirty_due(cur, min_interval_s=self._min_interval)
        conn.commit()
        if self._busy:
            return BUSY_PAUSE_S
        return IDLE_RECHECK_S if due is None else min(max(due, 0.01), IDLE_RECHECK_S)

    @staticmethod
    def _count_dirty(conn: Connection) -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM jobs WHERE version > projected_version")
            row = cur.fetchone()
        conn.commit()
        metrics.DIRTY_JOBS.set(row[0] if row else 0)

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._dsn, application_name="mwa-kafka-bridge-projector")
        return self._conn

    def _rollback(self) -> None:
        if self._conn is not None:
            try:
                self._conn.rollback()
            except psycopg2.Error:
                self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
        self._conn = None
