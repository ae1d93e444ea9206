"""The gateway's clients: a small PostgreSQL pool, the Kubernetes API, Scout.

The endpoints call the blocking clients (psycopg2, the official Kubernetes
client) from the framework's worker threads; Scout's client is asynchronous.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg2
from kubernetes.client import CoreV1Api, CustomObjectsApi
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from mwa_staging.db.connect import connect
from mwa_staging.kube import api_client
from mwa_staging.scout import ScoutClient
from mwa_staging.settings import Settings
from mwa_staging_gateway import metrics

T = TypeVar("T")


class Pool:
    """At most ``size`` connections, opened on demand, dropped when they fail."""

    def __init__(self, dsn: str, size: int) -> None:
        self._dsn = dsn
        self._idle: list[Connection] = []
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        with self._slots:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = connect(self._dsn, application_name="mwa-staging-gateway")
            broken = False
            try:
                yield conn
                conn.commit()
            except psycopg2.Error:
                broken = True
                raise
            except BaseException:
                with contextlib.suppress(psycopg2.Error):
                    conn.rollback()
                raise
            finally:
                if broken or conn.closed:
                    with contextlib.suppress(psycopg2.Error):
                        conn.close()
                else:
                    with self._lock:
                        self._idle.append(conn)

    def run(self, fn: Callable[[Cursor], T]) -> T:
        """``fn(cursor)`` in one transaction (committed when it returns)."""
        with self.connection() as conn, conn.cursor() as cur:
            return fn(cur)

    def run_conn(self, fn: Callable[[Connection], T]) -> T:
        with self.connection() as conn:
            return fn(conn)

    def close(self) -> None:
        with self._lock:
            for conn in self._idle:
                with contextlib.suppress(psycopg2.Error):
                    conn.close()
            self._idle.clear()


class Backend:
    """Everything the endpoints talk to."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Pool(settings.dsn(), size=8)
        client = api_client(settings.kubeconfig, pool_maxsize=16)
        self.custom = CustomObjectsApi(client)
        self.core = CoreV1Api(client)
        # HTTP requests wait for Scout seconds, not the operator's minutes of retries.
        scout_settings = settings.model_copy(
            update={
                "scout_retry_budget_seconds": settings.gateway_scout_timeout_seconds,
                "scout_timeout_seconds": min(
                    settings.scout_timeout_seconds, settings.gateway_scout_timeout_seconds
                ),
            }
        )
        self.scout = ScoutClient(scout_settings, observe=metrics.observe_scout)

    async def aclose(self) -> None:
        await self.scout.aclose()
        self.db.close()
