"""Callback payload, one delivery attempt, backoff and give-up, the rate limiter."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from mwa_staging_operator.ratelimit import Pacer, SlidingWindowLimiter

from mwa_staging.callback_client import (
    after_failure,
    backoff_seconds,
    payload_for,
    send,
)
from mwa_staging.db.rows import JobRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job_row(**changes: object) -> JobRow:
    base = JobRow(
        id=1,
        uid="u",
        namespace="ns",
        name="n",
        job_id=42,
        live=True,
        state="complete",
        reason="FinishedWithErrors",
        message="2 staged, 1 failed",
        return_code=5,
        generation=1,
        total_files=3,
        ready_files=2,
        error_files=1,
        created_at=T0,
        start_time=T0,
        resolved_at=T0,
        stage_requested_at=T0,
        last_file_time=T0,
        completion_time=T0,
        deadline=None,
        restage_interval_s=60,
        next_restage_at=None,
        ttl_after_finished_s=None,
        notify_url="https://client.test/cb",
        callback_secret=None,
        callback_state="pending",
        callback_attempts=1,
        callback_last_attempt=None,
        callback_last_error=None,
        callback_next_attempt=None,
        callback_delivered_at=None,
        version=2,
        projected_version=1,
        projected_at=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_payload_has_exactly_the_contract_fields() -> None:
    body = json.loads(payload_for(job_row()).model_dump_json())
    assert body == {
        "job_id": 42,
        "return_code": 5,
        "total_files": 3,
        "ready_files": 2,
        "error_files": 1,
        "comment": "2 staged, 1 failed",
    }


def test_payload_needs_a_return_code() -> None:
    with pytest.raises(ValueError):
        payload_for(job_row(return_code=None))


def _send(status: int | Exception) -> tuple[object, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if isinstance(status, Exception):
            raise status
        return httpx.Response(status)

    async def go() -> object:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await send(
                client,
                "https://user:pw@client.test/cb",
                payload_for(job_row()),
                "asvo",
                "s3cret",
                timeout=60,
            )

    return asyncio.run(go()), seen


def test_send_posts_json_with_basic_auth() -> None:
    result, seen = _send(200)
    assert result.delivered  # type: ignore[attr-defined]
    request = seen[0]
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    expected = "Basic " + base64.b64encode(b"asvo:s3cret").decode()
    assert request.headers["Authorization"] == expected
    assert json.loads(request.content)["job_id"] == 42


@pytest.mark.parametrize("status", [201, 204, 302, 401, 500])
def test_only_200_counts(status: int) -> None:
    result, _ = _send(status)
    assert not result.delivered  # type: ignore[attr-defined]
    assert result.http_status == status  # type: ignore[attr-defined]


def test_network_errors_hide_url_and_credentials() -> None:
    result, _ = _send(httpx.ConnectError("boom https://user:pw@client.test"))
    assert not result.delivered  # type: ignore[attr-defined]
    assert "pw" not in result.error and "user" not in result.error  # type: ignore[attr-defined]
    timeout, _ = _send(httpx.ReadTimeout("slow"))
    assert timeout.error == "no answer within 60 s"  # type: ignore[attr-defined]


def test_backoff_doubles_and_is_capped_at_ten_minutes() -> None:
    assert [backoff_seconds(n, 5.0) for n in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert backoff_seconds(20, 5.0) == 600.0
    assert backoff_seconds(20, 5.0, maximum=3600.0) == 600.0
    assert backoff_seconds(3, 1.0, maximum=3.0) == 3.0


def test_retry_then_last_attempt_at_give_up_time_then_give_up() -> None:
    kwargs = {"initial": 60.0, "maximum": 600.0, "give_up_seconds": 100.0}
    first = after_failure(1, T0 + timedelta(seconds=1), T0, **kwargs)
    assert not first.give_up and first.next_attempt == T0 + timedelta(seconds=61)
    second = after_failure(2, T0 + timedelta(seconds=61), T0, **kwargs)
    assert second.next_attempt == T0 + timedelta(seconds=100)  # clamped to the give-up time
    last = after_failure(3, T0 + timedelta(seconds=100), T0, **kwargs)
    assert last.give_up and last.next_attempt is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_allows_n_per_sliding_window() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(3, 60.0, clock=clock)
    for _ in range(3):
        assert limiter.available() > 0
        limiter.take()
        limiter.finish()  # an instant send
        clock.now += 10
    assert limiter.available() == 0
    assert limiter.wait_seconds() == pytest.approx(30.0)  # the first leaves the window at 60
    with pytest.raises(RuntimeError):
        limiter.take()
    clock.now = 60.0
    assert limiter.available() == 1 and limiter.wait_seconds() == 0.0
    limiter.take()
    limiter.finish()
    assert limiter.available() == 0
    clock.now = 75.0  # the send at 10 left the window, the one at 20 not yet
    assert limiter.available() == 1
    clock.now = 80.0
    assert limiter.available() == 2


def test_rate_limiter_counts_a_send_from_its_end() -> None:
    """The receiver may see a request as late as its end: no window there holds more than N."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(2, 60.0, clock=clock)
    limiter.take()  # a slow send: starts at 0 ...
    limiter.take()
    assert limiter.available() == 0
    assert limiter.wait_seconds() == 60.0  # both in flight: nothing frees before a period
    clock.now = 30.0
    limiter.finish()  # ... and ends (arrives, at the latest) at 30
    limiter.finish()
    clock.now = 61.0  # counting starts would free both slots now: arrivals 30 and 61+ in 60 s
    assert limiter.available() == 0
    assert limiter.wait_seconds() == pytest.approx(29.0)
    clock.now = 90.0
    assert limiter.available() == 2


def test_pacer_spaces_every_caller_and_banks_no_burst() -> None:
    clock = FakeClock()
    pacer = Pacer(4.0, clock=clock)  # one slot per 0.25 s
    # Three callers at once: now, +0.25, +0.5 (all passes share the one rate).
    assert [pacer.delay() for _ in range(3)] == [0.0, 0.25, 0.5]
    clock.now = 10.0  # idle for a while: no banked slots, the next one is now
    assert pacer.delay() == 0.0
    assert pacer.delay() == pytest.approx(0.25)
    with pytest.raises(ValueError):
        Pacer(0)
