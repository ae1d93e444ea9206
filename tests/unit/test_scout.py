"""The Scout client against an in-process fake (httpx.MockTransport): login, retry, chunks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence

import httpx
import pytest

from mwa_staging.retry import Backoff
from mwa_staging.scout import ScoutClient, ScoutError, chunks
from mwa_staging.settings import Settings

Handler = Callable[[httpx.Request], httpx.Response]


class FakeScout:
    """Scout's API with scripted failures; records every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.tokens = 0
        self.valid: set[str] = set()
        self.failures: list[int | Exception] = []  # consumed by non-login calls
        self.files: dict[str, int] = {}  # path -> offline blocks

    def expire(self) -> None:
        self.valid.clear()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/v1/security/login":
            body = json.loads(request.content)
            if body != {"acct": "u", "pass": "secret"}:
                return httpx.Response(401)
            self.tokens += 1
            token = f"t{self.tokens}"
            self.valid.add(token)
            return httpx.Response(200, json={"response": token})
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return httpx.Response(failure)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.valid:
            return httpx.Response(401)
        if request.url.path == "/v1/file":
            path = request.url.params["path"]
            if path not in self.files:
                return httpx.Response(404)
            off = self.files[path]
            return httpx.Response(
                200, json={"path": path, "onlineblocks": 3 - off, "offlineblocks": off}
            )
        if request.url.path == "/v1/fscache":
            return httpx.Response(
                200,
                json={
                    "availdatasz": "10",
                    "totdatasz": "20",
                    "releaseable": 1,
                    "nonreleaseable": "0",
                    "pending": "5",
                    "health": 1,
                    "healthstatus": "ok",
                },
            )
        return httpx.Response(200, json={"response": "ok"})

    def calls(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == path]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make(fake: FakeScout, clock: Clock, **overrides: object) -> ScoutClient:
    values: dict[str, object] = {
        "scout_url": "https://scout.test",
        "scout_api_user": "u",
        "scout_api_password": "secret",
        "scout_retry_budget_seconds": 10.0,
        "scout_retry_initial_seconds": 1.0,
        "scout_retry_max_seconds": 4.0,
    }
    values.update(overrides)
    settings = Settings(**values)  # type: ignore[arg-type]
    return ScoutClient(
        settings, transport=httpx.MockTransport(fake), sleep=clock.sleep, clock=clock
    )


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_chunks_and_backoff() -> None:
    assert [list(c) for c in chunks(["a", "b", "c"], 2)] == [["a", "b"], ["c"]]
    delays = Backoff(1.0, 4.0).delays()
    assert [next(delays) for _ in range(5)] == [1.0, 2.0, 4.0, 4.0, 4.0]


def test_stage_logs_in_once_and_splits_calls() -> None:
    fake, clock = FakeScout(), Clock()

    async def go() -> int:
        client = make(fake, clock, scout_max_paths_per_call=3)
        calls = await client.stage([f"p{i}" for i in range(7)], "42", "topic-x")
        await client.aclose()
        return calls

    assert run(go()) == 3
    stages = fake.calls("/v1/request/batchstage")
    bodies = [json.loads(r.content) for r in stages]
    assert [len(b["path"]) for b in bodies] == [3, 3, 1]
    assert all(b["key"] == "42" and b["topic"] == "topic-x" for b in bodies)
    assert all(b["copy"] == 0 and b["inode"] == [] for b in bodies)
    assert all(r.method == "PUT" for r in stages)
    assert len(fake.calls("/v1/security/login")) == 1
    assert stages[0].headers["Authorization"] == "Bearer t1"


def test_expired_token_relogs_once_and_repeats() -> None:
    fake, clock = FakeScout(), Clock()

    async def go() -> None:
        client = make(fake, clock)
        await client.stage(["a"], "1", "t")
        fake.expire()
        await client.cancel(["a"], "1", "t")
        await client.aclose()

    run(go())
    assert len(fake.calls("/v1/security/login")) == 2
    cancels = fake.calls("/v1/request/cancelbatchstage")
    assert [r.headers["Authorization"] for r in cancels] == ["Bearer t1", "Bearer t2"]


