"""Connection errors never carry the database password (they end up in logs and Events);
waiting for a database that is still starting."""

from __future__ import annotations

import asyncio
import logging

import psycopg2
import pytest

from mwa_staging.db.connect import connect, redact, until_reachable


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql//mwa:s3cret-pw@localhost/db",  # a typo: libpq quotes the whole string
        "host=localhost password=s3cret-pw bogus",
        "postgresql://mwa:s3cret-pw@localhost:99999x/db",
    ],
)
def test_connect_errors_do_not_show_the_password(dsn: str) -> None:
    with pytest.raises(psycopg2.Error) as caught:
        connect(dsn)
    assert "s3cret-pw" not in str(caught.value)
    assert "s3cret-pw" not in repr(caught.value)


def test_redact_url_encoded_password() -> None:
    dsn = "postgresql://mwa:p%40ss%3Aword@db/x"
    assert redact("bad p%40ss%3Aword and p@ss:word", dsn) == "bad *** and ***"


def test_until_reachable_waits_for_the_database_and_raises_anything_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[int] = []

    async def start() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise psycopg2.OperationalError("connection refused")
        return "started"

    log = logging.getLogger("test.until_reachable")
    with caplog.at_level(logging.WARNING, logger=log.name):
        assert asyncio.run(until_reachable(start, log, first_delay=0.01)) == "started"
    assert len(attempts) == 3
    assert sum("the database is not reachable yet" in r.message for r in caplog.records) == 2

    async def broken() -> None:
        attempts.append(1)
        raise psycopg2.ProgrammingError("relation does not exist")

    attempts.clear()
    with pytest.raises(psycopg2.ProgrammingError):
        asyncio.run(until_reachable(broken, log, first_delay=0.01))
    assert len(attempts) == 1
