"""The scheduler's due computation: sleep until the earliest work that could start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from mwa_staging_operator.scheduler import MIN_SLEEP_SECONDS, sleep_seconds

from mwa_staging.db.jobs_queries import DueTimes

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def due(**seconds: float | None) -> DueTimes:
    def at(name: str) -> datetime | None:
        value = seconds.get(name)
        return None if value is None else NOW + timedelta(seconds=value)

    return DueTimes(NOW, at("deadline"), at("restage"), at("callback"), at("cancel"), at("delete"))


def test_nothing_due_sleeps_the_maximum() -> None:
    assert sleep_seconds(due(), 30.0) == 30.0


def test_earliest_due_time_wins() -> None:
    assert sleep_seconds(due(deadline=20, restage=7, callback=12, delete=9), 30.0) == 7.0
    assert sleep_seconds(due(cancel=3), 30.0) == 3.0


def test_never_longer_than_the_safety_net() -> None:
    assert sleep_seconds(due(deadline=3600), 30.0) == 30.0


def test_overdue_work_sleeps_only_the_minimum() -> None:
    assert sleep_seconds(due(callback=-5), 30.0) == MIN_SLEEP_SECONDS


def test_full_lanes_are_ignored() -> None:
    times = due(restage=-1, callback=-1, deadline=25)
    assert sleep_seconds(times, 30.0, restage_blocked=True, callbacks_blocked=True) == 25.0


def test_rate_limited_callbacks_wait_for_a_slot() -> None:
    assert sleep_seconds(due(callback=-1), 30.0, callback_wait=4.5) == pytest.approx(4.5)
    # A deadline does not wait for the callback rate limit.
    assert sleep_seconds(due(callback=-1, deadline=1), 30.0, callback_wait=4.5) == 1.0
