"""The Kafka side: a consumer-group member that records batches and commits after the database.

At-least-once: auto-commit is off and a batch's offsets are committed
synchronously, from this thread, only after its database transaction committed.
The transaction of batch N runs in a recorder thread while this thread consumes
and parses batch N+1 (the database and the parsing then use both cores); Kafka
offsets are still committed in order, each after its own transaction. When
librdkafka serves a rebalance (its callbacks run inside ``consume``), the
revocation callback waits for the batch being recorded and commits it while the
partitions are still ours: the next owner starts right after it. SIGTERM only
sets a flag; the loop finishes the batch in hand, commits, and leaves the group.

Broker reachability comes from librdkafka itself: the error callback reports
"all brokers down" and authentication/TLS failures, the statistics callback
(every second) shows which broker connections are up and each partition's lag.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from kafka_bridge import metrics
from kafka_bridge.batch import Batch
from kafka_bridge.health import Health
from kafka_bridge.ratelimit import RateLimitedLog
from kafka_bridge.recorder import Recorder, Result
from mwa_staging.settings import Settings

log = logging.getLogger(__name__)

# librdkafka errors that mean the configuration is wrong (they will not heal).
_FATAL_CONFIG_ERRORS = {
    KafkaError._AUTHENTICATION: "authentication failed",
    KafkaError.SASL_AUTHENTICATION_FAILED: "authentication failed",
    KafkaError._SSL: "TLS failure",
}


def consumer_config(settings: Settings, member: str, on_error: Callable[..., None],
                    on_stats: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """librdkafka settings: the broker connection from Settings plus the group's behaviour."""
    conf: dict[str, Any] = dict(settings.kafka_config())
    conf.update(
        {
            "group.id": settings.kafka_group,
            "client.id": f"mwa-kafka-bridge-{member}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": settings.bridge_auto_offset_reset,
            "statistics.interval.ms": 1000,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 2000,
            "socket.keepalive.enable": True,
            "error_cb": on_error,
            "stats_cb": on_stats,
        }
    )
    return conf


