"""The HTTP gateway's SQL: reads of jobs, files, reports and heartbeats (one namespace).

The gateway writes nothing about jobs (the operator owns them); the only
statement that changes a row is the expiry of old failed-job reports.

A job id can have several rows in a namespace: the live job holding it, older
finished jobs that used it before (the original freed an id once its callback
was delivered) and refused duplicates (``DuplicateJobId``, never shown). "The
job N" is the live row if there is one, else the newest finished one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg2.extensions import cursor as Cursor

from mwa_staging.db.rows import JobRow
from mwa_staging.vocabulary import FINISHED_STATES, Reason

_COLS = JobRow.columns()
_DUPLICATE = str(Reason.DUPLICATE_JOB_ID)
_FINISHED = [str(s) for s in FINISHED_STATES]


def live_job(cur: Cursor, namespace: str, job_id: int) -> JobRow | None:
    """The row holding ``job_id`` in ``namespace`` now, if any."""
    cur.execute(
        f"SELECT {_COLS} FROM jobs WHERE namespace = %s AND job_id = %s AND live",
        (namespace, job_id),
    )
    row = cur.fetchone()
    return JobRow.from_row(row) if row else None


def find_job(cur: Cursor, namespace: str, job_id: int) -> JobRow | None:
    """The job ``job_id`` of ``namespace``: the live row, else the newest (no duplicates)."""
    cur.execute(
        f"SELECT {_COLS} FROM jobs WHERE namespace = %s AND job_id = %s"
        " AND reason IS DISTINCT FROM %s ORDER BY live DESC, id DESC LIMIT 1",
        (namespace, job_id, _DUPLICATE),
    )
    row = cur.fetchone()
    return JobRow.from_row(row) if row else None


def job_by_uid(cur: Cursor, uid: str) -> JobRow | None:
    """The row the operator recorded for the StagingJob with this uid, if any yet."""
    cur.execute(f"SELECT {_COLS} FROM jobs WHERE uid = %s", (uid,))
    row = cur.fetchone()
    return JobRow.from_row(row) if row else None


def job_files(cur: Cursor, job_pk: int) -> list[tuple[str, int, datetime | None]]:
    """(path, state, updated_at) of every file of the job, in path order."""
    cur.execute(
        "SELECT path, state, updated_at FROM job_files WHERE job = %s ORDER BY path", (job_pk,)
    )
    return [(str(p), int(s), t) for p, s, t in cur.fetchall()]


@dataclass(frozen=True)
class ListedJob:
    """One line of /get_joblist."""

    job_id: int
    created: datetime
    ready_files: int
    total_files: int
    completed: bool
    last_file_time: datetime | None
    error_files: int
    first_path: str | None


def job_list(cur: Cursor, namespace: str) -> list[ListedJob]:
    """Every job of the namespace (one per job id, as :func:`find_job` picks), by job id."""
    cur.execute(
        "SELECT DISTINCT ON (j.job_id) j.job_id, j.created_at, j.ready_files, j.total_files,"
        " j.state = ANY(%s), j.last_file_time, j.error_files,"
        " (SELECT f.path FROM job_files f WHERE f.job = j.id ORDER BY f.path LIMIT 1)"
        " FROM jobs j WHERE j.namespace = %s AND j.reason IS DISTINCT FROM %s"
        " ORDER BY j.job_id, j.live DESC, j.id DESC",
        (_FINISHED, namespace, _DUPLICATE),
    )
    return [ListedJob(*row) for row in cur.fetchall()]


@dataclass(frozen=True)
class Totals:
    """Job and file counts of /get_stats."""

    completed_jobs: int
    incomplete_jobs: int
    ready_files: int
    error_files: int
    waiting_files: int


def totals(cur: Cursor, namespace: str) -> Totals:
    """Counts over the namespace's jobs (refused duplicates left out), from the counters."""
    cur.execute(
        "SELECT count(*) FILTER (WHERE state = ANY(%(done)s)),"
        " count(*) FILTER (WHERE NOT state = ANY(%(done)s)),"
        " coalesce(sum(ready_files), 0), coalesce(sum(error_files), 0),"
        " coalesce(sum(total_files - ready_files - error_files)"
        "   FILTER (WHERE NOT state = ANY(%(done)s)), 0)"
        " FROM jobs WHERE namespace = %(ns)s AND reason IS DISTINCT FROM %(dup)s",
        {"done": _FINISHED, "ns": namespace, "dup": _DUPLICATE},
    )
    row = cur.fetchone()
    assert row is not None
    return Totals(*(int(v) for v in row))


@dataclass(frozen=True)
class Heartbeat:
    """The Kafka bridge's heartbeat, over every replica (the original's kafkad heartbeat)."""

    last_update: datetime | None
    last_message: datetime | None
    broker_ok: bool


def heartbeat(cur: Cursor) -> Heartbeat:
    """Latest heartbeat of any replica; broker reachable if the latest-updated one says so."""
    cur.execute(
        "SELECT max(updated_at), max(last_message),"
        " coalesce((SELECT broker_ok FROM bridge_heartbeat ORDER BY updated_at DESC LIMIT 1),"
        " false) FROM bridge_heartbeat"
    )
    row = cur.fetchone()
    assert row is not None
    return Heartbeat(row[0], row[1], bool(row[2]))


# --- failed-job reports (migration 0005) ----------------------------------------------


@dataclass(frozen=True)
class Report:
    """A failed-job report's header."""

    id: int
    job_id: int
    report_time: datetime
    total_files: int
    error_files: int


def reports(cur: Cursor, namespace: str, keep_days: int) -> list[Report]:
    """The newest report of each job id of the namespace younger than ``keep_days``."""
    cur.execute(
        "SELECT DISTINCT ON (job_id) id, job_id, report_time, total_files, error_files"
        " FROM failed_reports WHERE namespace = %s"
        " AND report_time > now() - make_interval(days => %s)"
        " ORDER BY job_id, report_time DESC, id DESC",
        (namespace, keep_days),
    )
    return [Report(*row) for row in cur.fetchall()]


def report(cur: Cursor, namespace: str, job_id: int, keep_days: int) -> Report | None:
    """The newest report of ``job_id`` younger than ``keep_days``."""
    cur.execute(
        "SELECT id, job_id, report_time, total_files, error_files FROM failed_reports"
        " WHERE namespace = %s AND job_id = %s"
        " AND report_time > now() - make_interval(days => %s)"
        " ORDER BY report_time DESC, id DESC LIMIT 1",
        (namespace, job_id, keep_days),
    )
    row = cur.fetchone()
    return Report(*row) if row else None


def report_paths(cur: Cursor, report_id: int) -> list[str]:
    """The failed or never-staged paths of a report, in path order."""
    cur.execute(
        "SELECT path FROM failed_report_files WHERE report = %s ORDER BY path", (report_id,)
    )
    return [str(row[0]) for row in cur.fetchall()]


def expire_reports(cur: Cursor, keep_days: int) -> int:
    """Delete reports older than ``keep_days`` (their files cascade); return how many."""
    cur.execute(
        "DELETE FROM failed_reports WHERE report_time <= now() - make_interval(days => %s)",
        (keep_days,),
    )
    return int(cur.rowcount or 0)
