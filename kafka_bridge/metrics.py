"""The bridge's Prometheus metrics (served on ``/metrics`` by :mod:`mwa_staging.observability`).

Defined once here so every module counts into the same objects and the names
stay greppable. Outcome labels are a closed set; per-partition lag is labelled
by partition and removed when the partition is revoked.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "mwa_bridge_messages_total",
    "Kafka messages by outcome: applied (changed a file), duplicate (no change),"
    " unknown_path (in no job), malformed, redelivered (already applied, skipped).",
    ["outcome"],
)
for _outcome in ("applied", "duplicate", "unknown_path", "malformed", "redelivered"):
    MESSAGES.labels(_outcome)

BATCH_SIZE = Histogram(
    "mwa_bridge_batch_messages",
    "Messages per consumed batch.",
    buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000),
)
BATCH_SECONDS = Histogram(
    "mwa_bridge_batch_seconds",
    "Time from a batch's consumption to its offsets' commit (parse, transaction, commit).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DB_RETRIES = Counter(
    "mwa_bridge_db_retries_total",
    "Batch transactions retried, by cause.",
    ["cause"],
)
COMPLETED_JOBS = Counter("mwa_bridge_completed_jobs_total", "Jobs the bridge moved to complete.")
CONSUMER_LAG = Gauge(
    "mwa_bridge_consumer_lag",
    "Messages behind the partition's high watermark (from librdkafka statistics).",
    ["partition"],
)
PATCHES = Counter(
    "mwa_bridge_status_patches_total",
    "StagingJob status projections by outcome: patched, gone, busy, error.",
    ["outcome"],
)
for _outcome in ("patched", "gone", "busy", "error"):
    PATCHES.labels(_outcome)
DIRTY_JOBS = Gauge("mwa_bridge_dirty_jobs", "Jobs whose status is behind their database row.")
BROKER_UP = Gauge("mwa_bridge_broker_up", "1 while at least one Kafka broker connection is up.")
