"""The gateway's Prometheus metrics (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Paths counted under their own name (the rest as "other", so labels stay bounded).
ENDPOINTS = frozenset(
    {
        "/staging", "/get_joblist", "/get_stats", "/filestatus", "/get_failed_joblist",
        "/get_failed_job", "/ping", "/healthz", "/metrics",
    }
)  # fmt: skip
REQUESTS = Counter(
    "mwa_staging_gateway_requests_total",
    "HTTP API requests by endpoint and status code.",
    ["endpoint", "code"],
)
AUTH_FAILURES = Counter(
    "mwa_staging_gateway_auth_failures_total",
    "Requests refused with 401, by kind (missing or wrong credentials).",
    ["kind"],
)
JOBS = Counter(
    "mwa_staging_gateway_jobs_total",
    "POST /staging outcomes (accepted, duplicate, invalid, error).",
    ["outcome"],
)
SUBMIT_SECONDS = Histogram(
    "mwa_staging_gateway_submit_seconds",
    "Time to answer POST /staging.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
FSCACHE_BYTES = Gauge(
    "mwa_staging_scout_fscache_bytes",
    "The archive's disk cache (Scout /v1/fscache), by kind: available, total, releaseable,"
    " nonreleaseable, pending.",
    ["kind"],
)
FSCACHE_HEALTH = Gauge(
    "mwa_staging_scout_fscache_health",
    "The archive's cache health: 0 unknown, 1 ok, 2 warning, 3 error.",
)
FSCACHE_UP = Gauge("mwa_staging_scout_fscache_up", "1 when the latest /v1/fscache read succeeded.")
FSCACHE_LAST_SUCCESS = Gauge(
    "mwa_staging_scout_fscache_last_success_timestamp_seconds",
    "Unix time of the latest successful /v1/fscache read.",
)
SCOUT_CALLS = Counter(
    "mwa_staging_gateway_scout_calls_total",
    "Scout calls the gateway made, by endpoint and outcome.",
    ["endpoint", "outcome"],
)


def observe_scout(endpoint: str, outcome: str, seconds: float) -> None:
    SCOUT_CALLS.labels(endpoint, outcome).inc()
