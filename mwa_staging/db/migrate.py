"""Versioned schema migrations, applied at start-up by the operator and the bridge.

Migrations are the files ``migrations/NNNN_name.sql``, applied in order, each in
its own transaction together with its row in ``schema_migrations``. Several
processes may start at once (two bridge replicas and the operator): a
session-level advisory lock makes them take turns, and the second finds the
work done.
"""

from __future__ import annotations

import logging
import re
from importlib import resources

import psycopg2.extensions

log = logging.getLogger(__name__)

# Advisory lock key for migrations (job ids, used as advisory keys elsewhere, are positive).
MIGRATION_LOCK_KEY = -7_200_001

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def available() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every migration shipped with the package, in order."""
    found = []
    for entry in resources.files("mwa_staging.db").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(conn: psycopg2.extensions.connection) -> list[int]:
    """Bring the schema up to date; return the versions applied by this call."""
    applied_now: list[int] = []
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    conn.commit()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in cur.fetchall()}
        conn.commit()
        for version, name, sql in available():
            if version in done:
                continue
            with conn.cursor() as cur:
                cur.execute(sql)
                cur.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
            conn.commit()
            log.info("applied database migration %s", name)
            applied_now.append(version)
    except Exception:
        conn.rollback()
        raise
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        conn.commit()
    return applied_now
