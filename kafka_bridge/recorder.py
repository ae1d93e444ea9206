"""Recording a consumed batch in PostgreSQL: one transaction, retried until it commits.

The consumer commits Kafka offsets only after :meth:`Recorder.record` returns,
so everything here may be repeated safely: a transaction that fails is rolled
back and run again (deadlocks and serialisation failures at once, lost
connections after a reconnect with backoff), and a batch the database already
holds -- committed just before a crash, before Kafka's commit -- is recognised
by the stored partition offsets and skipped message by message.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
from psycopg2.extensions import connection as Connection

from kafka_bridge import metrics
from kafka_bridge.batch import Batch, KafkaMessage, build
from kafka_bridge.health import Health
from kafka_bridge.ratelimit import RateLimitedLog
from mwa_staging.db import arrivals as sql
from mwa_staging.db.connect import connect

log = logging.getLogger(__name__)

_RETRY_NOW = (psycopg2.errors.DeadlockDetected, psycopg2.errors.SerializationFailure)
_CONNECTION_LOST = (psycopg2.OperationalError, psycopg2.InterfaceError)


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
    """Owns the consumer thread's database connection."""

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
        nothing is committed, and the messages will be delivered again).
        """
        while True:
            try:
                result = self._transaction(messages, first)
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
                # Not expected: messages are validated so that no value can break
                # the SQL. Keep the offsets uncommitted and try again after a
                # pause, visibly, rather than skip data.
                self._rollback()
                metrics.DB_RETRIES.labels("error").inc()
                self._health.db_down(f"batch failed: {exc.pgcode} {exc}".strip())
                self._rlog.error("sqlerr", "batch transaction failed, will retry: %s", exc)
            else:
                self._backoff.reset()
                self._health.db_up()
                if on_commit is not None:
                    on_commit(result)
                return result
            if stop.wait(self._backoff.next()):
                return None

    def _rollback(self) -> None:
        try:
            if self._conn is not None:
                self._conn.rollback()
        except psycopg2.Error:
            self._drop()

    def _transaction(self, messages: Sequence[KafkaMessage], first: Batch) -> Result:
        conn = self._connection()
        with conn.cursor() as cur:
            stored = sql.lock_offsets(cur, self._topic, list(first.offsets))
            batch = first
            if any(span[0] < stored.get(part, 0) for part, span in first.offsets.items()):
                # Part of this batch was recorded before Kafka's commit was lost.
                batch = build(messages, self._max_bytes, skip_below=stored)
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
