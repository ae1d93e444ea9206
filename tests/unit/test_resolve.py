"""Path rules and query parameters of the data_files lookup (docs/contracts.md)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from mwa_staging.resolve import (
    ResolveError,
    archive_path,
    paths_from_body,
    query_params,
    resolve_observation,
)
from mwa_staging.settings import Settings
from mwa_staging.vocabulary import ReturnCode


@pytest.mark.parametrize(
    ("bucket", "folder", "expected"),
    [
        ("b", "f", "mwa/b/f/x.fits"),
        (None, "f", "mwa/f/x.fits"),
        ("b", None, "mwa/b/x.fits"),
        ("b", "/f/raw", "mwa/b/f/raw/x.fits"),
        (None, None, "mwa/x.fits"),
        ("", "", "mwa/x.fits"),
        ("b", "/", "mwa/b/x.fits"),
    ],
)
def test_archive_path_rules(bucket: str | None, folder: str | None, expected: str) -> None:
    assert archive_path("x.fits", bucket, folder) == expected


def test_query_params_without_window() -> None:
    assert query_params(1234567890, None, None) == {
        "obs_id": "1234567890",
        "location": "3",
        "terse": "True",
        "all_files": "False",
    }


@pytest.mark.parametrize(("start", "duration"), [(0, 10), (100, 0), (None, 5), (0, 0)])
def test_query_params_window_needs_both_non_zero(start: int | None, duration: int | None) -> None:
    params = query_params(1, start, duration)
    assert "mintime" not in params and "maxtime" not in params


def test_query_params_vcs_window() -> None:
    params = query_params(1234567890, 1234567900, 8)
    assert params["mintime"] == "1234567900"
    assert params["maxtime"] == "1234567908"


def test_paths_from_body_keeps_order_and_drops_duplicates() -> None:
    body = {
        "a.fits": {"bucket": "b", "folder": "f"},
        "b.fits": {"bucket": None, "folder": "/f"},
    }
    assert paths_from_body(body) == ["mwa/b/f/a.fits", "mwa/f/b.fits"]


@pytest.mark.parametrize("body", [[], "x", {"a": 3}, {"a": {"bucket": 5}}])
def test_malformed_body_is_lookup_failure(body: object) -> None:
    with pytest.raises(ResolveError) as err:
        paths_from_body(body)
    assert err.value.code == ReturnCode.LOOKUP_FAILED


def test_empty_body_is_no_files() -> None:
    with pytest.raises(ResolveError) as err:
        paths_from_body({})
    assert err.value.code == ReturnCode.NO_FILES


def _settings() -> Settings:
    return Settings(
        data_files_url="http://df.test/metadata/data_files",
        data_files_attempts=3,
        data_files_retry_seconds=0.01,
    )


async def _no_sleep(_: float) -> None:
    return None


def _resolve(handler: httpx.MockTransport, *window: int) -> list[str]:
    async def go() -> list[str]:
        async with httpx.AsyncClient(transport=handler) as client:
            return await resolve_observation(
                client, _settings(), 1234567890, *window, sleep=_no_sleep
            )

    return asyncio.run(go())


def test_lookup_404_is_101_without_retry() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(404)

    with pytest.raises(ResolveError) as err:
        _resolve(httpx.MockTransport(handler))
    assert err.value.code == ReturnCode.NO_FILES
    assert len(calls) == 1


def test_lookup_500_is_100_after_retries() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500)

    with pytest.raises(ResolveError) as err:
        _resolve(httpx.MockTransport(handler))
    assert err.value.code == ReturnCode.LOOKUP_FAILED
    assert "HTTP 500" in err.value.message
    assert len(calls) == 3


def test_lookup_recovers_and_sends_window() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("down")
        body = {"f.sub": {"bucket": "b", "folder": "1"}}
        return httpx.Response(200, content=json.dumps(body))

    paths = _resolve(httpx.MockTransport(handler), 1234567900, 8)
    assert paths == ["mwa/b/1/f.sub"]
    query = dict(calls[-1].url.params)
    assert query["mintime"] == "1234567900" and query["maxtime"] == "1234567908"
    assert query["location"] == "3" and query["obs_id"] == "1234567890"


def test_lookups_in_flight_are_bounded_by_the_slots_and_none_is_held_while_pausing() -> None:
    """Thousands of observation jobs at once: the shared service sees a bounded load."""
    in_flight = 0
    most = 0
    answered: dict[str, int] = {}
    body = json.dumps({"x.fits": {"bucket": "b", "folder": "f"}})
    answers_during_pause: list[int] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.005)  # the service taking its time, so that requests would overlap
        in_flight -= 1
        obs = request.url.params["obs_id"]
        answered[obs] = answered.get(obs, 0) + 1
        if obs == "7" and answered[obs] == 1:
            return httpx.Response(503)  # this lookup retries: its pause must free its slot
        return httpx.Response(200, content=body)

    async def pause(_: float) -> None:
        before = sum(answered.values())
        await asyncio.sleep(0.05)  # the retry pause; the others go on meanwhile
        answers_during_pause.append(sum(answered.values()) - before)

    async def go() -> list[list[str]]:
        slots = asyncio.Semaphore(1)
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await asyncio.gather(
                *(
                    resolve_observation(client, _settings(), obs, sleep=pause, slots=slots)
                    for obs in range(1, 21)
                )
            )

    results = asyncio.run(go())
    assert all(paths == ["mwa/b/f/x.fits"] for paths in results)
    assert most == 1
    assert answered["7"] == 2
    assert len(answers_during_pause) == 1 and answers_during_pause[0] > 0
