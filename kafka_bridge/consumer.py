"""The Kafka side: a consumer-group member that records batches and commits after the database.

At-least-once: auto-commit is off and a batch's offsets are committed, from
this thread, only after its database transaction committed. The transaction of
batch N runs in a recorder thread while this thread consumes and parses batch
N+1 (the database and the parsing then use both cores); Kafka offsets are still
committed in order, each after its own transaction.

In the steady loop the commit is asynchronous: the loop does not wait for the
group coordinator's answer (tens to hundreds of milliseconds on a busy broker,
which used to be most of a batch's cycle). That loses nothing: the database
holds the applied offsets of every partition (``bridge_offsets``, written in
the batch's transaction), so whatever a failed or unfinished Kafka commit lets
come again is skipped; a later commit covers the earlier offsets anyway. Where
the next reader depends on Kafka's offset -- the partitions are revoked in a
rebalance, or the bridge stops -- the newest offsets are committed
synchronously first: when librdkafka serves a rebalance (its callbacks run
inside ``consume``), the revocation callback waits for the batch being recorded
and commits it while the partitions are still ours, so the next owner starts
right after it. SIGTERM only sets a flag; the loop finishes the batch in hand,
commits, and leaves the group.

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
from kafka_bridge.recorder import Recorder, Result
from mwa_staging.observability import RateLimitedLog
from mwa_staging.settings import Settings

log = logging.getLogger(__name__)

# librdkafka errors that mean the configuration is wrong (they will not heal).
_FATAL_CONFIG_ERRORS = {
    KafkaError._AUTHENTICATION: "authentication failed",
    KafkaError.SASL_AUTHENTICATION_FAILED: "authentication failed",
    KafkaError._SSL: "TLS failure",
}


def consumer_config(settings: Settings, member: str, on_error: Callable[..., None],
                    on_stats: Callable[[str], None],
                    on_commit: Callable[..., None] | None = None) -> dict[str, Any]:  # fmt: skip
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
            # While messages trickle in, let the broker gather up to one batch
            # window of them per fetch instead of answering every produce
            # request's worth at once: a fraction of the fetch requests (broker
            # CPU) for no more latency than the batch window adds anyway.
            "fetch.min.bytes": 65_536,
            "fetch.wait.max.ms": max(1, min(500, settings.bridge_batch_window_ms)),
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 2000,
            "socket.keepalive.enable": True,
            "error_cb": on_error,
            "stats_cb": on_stats,
        }
    )
    if on_commit is not None:
        conf["on_commit"] = on_commit
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
        # partition -> next offset, of every batch recorded since the last synchronous commit
        self._uncommitted: dict[int, int] = {}
        self._consumer = Consumer(
            consumer_config(settings, member, self._on_error, self._on_stats, self._on_commit)
        )

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

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """Result of an asynchronous offset commit (served inside ``consume``)."""
        if err is not None:
            # The rows are in; the messages may come again and are skipped by the
            # offsets stored in the database. A later commit covers these too.
            self._rlog.warning("commit", "offset commit failed (a later one covers it): %s", err)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update(p.partition for p in partitions)
        log.info("assigned partitions %s", sorted(p.partition for p in partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # A batch may still be recording: finish it and commit its offsets (and
        # those of earlier batches) while the partitions are still ours, so the
        # next owner starts after them.
        self._finish_inflight()
        self._commit_sync({p.partition for p in partitions})
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
        N+1; then it waits for N, commits N's offsets (asynchronously) and hands
        N+1 over. Offsets are still committed strictly after their transaction,
        in order.
        """
        self._consumer.subscribe(
            [self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )  # fmt: skip
        next_heartbeat = 0.0
        heartbeats = 0
        try:
            while not self._stop.is_set():
                messages = self._consumer.consume(self._batch_size, self._window)
                self._health.polled()
                parsed = self._parse(messages) if messages else None
                self._finish_inflight()
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
            self._commit_sync(None)
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
        self._commit(result)
        self._health.applied(result.batch.valid)
        self._count(result)
        metrics.BATCH_SIZE.observe(size)
        metrics.BATCH_SECONDS.observe(time.monotonic() - started)

    def _commit(self, result: Result) -> None:
        """Commit a recorded batch's offsets without waiting for the coordinator's answer."""
        nexts = result.batch.next_offsets()
        if not nexts:
            return
        self._uncommitted.update(nexts)
        offsets = [TopicPartition(self._topic, part, nxt) for part, nxt in sorted(nexts.items())]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            self._rlog.warning("commit", "offset commit failed (a later one covers it): %s", exc)

    def _commit_sync(self, partitions: set[int] | None) -> None:
        """Commit the newest recorded offsets of ``partitions`` (None: all) and wait for it."""
        parts = sorted(p for p in self._uncommitted if partitions is None or p in partitions)
        if not parts:
            return
        offsets = [TopicPartition(self._topic, p, self._uncommitted.pop(p)) for p in parts]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The next reader re-reads these messages and skips them by the
            # offsets stored in the database: nothing is lost or counted twice.
            self._rlog.warning("commit", "offset commit failed (will be redelivered): %s", exc)

    def _count(self, result: Result) -> None:
        batch, rec = result.batch, result.recorded
        malformed = len(batch.malformed.offsets) + result.quarantined  # refused: kept as malformed
        duplicate = batch.valid - rec.applied - rec.unknown - result.quarantined
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
