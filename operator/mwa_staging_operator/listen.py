"""PostgreSQL LISTEN in a thread: a completed job's NOTIFY wakes the scheduler at once.

The transaction that completes a job (the bridge's, or a restage pass's) sends
``NOTIFY mwa_staging_jobs, '<id>'`` (:mod:`mwa_staging.db.completion`); the
scheduler must then send the callback. Listening costs one idle connection
and nothing per job, which is what lets the operator sleep until the next due
time instead of polling. After a lost connection the listener reconnects and
calls ``on_notify`` once, because notifications sent while it was away are
gone (the scheduler then re-reads the due times, so nothing is missed).
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
from collections.abc import Callable

import psycopg2
from psycopg2 import sql

from mwa_staging.db.connect import connect
from mwa_staging.retry import Backoff

log = logging.getLogger(__name__)

#: Pauses before reconnecting after the LISTEN connection was lost.
RECONNECT_BACKOFF = Backoff(1.0, 30.0)


class Listener(threading.Thread):
    """A daemon thread that calls ``on_notify(payload)`` for each notification."""

    def __init__(
        self,
        dsn: str,
        channel: str,
        on_notify: Callable[[str], None],
        poll_seconds: float = 1.0,
    ) -> None:
        super().__init__(name=f"listen-{channel}", daemon=True)
        self._dsn = dsn
        self._channel = channel
        self._on_notify = on_notify
        self._poll = poll_seconds
        self._stopping = threading.Event()
        self.connected = False

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        delays = RECONNECT_BACKOFF.delays()
        while not self._stopping.is_set():
            conn = None
            problem: str | None = None
            try:
                conn = connect(self._dsn, application_name="mwa-staging-operator-listen")
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                self.connected = True
                delays.reset()
                self._on_notify("")  # catch up on whatever happened while not listening
                while not self._stopping.is_set():
                    ready, _, _ = select.select([conn], [], [], self._poll)
                    if not ready:
                        continue
                    conn.poll()
                    while conn.notifies:
                        note = conn.notifies.pop(0)
                        self._on_notify(note.payload)
            except (psycopg2.Error, OSError) as exc:
                problem = type(exc).__name__
            finally:
                self.connected = False
                if conn is not None:
                    with contextlib.suppress(psycopg2.Error):
                        conn.close()
            pause = next(delays)
            if problem is not None and not self._stopping.is_set():
                log.warning(
                    "LISTEN %s lost (%s); reconnecting in %.0f s", self._channel, problem, pause
                )
            self._stopping.wait(pause)
