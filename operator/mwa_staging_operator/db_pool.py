"""The operator's PostgreSQL access: a few connections used from a dedicated thread pool.

psycopg2 blocks, and kopf runs every handler on one event loop, so each
database step runs in a worker thread (``DatabasePool.run``) and the loop stays free.
The pool is small and fixed (``db_pool_size`` threads and connections): with
thousands of jobs the database work is many short transactions, and a bounded
pool keeps the load on PostgreSQL bounded too. A connection that failed is
dropped and replaced on next use, so a database restart heals by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import psycopg2
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from mwa_staging.db.connect import connect

log = logging.getLogger(__name__)

T = TypeVar("T")


class DatabasePool:
    """``await db.run(fn)`` runs ``fn(cursor)`` in one transaction in a worker thread."""

    def __init__(self, dsn: str, size: int, *, application_name: str = "mwa-staging-operator"):
        self._dsn = dsn
        self._name = application_name
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue()
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="db")

    def _acquire(self) -> Connection:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            return connect(self._dsn, application_name=self._name)
        if conn.closed:
            return connect(self._dsn, application_name=self._name)
        return conn

    def _release(self, conn: Connection, broken: bool) -> None:
        if broken or conn.closed:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
            return
        self._idle.put(conn)

    def call(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` in the calling thread; commit after, roll back on error."""
        conn = self._acquire()
        broken = False
        try:
            result = fn(conn)
            conn.commit()
            return result
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            broken = True
            raise
        except BaseException:
            try:
                conn.rollback()
            except psycopg2.Error:
                broken = True
            raise
        finally:
            self._release(conn, broken)

    async def run_conn(self, fn: Callable[[Connection], T]) -> T:
        """``fn(connection)`` in a worker thread (for code that manages its own transactions)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.call, fn)

    async def run(self, fn: Callable[[Cursor], T]) -> T:
        """``fn(cursor)`` in one transaction in a worker thread."""

        def with_cursor(conn: Connection) -> T:
            with conn.cursor() as cur:
                return fn(cur)

        return await self.run_conn(with_cursor)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                break
            conn.close()
