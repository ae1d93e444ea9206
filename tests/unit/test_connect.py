"""Connection errors never carry the database password (they end up in logs and Events)."""

from __future__ import annotations

import psycopg2
import pytest

from mwa_staging.db.connect import connect, redact


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
