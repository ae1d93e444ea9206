"""The original API's answers, built from database rows (pure functions, no I/O).

Times are unix seconds: integers where the original sent integers
(``GET /staging``), floats or null in ``/get_joblist`` as the original did.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from mwa_staging.db.gateway_queries import Heartbeat, ListedJob, Report, Totals
from mwa_staging.db.rows import JobRow
from mwa_staging.scout import CacheState
from mwa_staging.vocabulary import FINISHED_STATES, FileState


def seconds(value: datetime | None) -> int:
    """Unix seconds as an int (0 for none)."""
    return int(value.timestamp()) if value is not None else 0


def float_seconds(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def job_status(
    job: JobRow, files: Iterable[tuple[str, int, datetime | None]] | None
) -> dict[str, Any]:
    """``GET /staging``: counts, and per-file ``[ready, error, readytime]`` when asked."""
    answer: dict[str, Any] = {
        "job_id": job.job_id,
        "created": seconds(job.created_at),
        "completed": job.state in FINISHED_STATES,
        "total_files": job.total_files,
        "ready_files": job.ready_files,
        "error_files": job.error_files,
        "last_readytime": seconds(job.last_file_time),
        "files": {},
    }
    if files is not None:
        answer["files"] = {
            path: [
                state == FileState.READY,
                state == FileState.ERROR,
                seconds(updated) if state != FileState.PENDING and updated is not None else None,
            ]
            for path, state, updated in files
        }
    return answer


def unrecorded_status(job_id: int, created: datetime) -> dict[str, Any]:
    """``GET /staging`` of a job the operator has not recorded yet (just accepted)."""
    return {
        "job_id": job_id,
        "created": seconds(created),
        "completed": False,
        "total_files": 0,
        "ready_files": 0,
        "error_files": 0,
        "last_readytime": 0,
        "files": {},
    }


def job_list(jobs: Sequence[ListedJob]) -> dict[str, Any]:
    """``GET /get_joblist``."""
    return {
        "jobs": {
            str(j.job_id): [
                j.job_id,
                float_seconds(j.created),
                j.ready_files,
                j.total_files,
                j.completed,
                float_seconds(j.last_file_time),
                j.error_files,
                j.first_path or "",
            ]
            for j in jobs
        }
    }


def stats(totals: Totals, beat: Heartbeat, cache: CacheState | None) -> dict[str, Any]:
    """``GET /get_stats``; the cache fields keep their defaults when Scout did not answer."""
    return {
        "kafkad_heartbeat": float_seconds(beat.last_update) or 0.0,
        "kafka_alive": beat.broker_ok,
        "last_message": float_seconds(beat.last_message) or 0.0,
        "completed_jobs": totals.completed_jobs,
        "incomplete_jobs": totals.incomplete_jobs,
        "ready_files": totals.ready_files,
        "error_files": totals.error_files,
        "waiting_files": totals.waiting_files,
        "availdatasz": cache.available if cache else 0,
        "totdatasz": cache.total if cache else 0,
        "releaseable": cache.releasable if cache else 0,
        "nonreleaseable": cache.non_releasable if cache else 0,
        "pending": cache.pending if cache else 0,
        "health": cache.health if cache else 0,
        "healthstatus": cache.health_status if cache else "",
    }


def failed_job_list(reports: Sequence[Report]) -> dict[str, Any]:
    """``GET /get_failed_joblist``."""
    return {
        "jobs": {str(r.job_id): [r.job_id, seconds(r.report_time), 0, 0, 0, 0, 0] for r in reports}
    }


def failed_job(report: Report, paths: Sequence[str]) -> dict[str, Any]:
    """``GET /get_failed_job``: the ``GET /staging`` shape, every listed file failed."""
    when = seconds(report.report_time)
    return {
        "job_id": report.job_id,
        "created": when,
        "completed": True,
        "total_files": report.total_files,
        "ready_files": report.total_files - report.error_files,
        "error_files": report.error_files,
        "last_readytime": when,
        "files": {path: [False, True, when] for path in paths},
    }