def test_refused_again_after_relogin_is_an_error() -> None:
    fake, clock = FakeScout(), Clock()
    fake.failures = [403, 403]

    async def go() -> None:
        client = make(fake, clock)
        await client.stage(["a"], "1", "t")

    with pytest.raises(ScoutError) as err:
        run(go())
    assert err.value.status == 403
    assert len(fake.calls("/v1/security/login")) == 2


def test_bad_credentials_fail_without_retry_and_hide_password() -> None:
    fake, clock = FakeScout(), Clock()

    async def go() -> None:
        client = make(fake, clock, scout_api_password="wrong")
        await client.stage(["a"], "1", "t")

    with pytest.raises(ScoutError) as err:
        run(go())
    assert "wrong" not in str(err.value)
    assert clock.sleeps == []


def test_transient_failures_are_retried_with_backoff() -> None:
    fake, clock = FakeScout(), Clock()
    fake.failures = [503, httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), 502]

    async def go() -> None:
        client = make(fake, clock)
        await client.stage(["a"], "1", "t")

    run(go())
    assert clock.sleeps == [1.0, 2.0, 4.0, 3.0]  # the last one capped by the remaining budget
    assert len(fake.calls("/v1/request/batchstage")) == 5


def test_retry_budget_exhausted_raises() -> None:
    fake, clock = FakeScout(), Clock()
    fake.failures = [503] * 100

    async def go() -> None:
        client = make(fake, clock)
        await client.stage(["a"], "1", "t")

    with pytest.raises(ScoutError) as err:
        run(go())
    assert "503" in str(err.value)
    assert clock.now >= 10.0
    assert sum(clock.sleeps) <= 10.0 + 1e-9


def test_client_errors_are_not_retried() -> None:
    fake, clock = FakeScout(), Clock()
    fake.failures = [413]

    async def go() -> None:
        client = make(fake, clock)
        await client.stage(["a"], "1", "t")

    with pytest.raises(ScoutError) as err:
        run(go())
    assert err.value.status == 413
    assert clock.sleeps == []


def test_file_status_and_fscache() -> None:
    fake, clock = FakeScout(), Clock()
    fake.files = {"on": 0, "off": 3}

    async def go() -> tuple[object, ...]:
        client = make(fake, clock)
        result = (
            await client.file_status("on"),
            await client.file_status("off"),
            await client.file_status("unknown"),
            await client.fscache(),
        )
        await client.aclose()
        return result

    on, off, unknown, cache = run(go())  # type: ignore[misc]
    assert on.on_disk and not off.on_disk and unknown is None
    assert cache.available == 10 and cache.releasable == 1 and cache.health == 1


def test_tls_verified_by_default() -> None:
    assert Settings().scout_verify() is True
    assert Settings(scout_ca_file="/ca.pem").scout_verify() == "/ca.pem"
    assert Settings(scout_tls_verify=False).scout_verify() is False


def test_stage_reports_each_accepted_call_and_stops_when_told() -> None:
    """``on_accepted`` sees each accepted call in order (the operator's stage cursor);
    a refused call is not reported, and an exception from the hook stops the rest."""
    fake, clock = FakeScout(), Clock()
    seen: list[list[str]] = []

    class Stop(Exception):
        pass

    async def record(part: Sequence[str]) -> None:
        seen.append(list(part))
        if len(seen) == 2:
            raise Stop

    async def go() -> None:
        client = make(fake, clock, scout_max_paths_per_call=2)
        with pytest.raises(Stop):
            await client.stage([f"p{i}" for i in range(7)], "1", "t", on_accepted=record)
        seen.clear()
        fake.failures = [400]
        with pytest.raises(ScoutError):
            await client.stage(["a", "b", "c"], "1", "t", on_accepted=record)
        await client.aclose()

    run(go())
    assert seen == []  # the refused first call was never reported
    bodies = [json.loads(r.content)["path"] for r in fake.calls("/v1/request/batchstage")]
    assert bodies[:2] == [["p0", "p1"], ["p2", "p3"]]  # stopped after the second call
    assert len(bodies) == 3
