"""Opening PostgreSQL connections.

psycopg2 is synchronous; the operator calls it from its database thread pool
(``mwa_staging_operator.db_pool``) and the bridge from its recorder and
projector threads (each keeps one :class:`KeptConnection`). Connections are
opened with keepalives and a connect timeout so that a database restart is
noticed and a reconnect can follow instead of a hang.

The connection string holds the password, and libpq quotes the string back in
some errors (``invalid dsn: missing "=" after "postgresql//user:secret@..."``
for a mistyped ``DATABASE_URL``). Such errors would end up in logs and kopf's
Events, so :func:`connect` re-raises them with the password removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import psycopg2
import psycopg2.extensions

REDACTED = "***"
T = TypeVar("T")


def _secrets(dsn: str) -> list[str]:
    """Password-like parts of a connection string (URL or key=value), best effort."""
    found: list[str] = []
    with contextlib.suppress(psycopg2.Error):
        found.append(psycopg2.extensions.parse_dsn(dsn).get("password") or "")
    try:
        password = urlsplit(dsn).password
    except ValueError:
        password = None
    if password:
        found += [password, unquote(password)]
    # A URL too broken to parse: whatever sits between the last ':' and '@' of its userinfo.
    head = dsn.split("@", 1)[0] if "@" in dsn else ""
    if ":" in head:
        found.append(head.rsplit(":", 1)[1])
    return sorted({s for s in found if s}, key=len, reverse=True)


def redact(text: str, dsn: str) -> str:
    """``text`` with every password-like part of ``dsn`` replaced by ``***``."""
    for secret in _secrets(dsn):
        text = text.replace(secret, REDACTED)
    return text


def connect(dsn: str, *, application_name: str = "mwa-staging") -> psycopg2.extensions.connection:
    """Open a connection in READ COMMITTED with autocommit off (explicit transactions)."""
    try:
        conn = psycopg2.connect(
            dsn,
            application_name=application_name,
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
    except psycopg2.Error as exc:
        message = str(exc)
        clean = redact(message, dsn)
        if clean == message:
            raise
        raise type(exc)(clean) from None
    conn.autocommit = False
    return conn


class KeptConnection:
    """The one connection a long-lived thread keeps: opened on first use, reopened once lost.

    The bridge's recorder and projector threads each hold one. ``on_open``
    prepares a new session (and commits) before it is handed out.
    """

    def __init__(
        self,
        dsn: str,
        *,
        application_name: str,
        on_open: Callable[[psycopg2.extensions.connection], None] | None = None,
    ) -> None:
        self._dsn = dsn
        self._name = application_name
        self._on_open = on_open
        self._conn: psycopg2.extensions.connection | None = None

    def get(self) -> psycopg2.extensions.connection:
        """The connection, opening a new one if there is none or it was closed."""
        if self._conn is None or self._conn.closed:
            conn = connect(self._dsn, application_name=self._name)
            if self._on_open is not None:
                self._on_open(conn)
            self._conn = conn
        return self._conn

    def rollback(self) -> None:
        """End a failed transaction; a connection that cannot even roll back is dropped."""
        if self._conn is not None:
            try:
                self._conn.rollback()
            except psycopg2.Error:
                self.drop()

    def drop(self) -> None:
        """Close and forget the connection (the next :meth:`get` opens a new one)."""
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
        self._conn = None


async def until_reachable(
    start: Callable[[], Awaitable[T]],
    log: logging.Logger,
    *,
    first_delay: float = 0.5,
    longest_delay: float = 5.0,
) -> T:
    """``await start()`` again and again until the database lets it through.

    In a pod the database may still be starting (the chart's bundled PostgreSQL
    initialises beside the operator and the gateway): a process that waits, not
    Ready meanwhile, is better than one that exits and is restarted by the
    kubelet with a growing back-off. Errors other than an unreachable database
    are raised at once.
    """
    delay = first_delay
    while True:
        try:
            return await start()
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            log.warning("the database is not reachable yet (%s); retrying in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest_delay)
