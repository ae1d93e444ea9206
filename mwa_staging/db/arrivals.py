"""The Kafka bridge's SQL: one batch of file arrivals in one transaction, set-based.

:func:`record` is called inside a transaction the caller commits. Every
statement works on whole columns of the batch (``unnest`` of arrays), never one
statement per message, and the whole is idempotent: a file that is already
ready stays ready, an error only lands on a file still pending, and the
partition offsets stored with the batch make a redelivered batch a no-op even
for the counters that are not naturally idempotent. A job whose last file
arrives is completed in the same transaction, by the rule the restage path
uses too (:mod:`mwa_staging.db.completion`). The batch's columns are the
database layer's own types (:mod:`mwa_staging.db.rows`).

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

from mwa_staging.db.completion import complete_finished
from mwa_staging.db.params import params
from mwa_staging.db.rows import Arrivals, MalformedRows

UNKNOWN_PATH_COUNTER = "unknown_path_messages"
MALFORMED_COUNTER = "malformed_messages"

# Per-session scratch table: the batch aggregated per path, joined with the
# file rows holding each path (job NULL: the path is in no job).
_CREATE_SCRATCH = """
CREATE TEMP TABLE IF NOT EXISTS bridge_pairs (
    path   text NOT NULL,
    ok     boolean NOT NULL,
    error  text,
    t      timestamptz NOT NULL,
    n      integer NOT NULL,
    job    bigint
) ON COMMIT DELETE ROWS
"""

# Columns arrive as single strings split by a separator that no value contains
# (checked by the caller): one literal to parse instead of thousands of array
# elements, which is what makes psycopg2's list adaptation slow. A path with
# any successful message in the batch counts as staged. One index probe per
# path finds every file row holding it.
_LOAD_TEMPLATE = """
INSERT INTO bridge_pairs (path, ok, error, t, n, job)
SELECT a.path, a.ok, a.error, a.t, a.n, f.job
FROM (
    SELECT path, bool_or(err IS NULL) AS ok, max(err) AS error,
           to_timestamp(max(t)) AS t, count(*) AS n
    FROM unnest({columns}) AS m(path, err, t)
    GROUP BY path
) a
LEFT JOIN job_files f ON f.path = a.path
ORDER BY f.job, a.path
"""
_LOAD = _LOAD_TEMPLATE.format(
    columns="string_to_array(%(paths)s, %(sep)s), string_to_array(%(errors)s, %(sep)s, ''),"
    " string_to_array(%(times)s, %(sep)s)::float8[]"
)
# The same with plain arrays, for a batch where every separator occurs in some value.
_LOAD_ARRAYS = _LOAD_TEMPLATE.format(
    columns="%(paths)s::text[], %(errors)s::text[], %(times)s::float8[]"
)

# Only jobs in `staging` take arrivals: the operator moves a job there in the
# transaction that records its files, so `staging` means every file is known.
# A job without failed files has no file in the error state, which is what lets
# the common case below skip reading old states.
_LOCK_JOBS = """
SELECT id, error_files > 0 FROM jobs
WHERE id IN (SELECT job FROM bridge_pairs WHERE job IS NOT NULL) AND state = %(staging)s
ORDER BY id
FOR UPDATE
"""

# Transitions, each its own UPDATE over disjoint rows so the counter deltas
# follow from the WHERE clause (RETURNING shows only new values):
#   pending -> ready  (+1 ready)          pending -> error (+1 error)
#   error   -> ready  (+1 ready, -1 error; only in jobs that have failed files)
# Ready files never move back. The job rows are locked, and every writer of
# job_files locks the job first, so these rows cannot change under us; the
# state predicates are re-checked on the newest row version regardless.
_APPLY = """
WITH first AS (
    UPDATE job_files f
    SET state = CASE WHEN p.ok THEN %(file_ready)s ELSE %(file_error)s END,
        error = CASE WHEN p.ok THEN NULL ELSE p.error END,
        updated_at = now()
    FROM bridge_pairs p
    WHERE f.job = p.job AND f.path = p.path AND f.state = %(file_pending)s
      AND p.job = ANY(%(jobs)s)
    RETURNING p.job, p.path, p.ok, p.t
),
recovered AS (
    UPDATE job_files f
    SET state = %(file_ready)s, error = NULL, updated_at = now()
    FROM bridge_pairs p
    WHERE f.job = p.job AND f.path = p.path AND f.state = %(file_error)s AND p.ok
      AND p.job = ANY(%(jobs_with_errors)s)
    RETURNING p.job, p.path, p.t
),
changed AS (
    SELECT job, path, t, CASE WHEN ok THEN 1 ELSE 0 END AS ready,
           CASE WHEN ok THEN 0 ELSE 1 END AS errors
    FROM first
    UNION ALL
    SELECT job, path, t, 1, -1 FROM recovered
),
per_job AS (
    SELECT job, sum(ready) AS ready, sum(errors) AS errors, max(t) AS last
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
SELECT (SELECT count(DISTINCT path) FROM changed), (SELECT count(*) FROM bumped)
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
class Recorded:
    """What one batch changed."""

    applied: int = 0  # paths that changed at least one file row
    unknown: int = 0  # messages for paths held by no job
    malformed_new: int = 0  # malformed messages not seen before
    jobs_touched: int = 0
    completed: list[int] = field(default_factory=list)  # jobs the batch completed


def prepare_session(cur: Cursor) -> None:
    """Create the session's scratch table and fix its join strategy (once per connection).

    The scratch table has no statistics, so the planner can take a batch of a
    few thousand rows for a big one and hash-join it against a full scan of
    ``job_files`` (millions of rows in production). Index nested loops are
    always right for a batch, so this session uses nothing else.
    """
    cur.execute(_CREATE_SCRATCH)
    cur.execute("SET enable_hashjoin = off")
    cur.execute("SET enable_mergejoin = off")


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
    packed = _packed(arrivals)
    if packed is not None:
        cur.execute(_LOAD, packed)
    else:
        cur.execute(
            _LOAD_ARRAYS,
            {"paths": arrivals.paths, "errors": arrivals.errors, "times": arrivals.times},
        )
    cur.execute(_LOCK_JOBS, params())
    locked = cur.fetchall()
    if locked:
        jobs = [row[0] for row in locked]
        with_errors = [row[0] for row in locked if row[1]]
        cur.execute(_APPLY, params(jobs=jobs, jobs_with_errors=with_errors))
        row = cur.fetchone()
        if row:
            out.applied, out.jobs_touched = int(row[0]), int(row[1])
        # The bridge ends a job in the transaction that records its last file.
        out.completed = complete_finished(cur, jobs)
    cur.execute("SELECT coalesce(sum(n), 0) FROM bridge_pairs WHERE job IS NULL")
    row = cur.fetchone()
    out.unknown = int(row[0]) if row else 0


# Candidate separators, tried in order: control characters no sane path holds.
_SEPARATORS = ("\x1f", "\x1e", "\x1d", "\x1c")


def _packed(arrivals: Arrivals) -> dict[str, str | None] | None:
    """The three columns as separator-joined strings (see _LOAD), or None if none fits."""
    count = len(arrivals.paths)
    errors = arrivals.errors
    any_error = any(e is not None for e in errors)
    for sep in _SEPARATORS:
        paths = sep.join(arrivals.paths)
        if paths.count(sep) != count - 1:
            continue
        errs = sep.join([e or "" for e in errors]) if any_error else None
        if errs is not None and errs.count(sep) != count - 1:
            continue
        times = sep.join(map(repr, arrivals.times))
        return {"paths": paths, "errors": errs, "times": times, "sep": sep}
    return None


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
