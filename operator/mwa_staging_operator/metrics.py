"""The operator's Prometheus metrics (served on ``/metrics`` by ``observability.serve_http``).

Names are prefixed ``mwa_staging_operator_``. Jobs by phase is a gauge the
scheduler refreshes from the database (the source of truth) at most every
``JOBS_REFRESH_SECONDS``, so a scrape never touches the database.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from mwa_staging.vocabulary import PHASE_OF_STATE

JOBS_REFRESH_SECONDS = 15.0

JOBS = Gauge("mwa_staging_operator_jobs", "StagingJobs recorded, by phase.", ["phase"])
SCOUT_CALLS = Counter(
    "mwa_staging_operator_scout_calls_total",
    "HTTP requests to the Scout API, by endpoint and outcome (ok, HTTP status, error).",
    ["endpoint", "outcome"],
)
SCOUT_LATENCY = Histogram(
    "mwa_staging_operator_scout_call_seconds",
    "Latency of HTTP requests to the Scout API, by endpoint.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CALLBACKS = Counter(
    "mwa_staging_operator_callbacks_total",
    "Callback attempts, by outcome (delivered, failed, gave_up).",
    ["outcome"],
)
FILES_RESOLVED = Counter(
    "mwa_staging_operator_files_resolved_total", "Files recorded for new jobs."
)
JOBS_CREATED = Counter(
    "mwa_staging_operator_jobs_created_total",
    "StagingJobs taken on, by result (accepted, duplicate, failed with a code).",
    ["result"],
)
RESTAGED_FILES = Counter(
    "mwa_staging_operator_restage_files_total",
    "Files seen by the restage pass, by result (on_disk, restaged).",
    ["result"],
)
SCHEDULER_PASSES = Counter(
    "mwa_staging_operator_scheduler_passes_total", "Passes of the scheduler loop."
)


def observe_scout(endpoint: str, outcome: str, seconds: float) -> None:
    """The Scout client's observer."""
    SCOUT_CALLS.labels(endpoint, outcome).inc()
    SCOUT_LATENCY.labels(endpoint).observe(seconds)


def set_job_counts(counts: dict[str, int]) -> None:
    """Refresh the jobs-by-phase gauge (every phase present, zero included)."""
    for state, phase in PHASE_OF_STATE.items():
        JOBS.labels(phase.value).set(counts.get(state, 0))
