"""Recording a consumed batch in PostgreSQL: one transaction, retried until it commits.

The consumer commits Kafka offsets only after :meth:`Recorder.record` returns,
so everything here may be repeated safely: a transaction that fails is rolled
back and run again (deadlocks and serialisation failures at once, lost
connections after a reconnect with backoff), and a batch the database already
holds -- committed just before a crash, before Kafka's commit -- is recognised
by the stored partition offsets and skipped message by message.

A batch the database *refuses* because of what it contains (SQLSTATE classes
22 data exception, 23 integrity constraint violation, 54 program limit) would
fail the same way forever and stall every partition behind it. Such a batch is
bisected: each half is recorded in its own transaction, recursively, until the
offending message is alone; that message is then kept in
``malformed_messages`` with the database's error as the reason (and counted as
malformed), and everything around it is applied. Each sub-transaction stores
its own offsets, so a crash in the middle resumes exactly where it stopped.
Every other database error (disk full, read-only after a fail-over, missing
privileges or schema, an operator cancelling the query...) says nothing about
the messages: the batch is retried with backoff, visibly in ``/healthz``, and
nothing is discarded.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
from psycopg2.extensions import connection as Connection

from kafka_bridge import metrics
from kafka_bridge.batch import PAYLOAD_KEEP_BYTES, Batch, KafkaMessage, build
from kafka_bridge.health import Health
from mwa_staging.db import arrivals as sql
from mwa_staging.db.arrivals import MalformedRows
from mwa_staging.db.connect import connect
from mwa_staging.observability import RateLimitedLog

log = logging.getLogger(__name__)

_RETRY_NOW = (psycopg2.errors.DeadlockDetected, psycopg2.errors.SerializationFailure)
_CONNECTION_LOST = (psycopg2.OperationalError, psycopg2.InterfaceError)
#: SQLSTATE classes of errors caused by the data of a batch (see the module's docstring).
_DATA_ERROR_CLASSES = frozenset({"22", "23", "54"})


def is_data_error(exc: psycopg2.Error) -> bool:
    """True when the database refused the batch for what it holds, not for its own state."""
    return (exc.pgcode or "")[:2] in _DATA_ERROR_CLASSES


def refusal_reason(exc: psycopg2.Error) -> str:
    """The ``malformed_messages`` reason of a message the database refused."""
    text = _first_line(exc.pgerror or str(exc)).removeprefix("ERROR:").strip()
    return f"refused by the database: SQLSTATE {exc.pgcode}: {text}"[:500]


def quarantined(
    messages: Sequence[KafkaMessage],
    max_bytes: int,
    reason: str,
    skip_below: Mapping[int, int] | None = None,
) -> Batch:
    """``messages`` as a batch of malformed rows with ``reason`` (same offsets, no arrivals)."""
    batch = build(messages, max_bytes, skip_below)
    rows = MalformedRows()
    for msg in messages:
        part, off = msg.partition(), msg.offset()
        if msg.error() is not None or part is None or off is None:
            continue
        if skip_below is not None and off < skip_below.get(part, 0):
            continue
        rows.partitions.append(part)
        rows.offsets.append(off)
        rows.reasons.append(reason)
        rows.payloads.append((msg.value() or b"")[:PAYLOAD_KEEP_BYTES])
    batch.arrivals = sql.Arrivals()
    batch.malformed = rows
    return batch


def _merge(total: sql.Recorded, part: sql.Recorded) -> None:
    total.applied += part.applied
    total.unknown += part.unknown
    total.malformed_new += part.malformed_new
    total.jobs_touched += part.jobs_touched
    total.quarantined += part.quarantined
    total.completed.extend(part.completed)


@dataclass
class Result:
    """A recorded batch and what it changed."""

    batch: Batch
    recorded: sql.Recorded


class Backoff:
    """Exponential backoff with jitter, reset on success."""

    def __init__(self, initial: float = 0.2, maximum: float = 10.0) -> None:
        self.initial, self.maximum = initial, maximum
        self.current = initial

    def next(self) -> float:
        delay = self.current * random.uniform(0.8, 1.2)
        self.current = min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.current = self.initial


class Recorder:
    """Owns the database connection the consumer's recorder thread uses (batches, heartbeats)."""

    def __init__(
        self,
        dsn: str,
        *,
        topic: str,
        max_message_bytes: int,
        malformed_keep: int,
        health: Health,
    ) -> None:
        self._dsn = dsn
        self._topic = topic
        self._max_bytes = max_message_bytes
        self._keep = malformed_keep
        self._health = health
        self._conn: Connection | None = None
        self._backoff = Backoff()
        self._rlog = RateLimitedLog(log)

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            conn = connect(self._dsn, application_name="mwa-kafka-bridge")
            with conn.cursor() as cur:
                sql.prepare_session(cur)
            conn.commit()
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
        self._conn = None

    def parse(self, messages: Sequence[KafkaMessage]) -> Batch:
        """Parse a consumed batch (done by the consumer thread while the last one records)."""
        return build(messages, self._max_bytes)

    def record(
        self,
        messages: Sequence[KafkaMessage],
        first: Batch,
        stop: threading.Event,
        on_commit: Callable[[Result], None] | None = None,
    ) -> Result | None:
        """Record ``first`` (parsed from ``messages``) in one committed transaction.

        Returns only once the transaction committed, after calling ``on_commit``
        (or None if stop was asked while the database was unreachable: then
        the offsets are not committed to Kafka, and the messages will be
        delivered again). A batch the database refuses for its content is
        bisected (see the module's docstring); then "committed" means every
        part committed, and the result covers the whole batch.
        """
        result = self._record(messages, first, stop, None)
        if result is not None and on_commit is not None:
            on_commit(result)
        return result

    def _record(
        self,
        messages: Sequence[KafkaMessage],
        first: Batch,
        stop: threading.Event,
        refusal: str | None,
    ) -> Result | None:
        """Commit ``first`` (or, with ``refusal``, keep its messages as malformed), retrying."""
        while True:
            try:
                result = self._transaction(messages, first, refusal)
            except _RETRY_NOW as exc:
                self._rollback()
                metrics.DB_RETRIES.labels("conflict").inc()
                log.info("batch transaction conflicted (%s); retrying", exc.pgcode)
                continue
            except _CONNECTION_LOST as exc:
                self._drop()
                metrics.DB_RETRIES.labels("connection").inc()
                self._health.db_down(_first_line(str(exc)) or "lost")
                self._rlog.warning("db", "database unreachable, batch will be retried: %s", exc)
            except psycopg2.Error as exc:
                self._rollback()
                if refusal is None and is_data_error(exc):
                    # Messages are validated so that no value can break the SQL;
                    # something still did (a constraint, a trigger, a limit).
                    metrics.DB_RETRIES.labels("refused").inc()
                    return self._bisect(messages, first, stop, exc)
                # The database's state, not the data: keep the offsets
                # uncommitted and try again after a pause, visibly.
                metrics.DB_RETRIES.labels("error").inc()
                self._health.db_down(f"batch failed: {exc.pgcode} {exc}".strip())
                self._rlog.error("sqlerr", "batch transaction failed, will retry: %s", exc)
            else:
                self._backoff.reset()
                self._health.db_up()
                return result
            if stop.wait(self._backoff.next()):
                return None

    def _bisect(
        self,
        messages: Sequence[KafkaMessage],
        whole: Batch,
        stop: threading.Event,
        exc: psycopg2.Error,
    ) -> Result | None:
        """Record the halves of a refused batch apart, down to the refused message(s)."""
        if len(messages) == 1:
            msg = messages[0]
            reason = refusal_reason(exc)
            self._rlog.error(
                "refused",
                "message at partition %s offset %s kept as malformed: %s",
                msg.partition(),
                msg.offset(),
                reason,
            )
            batch = quarantined(messages, self._max_bytes, reason)
            result = self._record(messages, batch, stop, reason)
            if result is not None:
                result.recorded.quarantined = len(batch.malformed.offsets)
            return result
        self._rlog.warning(
            "bisect",
            "batch of %d messages refused by the database (%s); recording it in parts",
            len(messages),
            refusal_reason(exc),
        )
        total = sql.Recorded()
        middle = len(messages) // 2
        for part in (messages[:middle], messages[middle:]):
            done = self._record(part, build(part, self._max_bytes), stop, None)
            if done is None:
                return None
            _merge(total, done.recorded)
        return Result(whole, total)

    def _rollback(self) -> None:
        try:
            if self._conn is not None:
                self._conn.rollback()
        except psycopg2.Error:
            self._drop()

    def _transaction(
        self, messages: Sequence[KafkaMessage], first: Batch, refusal: str | None = None
    ) -> Result:
        conn = self._connection()
        with conn.cursor() as cur:
            stored = sql.lock_offsets(cur, self._topic, list(first.offsets))
            batch = first
            if any(span[0] < stored.get(part, 0) for part, span in first.offsets.items()):
                # Part of this batch was recorded before Kafka's commit was lost.
                if refusal is None:
                    batch = build(messages, self._max_bytes, skip_below=stored)
                else:
                    batch = quarantined(messages, self._max_bytes, refusal, skip_below=stored)
            recorded = sql.record(
                cur, self._topic, batch.arrivals, batch.malformed, malformed_keep=self._keep
            )
            sql.store_offsets(cur, self._topic, batch.next_offsets())
        conn.commit()
        return Result(batch, recorded)

    def heartbeat(self, member: str, *, forget_old: bool = False) -> None:
        """Write the heartbeat row; a database outage is only noted (the batch path retries)."""
        h = self._health
        if h.last_poll is None:
            return
        try:
            conn = self._connection()
            with conn.cursor() as cur:
                sql.heartbeat(
                    cur,
                    member,
                    last_poll=h.last_poll,
                    last_message=h.last_message,
                    broker_ok=h.broker_ok,
                    forget_old=forget_old,
                )
            conn.commit()
            h.db_up()
        except psycopg2.Error as exc:
            if isinstance(exc, _CONNECTION_LOST):
                self._drop()
            else:
                self._rollback()
            h.db_down(_first_line(str(exc)) or "error")
            self._rlog.warning("heartbeat", "could not write the heartbeat: %s", exc)

    def close(self) -> None:
        self._drop()


def wait_for_database(dsn: str, stop: threading.Event, health: Health) -> Connection | None:
    """Connect, retrying with backoff until the database answers (None if stopped)."""
    backoff = Backoff(0.5, 10.0)
    rlog = RateLimitedLog(log)
    while not stop.is_set():
        try:
            conn = connect(dsn, application_name="mwa-kafka-bridge")
        except psycopg2.OperationalError as exc:
            health.db_down(_first_line(str(exc)) or "unreachable")
            rlog.warning("connect", "waiting for the database: %s", exc)
            stop.wait(backoff.next())
            continue
        health.db_up()
        return conn
    return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