class BridgeConsumer:
    """The consume -> record -> commit loop of one bridge process."""

    def __init__(
        self,
        settings: Settings,
        recorder: Recorder,
        health: Health,
        *,
        member: str,
        after_commit: Callable[[Result], None],
    ) -> None:
        self._settings = settings
        self._topic = settings.kafka_topic
        self._recorder = recorder
        self._health = health
        self._member = member
        self._after_commit = after_commit
        self._batch_size = settings.bridge_batch_size
        self._window = settings.bridge_batch_window_ms / 1000.0
        self._heartbeat_every = settings.bridge_heartbeat_interval_s
        self._stop = threading.Event()
        self._rlog = RateLimitedLog(log)
        self._assigned: set[int] = set()
        # One recorder thread: batches and heartbeats use its connection in turn.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")
        self._inflight: tuple[Future[Result | None], float, int] | None = None
        self._consumer = Consumer(consumer_config(settings, member, self._on_error, self._on_stats))

    def stop(self) -> None:
        """Finish the batch in hand, commit it and leave (safe from a signal handler)."""
        self._stop.set()

    # --- librdkafka callbacks (run inside consume) ------------------------
    def _on_error(self, err: KafkaError) -> None:
        code = err.code()
        fatal = _FATAL_CONFIG_ERRORS.get(code)
        if fatal is not None:
            detail = (
                f"{fatal} for user {self._settings.kafka_user!r} "
                f"({self._settings.kafka_security_protocol}/{self._settings.kafka_sasl_mechanism})"
                f" at {self._settings.kafka_server}: {err.str()}"
            )
            self._health.broker_down(detail)
            self._rlog.error(f"kafka-{code}", "kafka: %s", detail)
        elif code == KafkaError._ALL_BROKERS_DOWN:
            self._health.broker_down()
            self._rlog.warning("kafka-down", "kafka: no broker reachable: %s", err.str())
        else:
            self._rlog.warning(f"kafka-{code}", "kafka: %s", err.str())

    def _on_stats(self, raw: str) -> None:
        try:
            stats = json.loads(raw)
        except ValueError:
            return
        brokers = stats.get("brokers", {}).values()
        if any(b.get("state") == "UP" for b in brokers):
            self._health.broker_up()
        partitions = stats.get("topics", {}).get(self._topic, {}).get("partitions", {})
        for key, part in partitions.items():
            number = int(key)
            if number in self._assigned and part.get("consumer_lag", -1) >= 0:
                metrics.CONSUMER_LAG.labels(str(number)).set(part["consumer_lag"])

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update(p.partition for p in partitions)
        log.info("assigned partitions %s", sorted(p.partition for p in partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # A batch may still be recording: finish it and commit its offsets while
        # the partitions are still ours, so the next owner starts after it.
        self._finish_inflight()
        for p in partitions:
            self._assigned.discard(p.partition)
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(str(p.partition))
        log.info("revoked partitions %s", sorted(p.partition for p in partitions))

    # --- the loop ----------------------------------------------------------
    def run(self) -> None:
        """Consume until :meth:`stop`; then close (leave the group) and return.

        Pipelined: while batch N's transaction runs in the recorder thread (the
        database works on the other core), this thread consumes and parses batch
        N+1; then it waits for N, commits N's offsets and hands N+1 over. Offsets
        are still committed strictly after their transaction, in order.
        """
        self._consumer.subscribe(
            [self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )  # fmt: skip
        next_heartbeat = 0.0
        heartbeats = 0
        try:
            while not self._stop.is_set():
                _t0 = time.perf_counter()  # DBG
                messages = self._consumer.consume(self._batch_size, self._window)
                _t1 = time.perf_counter()  # DBG
                self._health.polled()
                parsed = self._parse(messages) if messages else None
                _t2 = time.perf_counter()  # DBG
                self._finish_inflight()
                _t3 = time.perf_counter()  # DBG
                if messages:  # DBG
                    log.info("DBG n=%d consume=%.1f parse=%.1f wait=%.1f", len(messages), (_t1-_t0)*1e3, (_t2-_t1)*1e3, (_t3-_t2)*1e3)  # DBG
                if parsed is not None:
                    self._inflight = (
                        self._worker.submit(
                            self._recorder.record, messages, parsed, self._stop,
                            self._after_commit,
                        ),
                        time.monotonic(),
                        len(messages),
                    )  # fmt: skip
                now = time.monotonic()
                if now >= next_heartbeat:
                    heartbeats += 1
                    forget = heartbeats % 1000 == 1
                    self._worker.submit(self._recorder.heartbeat, self._member, forget_old=forget)
                    next_heartbeat = now + self._heartbeat_every
        finally:
            self._finish_inflight()
            self._health.stopping = True
            self._worker.submit(self._recorder.heartbeat, self._member).result()
            self._worker.shutdown()
            self._consumer.close()
            log.info("left the consumer group")

    def _parse(self, messages: list[Message]) -> Batch:
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._rlog.warning(f"msg-{err.code()}", "kafka: consume error: %s", err.str())
        return self._recorder.parse(messages)

    def _finish_inflight(self) -> None:
        """Wait for the batch in the recorder, then commit its offsets (the batch in hand)."""
        if self._inflight is None:
            return
        future, started, size = self._inflight
        self._inflight = None
        result = future.result()
        if result is None:
            return  # stopping while the database was away: leave the offsets uncommitted
        _c0 = time.perf_counter()  # DBG
        self._commit(result)
        log.info("DBG kcommit=%.1f", (time.perf_counter() - _c0) * 1e3)  # DBG
        self._health.applied(result.batch.valid)
        self._count(result)
        metrics.BATCH_SIZE.observe(size)
        metrics.BATCH_SECONDS.observe(time.monotonic() - started)

    def _commit(self, result: Result) -> None:
        offsets = [
            TopicPartition(self._topic, part, nxt)
            for part, nxt in sorted(result.batch.next_offsets().items())
        ]
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The rows are in; the messages will come again and be skipped by
            # the stored offsets. A later commit covers these offsets too.
            self._rlog.warning("commit", "offset commit failed (will be redelivered): %s", exc)

    def _count(self, result: Result) -> None:
        batch, rec = result.batch, result.recorded
        malformed = len(batch.malformed.offsets) + rec.quarantined  # refused: kept as malformed
        duplicate = batch.valid - rec.applied - rec.unknown - rec.quarantined
        m = metrics.MESSAGES
        if rec.applied:
            m.labels("applied").inc(rec.applied)
        if duplicate:
            m.labels("duplicate").inc(duplicate)
        if rec.unknown:
            m.labels("unknown_path").inc(rec.unknown)
        if malformed:
            m.labels("malformed").inc(malformed)
        if batch.skipped:
            m.labels("redelivered").inc(batch.skipped)
        if rec.completed:
            metrics.COMPLETED_JOBS.inc(len(rec.completed))
            log.info("jobs complete: %s", ", ".join(str(j) for j in rec.completed))
        if malformed:
            reasons = sorted(set(batch.malformed.reasons))
            self._rlog.warning(
                "malformed", "%d malformed message(s) kept: %s", malformed, "; ".join(reasons)
            )
