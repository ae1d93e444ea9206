"""Opening PostgreSQL connections.

psycopg2 is synchronous; the operator calls it from worker threads
(``asyncio.to_thread``) and the bridge from its consumer thread. Connections are
opened with keepalives and a connect timeout so that a database restart is
noticed and a reconnect can follow instead of a hang.
"""

from __future__ import annotations

import psycopg2
import psycopg2.extensions


def connect(dsn: str, *, application_name: str = "mwa-staging") -> psycopg2.extensions.connection:
    """Open a connection in READ COMMITTED with autocommit off (explicit transactions)."""
    conn = psycopg2.connect(
        dsn,
        application_name=application_name,
        connect_timeout=10,
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    )
    conn.autocommit = False
    return conn
