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

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
from psycopg2.extensions import connection as Connection

from kafka_bridge import metrics
from kafka_bridge.batch import Batch, KafkaMessage, build, quarantined
from kafka_bridge.health import Health
from mwa_staging.db import arrivals as sql
from mwa_staging.db.connect import KeptConnection, connect
from mwa_staging.observability import RateLimitedLog
from mwa_staging.retry import Backoff

log = logging.getLogger(__name__)

_RETRY_NOW = (psycopg2.errors.DeadlockDetected, psycopg2.errors.SerializationFailure)
_CONNECTION_LOST = (psycopg2.OperationalError, psycopg2.InterfaceError)
#: SQLSTATE classes of errors caused by the data of a batch (see the module's docstring).
_DATA_ERROR_CLASSES = frozenset({"22", "23", "54"})
#: Pauses between failed batch transactions, and while waiting for the database at start.
TRANSACTION_BACKOFF = Backoff(0.2, 10.0, jitter=0.2)
CONNECT_BACKOFF = Backoff(0.5, 10.0, jitter=0.2)


def is_data_error(exc: psycopg2.Error) -> bool:
    """True when the database refused the batch for what it holds, not for its own state."""
    return (exc.pgcode or "")[:2] in _DATA_ERROR_CLASSES


def refusal_reason(exc: psycopg2.Error) -> str:
    """The ``malformed_messages`` reason of a message the database refused."""
    text = _first_line(exc.pgerror or str(exc)).removeprefix("ERROR:").strip()
    return f"refused by the database: SQLSTATE {exc.pgcode}: {text}"[:500]


def _merge(total: sql.Recorded, part: sql.Recorded) -> None:
    total.applied += part.applied
    total.unknown += part.unknown
    total.malformed_new += part.malformed_new
    total.jobs_touched += part.jobs_touched
    total.completed.extend(part.completed)


@dataclass
class Result:
    """A recorded batch and what it changed."""

    batch: Batch
    recorded: sql.Recorded
    #: Valid messages the database refused, kept as malformed instead (see the module).
    quarantined: int = 0


def _prepare(conn: Connection) -> None:
    with conn.cursor() as cur:
        sql.prepare_session(cur)
    conn.commit()


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
        self._conn = KeptConnection(dsn, application_name="mwa-kafka-bridge", on_open=_prepare)
        self._delays = TRANSACTION_BACKOFF.delays()
        self._rlog = RateLimitedLog(log)

    def parse(self, messages: Sequence[KafkaMessage]) -> Batch:
        """Parse a consumed batch (done by the consumer thread while the last one records)."""
        return build(messages, self._max_bytes)

    def record(
        self,
        messages: Sequence[KafkaMessage],
        parsed: Batch,
        stop: threading.Event,
        on_commit: Callable[[Result], None] | None = None,
    ) -> Result | None:
        """Record ``parsed`` (:meth:`parse` of ``messages``) in one committed transaction.

        Returns only once the transaction committed, after calling ``on_commit``
        (or None if stop was asked while the database was unreachable: then
        the offsets are not committed to Kafka, and the messages will be
        delivered again). A batch the database refuses for its content is
        bisected (see the module's docstring); then "committed" means every
        part committed, and the result covers the whole batch.
        """
        result = self._record(messages, parsed, stop, None)
        if result is not None and on_commit is not None:
            on_commit(result)
        return result

    def _record(
        self,
        messages: Sequence[KafkaMessage],
        batch: Batch,
        stop: threading.Event,
        refusal: str | None,
    ) -> Result | None:
        """Commit ``batch`` (or, with ``refusal``, keep its messages as malformed), retrying."""
        while True:
            try:
                result = self._transaction(messages, batch, refusal)
            except _RETRY_NOW as exc:
                self._conn.rollback()
                metrics.DB_RETRIES.labels("conflict").inc()
                log.info("batch transaction conflicted (%s); retrying", exc.pgcode)
                continue
            except _CONNECTION_LOST as exc:
                self._conn.drop()
                metrics.DB_RETRIES.labels("connection").inc()
                self._health.db_down(_first_line(str(exc)) or "lost")
                self._rlog.warning("db", "database unreachable, batch will be retried: %s", exc)
            except psycopg2.Error as exc:
                self._conn.rollback()
                if refusal is None and is_data_error(exc):
                    # Messages are validated so that no value can break the SQL;
                    # something still did (a constraint, a trigger, a limit).
                    metrics.DB_RETRIES.labels("refused").inc()
                    return self._bisect(messages, batch, stop, exc)
                # The database's state, not the data: keep the offsets
                # uncommitted and try again after a pause, visibly.
                metrics.DB_RETRIES.labels("error").inc()
                self._health.db_down(f"batch failed: {exc.pgcode} {exc}".strip())
                self._rlog.error("sqlerr", "batch transaction failed, will retry: %s", exc)
            else:
                self._delays.reset()
                self._health.db_up()
                return result
            if stop.wait(next(self._delays)):
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
                result.quarantined = len(batch.malformed.offsets)
            return result
        self._rlog.warning(
            "bisect",
            "batch of %d messages refused by the database (%s); recording it in parts",
            len(messages),
            refusal_reason(exc),
        )
        total = sql.Recorded()
        quarantined_total = 0
        middle = len(messages) // 2
        for part in (messages[:middle], messages[middle:]):
            done = self._record(part, build(part, self._max_bytes), stop, None)
            if done is None:
                return None
            _merge(total, done.recorded)
            quarantined_total += done.quarantined
        return Result(whole, total, quarantined_total)

    def _transaction(
        self, messages: Sequence[KafkaMessage], parsed: Batch, refusal: str | None = None
    ) -> Result:
        conn = self._conn.get()
        with conn.cursor() as cur:
            stored = sql.lock_offsets(cur, self._topic, list(parsed.offsets))
            batch = parsed
            if any(span[0] < stored.get(part, 0) for part, span in parsed.offsets.items()):
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
            conn = self._conn.get()
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
                self._conn.drop()
            else:
                self._conn.rollback()
            h.db_down(_first_line(str(exc)) or "error")
            self._rlog.warning("heartbeat", "could not write the heartbeat: %s", exc)

    def close(self) -> None:
        self._conn.drop()


def wait_for_database(dsn: str, stop: threading.Event, health: Health) -> Connection | None:
    """Connect, retrying with backoff until the database answers (None if stopped)."""
    delays = CONNECT_BACKOFF.delays()
    rlog = RateLimitedLog(log)
    while not stop.is_set():
        try:
            conn = connect(dsn, application_name="mwa-kafka-bridge")
        except psycopg2.OperationalError as exc:
            health.db_down(_first_line(str(exc)) or "unreachable")
            rlog.warning("connect", "waiting for the database: %s", exc)
            stop.wait(next(delays))
            continue
        health.db_up()
        return conn
    return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
