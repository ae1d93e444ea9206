"""Banksia's Kafka notifications: a confluent-kafka producer that never gives up.

Tests stop the broker in the middle of a stream to check that nobody loses
data, so the simulated archive must behave like a real one would: keep the
notifications and deliver them when the broker is back. librdkafka already
buffers and reconnects; here messages are kept forever
(``message.timeout.ms=0``), the local queue is large, and if it is full anyway
the messages wait in our own backlog instead of raising out of the event loop.

Everything runs on the event loop thread: ``produce`` only enqueues and
``poll(0)`` only runs delivery callbacks, so neither blocks.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, Producer

from devstack.sim.archive import Message

log = logging.getLogger("devstack.sim.publisher")


class Publisher:
    """Hands :class:`Message` objects to Kafka and counts what happened to them."""

    def __init__(self, bootstrap: str, extra_config: dict[str, Any] | None = None) -> None:
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "security.protocol": "PLAINTEXT",
            "client.id": "banksia-sim",
            "linger.ms": 5,
            "message.timeout.ms": 0,  # never drop a message because the broker is away
            "queue.buffering.max.messages": 1_000_000,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            # Connection failures while the broker is away are reported (rate
            # limited) by error_cb; librdkafka's own log would repeat them.
            "log_level": 2,
            "error_cb": self._on_error,
        }
        config.update(extra_config or {})
        self._producer = Producer(config)
        self._backlog: deque[Message] = deque()
        self._last_error: dict[int, float] = {}
        self.produced = 0
        self.delivered = 0
        self.failed = 0

    def _on_error(self, error: KafkaError) -> None:
        # librdkafka repeats "all brokers down" while the broker is away; say it
        # once every 10 s per error code.
        now = time.monotonic()
        code = error.code()
        if now - self._last_error.get(code, -1e9) >= 10.0:
            self._last_error[code] = now
            log.warning("kafka: %s", error)

    def _on_delivery(self, error: KafkaError | None, _msg: object) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.failed += 1
            log.error("kafka delivery failed: %s", error)

    def publish(self, messages: Iterable[Message]) -> None:
        """Queue ``messages`` for delivery, in order."""
        self._backlog.extend(messages)
        self.service()

    def service(self) -> None:
        """Move the backlog into the producer and run delivery callbacks."""
        backlog = self._backlog
        produce = self._producer.produce
        sent = 0
        while backlog:
            msg = backlog[0]
            try:
                produce(
                    msg.topic,
                    value=msg.value,
                    key=msg.key.encode() if msg.key else None,
                    on_delivery=self._on_delivery,
                )
            except BufferError:
                break  # local queue full (broker away for long): retry on the next tick
            backlog.popleft()
            self.produced += 1
            sent += 1
            if sent % 10_000 == 0:
                self._producer.poll(0)
        self._producer.poll(0)

    @property
    def backlog(self) -> int:
        """Messages not yet accepted by the producer's queue."""
        return len(self._backlog)

    @property
    def in_flight(self) -> int:
        """Messages in the producer's queue, not yet acknowledged by the broker."""
        return len(self._producer)

    def stats(self) -> dict[str, int]:
        """Counters for the control endpoint."""
        return {
            "published": self.delivered,
            "produced": self.produced,
            "in_flight": self.in_flight,
            "backlog": self.backlog,
            "delivery_failed": self.failed,
        }

    def close(self, timeout: float = 2.0) -> int:
        """Deliver what can be delivered within ``timeout``; return what is left."""
        self.service()
        left = int(self._producer.flush(timeout))
        if left or self._backlog:
            log.warning("exiting with %d undelivered message(s)", left + len(self._backlog))
        return left + len(self._backlog)
