"""The Kafka bridge's SQL: one batch of file arrivals in one transaction, set-based.

:func:`record` is called inside a transaction the caller commits. Every
statement works on whole columns of the batch (``unnest`` of arrays), never one
statement per message, and the whole is idempotent: a file that is already
ready stays ready, an error only lands on a file still pending, and the
partition offsets stored with the batch make a redelivered batch a no-op even
for the counters that are not naturally idempotent.

Lock order (deadlocks are retried by the caller, but are avoided by design):
``bridge_offsets`` rows by partition, then ``jobs`` rows by id, then
``job_files`` rows by (job, path), then the counter rows. Two bridge replicas
therefore queue behind each other instead of deadlocking, and the operator,
which locks a job row before its files, agrees with that order.

A file row update changes only ``state``, ``error`` and ``updated_at``; no index
covers those columns (the failed-files index has a predicate on ``error``), so
with the table's fillfactor the common pending -> ready update is HOT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import psycopg2
from psycopg2.extensions import cursor as Cursor

NOTIFY_CHANNEL = "mwa_staging_jobs"
UNKNOWN_PATH_COUNTER = "unknown_path_messages"
MALFORMED_COUNTER = "malformed_messages"

# Per-session scratch table holding the batch aggregated per path.
_CREATE_SCRATCH = """
CREATE TEMP TABLE IF NOT EXISTS bridge_arrivals (
    path   text PRIMARY KEY,
    ok     boolean NOT NULL,
    error  text,
    t      timestamptz NOT NULL,
    n      integer NOT NULL
) ON COMMIT DELETE ROWS
"""

# A path with any successful message in the batch counts as staged.
_LOAD = """
INSERT INTO bridge_arrivals (path, ok, error, t, n)
SELECT path, bool_or(err IS NULL), max(err), to_timestamp(max(t)), count(*)
FROM unnest(%s::text[], %s::text[], %s::float8[]) AS m(path, err, t)
GROUP BY path
"""

# Only jobs in `staging` take arrivals: the operator moves a job there in the
# transaction that records its files, so `staging` means every file is known.
_LOCK_JOBS = """
SELECT id FROM jobs
WHERE state = 'staging'
  AND id IN (SELECT f.job FROM bridge_arrivals a JOIN job_files f ON f.path = a.path)
ORDER BY id
FOR UPDATE
"""

# `target` reads each file's current state under its row lock (re-checked if a
# concurrent change committed meanwhile), which gives the counter deltas:
# pending -> ready (+1 ready), error -> ready (+1 ready, -1 error),
# pending -> error (+1 error). Ready files never move back.
_APPLY = """
WITH target AS (
    SELECT f.job, f.path, f.state AS old_state, a.ok, a.error, a.t
    FROM bridge_arrivals a
    JOIN job_files f ON f.path = a.path
    WHERE f.job = ANY(%(jobs)s)
      AND CASE WHEN a.ok THEN f.state <> 1 ELSE f.state = 0 END
    ORDER BY f.job, f.path
    FOR UPDATE OF f
),
changed AS (
    UPDATE job_files f
    SET state = CASE WHEN t.ok THEN 1 ELSE 2 END,
        error = CASE WHEN t.ok THEN NULL ELSE t.error END,
        updated_at = now()
    FROM target t
    WHERE f.job = t.job AND f.path = t.path
    RETURNING t.job, t.path, t.old_state, t.ok, t.t
),
per_job AS (
    SELECT job,
           count(*) FILTER (WHERE ok) AS ready,
           count(*) FILTER (WHERE NOT ok) - count(*) FILTER (WHERE ok AND old_state = 2) AS errors,
           max(t) AS last
    FROM changed
    GROUP BY job
),
bumped AS (
    UPDATE jobs j
    SET ready_files = j.ready_files + p.ready,
        error_files = j.error_files + p.errors,
        last_file_time = greatest(j.last_file_time, p.last),
        version = j.version + 1
    FROM per_job p
    WHERE j.id = p.job
    RETURNING j.id
)
SELECT (SELECT count(DISTINCT path) FROM changed),
       (SELECT count(*) FROM bumped),
       (SELECT coalesce(sum(n), 0) FROM bridge_arrivals a
        WHERE NOT EXISTS (SELECT 1 FROM job_files f WHERE f.path = a.path))
