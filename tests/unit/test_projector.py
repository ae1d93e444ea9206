"""The bridge's projector writes completions several at a time (no cluster, no database)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import pytest

from kafka_bridge import projector as projector_module
from kafka_bridge.projector import Projector
from mwa_staging.db import status_queries
from mwa_staging.projection import Outcome


class FakeKept:
    """Stands in for a kept PostgreSQL connection; counts drops."""

    dropped = 0

    def __init__(self, dsn: str, *, application_name: str) -> None:
        self.conn = object()

    def get(self) -> Any:
        return self.conn

    def drop(self) -> None:
        FakeKept.dropped += 1


class Conn:
    """The projector thread's own connection: only cursor() and commit() are used here."""

    @contextmanager
    def cursor(self) -> Iterator[None]:
        yield None

    def commit(self) -> None:
        return None


@pytest.fixture
def projector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Projector]:
    monkeypatch.setattr(projector_module, "KeptConnection", FakeKept)
    monkeypatch.setattr(status_queries, "still_dirty", lambda cur, pks: sorted(pks))
    FakeKept.dropped = 0
    the = Projector("postgresql://unused", None, min_interval_s=1.0, writers=4)  # type: ignore[arg-type]
    yield the
    the._pool.shutdown(wait=True)


def test_completions_are_written_writers_at_a_time_each_once(
    projector: Projector, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first four writes wait for each other: written one at a time, they would
    # break the barrier (its timeout), so the test fails unless four run at once.
    together = threading.Barrier(4, timeout=10)
    written: Counter[int] = Counter()
    lock = threading.Lock()

    def write_status(conn: Any, jobs: Any, job_pk: int) -> Outcome:
        if job_pk <= 4:
            together.wait()
        with lock:
            written[job_pk] += 1
        return Outcome(patched=True)

    monkeypatch.setattr(projector_module, "write_status", write_status)
    projector.wake(range(1, 21))
    projector._project_urgent(Conn())  # type: ignore[arg-type]
    assert written == Counter(range(1, 21))
    assert projector._urgent == set()


def test_a_database_error_keeps_every_completion_for_the_retry(
    projector: Projector, monkeypatch: pytest.MonkeyPatch
) -> None:
    def write_status(conn: Any, jobs: Any, job_pk: int) -> Outcome:
        if job_pk == 3:
            raise psycopg2.OperationalError("connection lost")
        return Outcome(patched=True)

    monkeypatch.setattr(projector_module, "write_status", write_status)
    projector.wake([1, 2, 3, 4, 5])
    with pytest.raises(psycopg2.OperationalError):
        projector._project_urgent(Conn())  # type: ignore[arg-type]
    assert projector._urgent == {1, 2, 3, 4, 5}  # retried first after the backoff
    assert FakeKept.dropped == 1  # the writer whose connection failed opens a new one
