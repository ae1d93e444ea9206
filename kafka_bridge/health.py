"""What ``/healthz`` answers and the heartbeat row shows: is the bridge doing its job?

The consumer thread, the librdkafka callbacks and the recorder report into one
:class:`Health`; the HTTP thread reads it. The check fails at once on a broker
authentication or TLS error (a configuration mistake that will not heal by
itself: wrong SCRAM password, wrong CA), and after ``unhealthy_after`` seconds
of an unreachable broker or database or a consumer loop that stopped polling;
short outages (a broker restart) keep the pod alive while it reconnects.
"""

from __future__ import annotations

import threading
import time

from kafka_bridge import metrics


class Health:
    """Thread-safe liveness facts of one bridge process."""

    def __init__(self, unhealthy_after: float) -> None:
        self._lock = threading.Lock()
        self._after = unhealthy_after
        now = time.monotonic()
        self.started = now
        self.last_poll_mono = now
        self.last_poll: float | None = None  # epoch, for the heartbeat row
        self.last_message: float | None = None  # epoch of the last valid message applied
        self.broker_ok = False
        self._broker_bad_since: float | None = now
        self.broker_error: str | None = None  # authentication / TLS failure text
        self._db_bad_since: float | None = None
        self.db_error: str | None = None
        self.stopping = False

    # --- reports ---------------------------------------------------------
    def polled(self) -> None:
        with self._lock:
            self.last_poll_mono = time.monotonic()
            self.last_poll = time.time()

    def applied(self, valid_messages: int) -> None:
        if valid_messages:
            with self._lock:
                self.last_message = time.time()

    def broker_up(self) -> None:
        with self._lock:
            self.broker_ok = True
            self._broker_bad_since = None
            self.broker_error = None
        metrics.BROKER_UP.set(1)

    def broker_down(self, fatal_error: str | None = None) -> None:
        with self._lock:
            self.broker_ok = False
            if self._broker_bad_since is None:
                self._broker_bad_since = time.monotonic()
            if fatal_error is not None:
                self.broker_error = fatal_error
        metrics.BROKER_UP.set(0)

    def db_up(self) -> None:
        with self._lock:
            self._db_bad_since = None
            self.db_error = None

    def db_down(self, error: str) -> None:
        with self._lock:
            if self._db_bad_since is None:
                self._db_bad_since = time.monotonic()
            self.db_error = error

    # --- verdict ---------------------------------------------------------
    def check(self) -> tuple[bool, str]:
        """(healthy, one-line explanation) for /healthz."""
        now = time.monotonic()
        with self._lock:
            if self.broker_error:
                return False, f"kafka: {self.broker_error}"
            if self._broker_bad_since is not None and now - self._broker_bad_since > self._after:
                return False, f"kafka: no broker reachable for {now - self._broker_bad_since:.0f}s"
            if self._db_bad_since is not None and now - self._db_bad_since > self._after:
                return False, f"database unreachable for {now - self._db_bad_since:.0f}s: " + (
                    self.db_error or ""
                )
            if not self.stopping and now - self.last_poll_mono > self._after:
                return False, f"consumer loop has not polled for {now - self.last_poll_mono:.0f}s"
            state = "ok" if self.broker_ok else "ok (connecting to kafka)"
            if self.db_error:
                state += "; database: " + self.db_error
            return True, state