"""

# The bridge ends a job in the transaction that records its last file, so a
# completed job and its counts can never disagree. The operator sends the callback.
_COMPLETE = """
WITH done AS (
    UPDATE jobs
    SET state = 'complete',
        completion_time = now(),
        return_code = CASE WHEN error_files = 0 THEN 0 ELSE 5 END,
        reason = CASE WHEN error_files = 0 THEN 'AllFilesStaged' ELSE 'FinishedWithErrors' END,
        message = CASE WHEN error_files = 0
                       THEN format('%%s of %%s files staged', ready_files, total_files)
                       ELSE format('%%s staged, %%s failed', ready_files, error_files) END,
        callback_state = 'pending',
        callback_next_attempt = now(),
        version = version + 1
    WHERE id = ANY(%s) AND state = 'staging' AND ready_files + error_files >= total_files
    RETURNING id
)
SELECT id, pg_notify(%s, id::text) FROM done ORDER BY id
"""

_BUMP_COUNTER = """
INSERT INTO bridge_counters (name, value) VALUES (%s, %s)
ON CONFLICT (name) DO UPDATE SET value = bridge_counters.value + EXCLUDED.value
"""

_KEEP_MALFORMED = """
WITH ins AS (
    INSERT INTO malformed_messages (topic, partition, "offset", reason, payload)
    SELECT %s, p, o, r, b FROM unnest(%s::int[], %s::bigint[], %s::text[], %s::bytea[])
        AS m(p, o, r, b)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM ins
"""

_TRIM_MALFORMED = """
DELETE FROM malformed_messages
WHERE id <= (SELECT id FROM malformed_messages ORDER BY id DESC OFFSET %s LIMIT 1)
"""

_ENSURE_OFFSETS = """
INSERT INTO bridge_offsets (topic, partition)
SELECT %s, unnest(%s::int[])
ON CONFLICT DO NOTHING
"""

_LOCK_OFFSETS = """
SELECT partition, next_offset FROM bridge_offsets
WHERE topic = %s AND partition = ANY(%s)
ORDER BY partition
FOR UPDATE
"""

_STORE_OFFSETS = """
UPDATE bridge_offsets o
SET next_offset = greatest(o.next_offset, v.next), updated_at = now()
FROM unnest(%s::int[], %s::bigint[]) AS v(p, next)
WHERE o.topic = %s AND o.partition = v.p
"""

_HEARTBEAT = """
INSERT INTO bridge_heartbeat (member, last_poll, last_message, broker_ok, updated_at)
VALUES (%s, to_timestamp(%s), to_timestamp(%s), %s, now())
ON CONFLICT (member) DO UPDATE
SET last_poll = EXCLUDED.last_poll,
    last_message = coalesce(EXCLUDED.last_message, bridge_heartbeat.last_message),
    broker_ok = EXCLUDED.broker_ok,
    updated_at = now()
"""

# Heartbeat rows of members gone for a day (restarted pods, dev processes).
_FORGET_MEMBERS = "DELETE FROM bridge_heartbeat WHERE updated_at < now() - interval '1 day'"


@dataclass
class Arrivals:
    """A batch's valid messages as columns (``errors[i]`` None: staged)."""

    paths: list[str] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # epoch seconds


@dataclass
class MalformedRows:
    """A batch's malformed messages as columns."""

    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)


@dataclass
class Recorded:
    """What one batch changed."""

    applied: int = 0  # paths that changed at least one file row
    unknown: int = 0  # messages for paths held by no job
    malformed_new: int = 0  # malformed messages not seen before
    jobs_touched: int = 0
    completed: list[int] = field(default_factory=list)


def prepare_session(cur: Cursor) -> None:
    """Create the session's scratch table (once per connection)."""
    cur.execute(_CREATE_SCRATCH)


def lock_offsets(cur: Cursor, topic: str, partitions: Sequence[int]) -> dict[int, int]:
    """Lock the partitions' stored offsets and return ``partition -> next offset to apply``.

    Held to the end of the transaction, so two replicas that briefly both hold a
    partition during a rebalance apply its messages one after the other, the
    second skipping what the first recorded.
    """
    parts = sorted(partitions)
    cur.execute(_ENSURE_OFFSETS, (topic, parts))
    cur.execute(_LOCK_OFFSETS, (topic, parts))
    return {int(p): int(o) for p, o in cur.fetchall()}


def store_offsets(cur: Cursor, topic: str, next_offsets: Mapping[int, int]) -> None:
    """Record the next offset to apply per partition (never moves backwards)."""
    parts = sorted(next_offsets)
    cur.execute(_STORE_OFFSETS, (parts, [next_offsets[p] for p in parts], topic))


def record(
    cur: Cursor,
    topic: str,
    arrivals: Arrivals,
    malformed: MalformedRows,
    *,
    malformed_keep: int,
) -> Recorded:
    """Apply a batch's arrivals and malformed messages (the caller commits)."""
    out = Recorded()
    if arrivals.paths:
        _apply_arrivals(cur, arrivals, out)
    if malformed.offsets:
        cur.execute(
            _KEEP_MALFORMED,
            (topic, malformed.partitions, malformed.offsets, malformed.reasons,
             [psycopg2.Binary(p) for p in malformed.payloads]),
        )  # fmt: skip
        row = cur.fetchone()
        out.malformed_new = int(row[0]) if row else 0
        if out.malformed_new:
            cur.execute(_TRIM_MALFORMED, (malformed_keep,))
    # Counter rows last: they are shared by every replica and the lock is short.
    if out.malformed_new:
        cur.execute(_BUMP_COUNTER, (MALFORMED_COUNTER, out.malformed_new))
    if out.unknown:
        cur.execute(_BUMP_COUNTER, (UNKNOWN_PATH_COUNTER, out.unknown))
    return out


def _apply_arrivals(cur: Cursor, arrivals: Arrivals, out: Recorded) -> None:
    cur.execute(_LOAD, (arrivals.paths, arrivals.errors, arrivals.times))
    cur.execute(_LOCK_JOBS)
    jobs = [row[0] for row in cur.fetchall()]
    cur.execute(_APPLY, {"jobs": jobs})
    row = cur.fetchone()
    if row:
        out.applied, out.jobs_touched, out.unknown = int(row[0]), int(row[1]), int(row[2])
    if jobs:
        cur.execute(_COMPLETE, (jobs, NOTIFY_CHANNEL))
        out.completed = [r[0] for r in cur.fetchall()]


def heartbeat(
    cur: Cursor,
    member: str,
    *,
    last_poll: float,
    last_message: float | None,
    broker_ok: bool,
    forget_old: bool = False,
) -> None:
    """Upsert this member's heartbeat row (times are epoch seconds)."""
    cur.execute(_HEARTBEAT, (member, last_poll, last_message, broker_ok))
    if forget_old:
        cur.execute(_FORGET_MEMBERS)


def counter(cur: Cursor, name: str) -> int:
    """A bridge counter's value (0 when never bumped)."""
    cur.execute("SELECT value FROM bridge_counters WHERE name = %s", (name,))
    row = cur.fetchone()
    return int(row[0]) if row else 0
