"""Async client of the Scout REST API of Banksia (docs/contracts.md, Scout API), through HAProxy.

Why it looks the way it does:

* One token is shared by every call of the process. Tokens expire, so a 401 or
  403 means "log in again once and repeat the call"; a second refusal right
  after a fresh login is a real error. Concurrent calls that hit an expired
  token log in only once (the login is serialised and a call that sees the
  token already replaced simply retries with the new one).
* Transient failures (connection errors, timeouts, 5xx) are retried with
  exponential backoff (:mod:`mwa_staging.retry`) for at most
  ``scout_retry_budget_seconds`` per call, then :class:`ScoutError` is raised:
  a Scout node down or HAProxy hiccup must not fail a job, but a long outage
  must end it (return code 102) rather than hang.
* Stage and cancel bodies are split into calls of at most
  ``scout_max_paths_per_call`` paths (the archive refuses bodies over ~4 MB).
* TLS is verified by default (``Settings.scout_verify``); the original turned
  it off everywhere.
* Every answer is read within ``scout_max_response_bytes`` and
  ``scout_timeout_seconds`` for the whole of it (:mod:`mwa_staging.bounded_http`):
  a node that drips or floods is a transient failure, like one that is down.
* Observability is injected (``observe(endpoint, outcome, seconds)``) so this
  module stays free of any process' metrics registry.

Credentials are never logged: errors carry the endpoint name and HTTP status,
never the request body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from mwa_staging.bounded_http import TooLarge, TooSlow, fetch
from mwa_staging.retry import Backoff
from mwa_staging.settings import Settings

log = logging.getLogger(__name__)

#: Requests to the Scout front in flight at once, per process (HAProxy spreads them).
SCOUT_CONNECTIONS = 8

#: ``observe(endpoint, outcome, seconds)``, called once per HTTP request made.
Observer = Callable[[str, str, float], None]
Sleeper = Callable[[float], Awaitable[None]]


class ScoutError(Exception):
    """A Scout call failed for good (refused, or still failing after the retry budget)."""

    def __init__(self, endpoint: str, message: str, status: int | None = None) -> None:
        super().__init__(f"Scout {endpoint} call failed: {message}")
        self.endpoint = endpoint
        self.status = status


class _Transient(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FileStatus:
    """The parts of ``GET /v1/file`` the operator uses."""

    path: str
    online_blocks: int
    offline_blocks: int

    @property
    def on_disk(self) -> bool:
        """A file is on disk when no block is offline (docs/contracts.md, Scout API)."""
        return self.offline_blocks == 0


@dataclass(frozen=True)
class CacheState:
    """``GET /v1/fscache``: sizes in bytes (the API may send them as digit strings)."""

    available: int
    total: int
    releasable: int
    non_releasable: int
    pending: int
    health: int
    health_status: str


def chunks(paths: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    """Consecutive slices of at most ``size`` paths."""
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class ScoutClient:
    """Login, stage, cancel, file status and cache state, with re-login and retries."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        observe: Observer | None = None,
        sleep: Sleeper = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._user = settings.scout_api_user
        self._password = settings.scout_api_password
        self._urls = {
            "login": str(settings.scout_login_url),
            "stage": str(settings.scout_stage_url),
            "cancel": str(settings.scout_cancel_url),
            "file": str(settings.scout_query_url),
            "fscache": str(settings.scout_cachestate_url),
        }
        self._client = httpx.AsyncClient(
            transport=transport,
            verify=settings.scout_verify() if transport is None else True,
            timeout=httpx.Timeout(settings.scout_timeout_seconds),
            limits=httpx.Limits(
                max_connections=SCOUT_CONNECTIONS, max_keepalive_connections=SCOUT_CONNECTIONS
            ),
        )
        # Few connections (httpcore checks every idle one on each request), and
        # requests beyond them wait here, not in httpcore's pool, whose queue is
        # scanned against every connection each time one frees up: with thousands
        # of jobs' stage calls at once that scan was a third of the operator's CPU
        # (issue 12, py-spy). The wait for a slot is not counted in a request's
        # time limit: it is our queue, not the archive's slowness.
        self._slots = asyncio.Semaphore(SCOUT_CONNECTIONS)
        self._observe = observe or (lambda endpoint, outcome, seconds: None)
        self._sleep = sleep
        self._clock = clock
        self._token: str | None = None
        self._login_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- public calls ---------------------------------------------------------

    async def stage(
        self,
        paths: Sequence[str],
        key: str,
        topic: str,
        *,
        on_accepted: Callable[[Sequence[str]], Awaitable[None]] | None = None,
    ) -> int:
        """Ask the archive to stage ``paths``; return the number of calls made.

        ``on_accepted(part)`` runs after each call Scout accepted, before the
        next one (the operator records its progress there; an exception it
        raises stops the remaining calls).
        """
        return await self._batch("stage", paths, key, topic, on_accepted)

    async def cancel(self, paths: Sequence[str], key: str, topic: str) -> int:
        """Cancel the pending stage requests of ``paths``; return the number of calls made."""
        return await self._batch("cancel", paths, key, topic)

    async def file_status(self, path: str) -> FileStatus | None:
        """The file's block counts, or None when the archive does not know the path."""
        response = await self._call("file", "GET", params={"path": path}, missing_ok=True)
        if response is None:
            return None
        body = _json(response, "file")
        return FileStatus(
            path=str(body.get("path", path)),
            online_blocks=_int(body.get("onlineblocks")),
            offline_blocks=_int(body.get("offlineblocks")),
        )

    async def fscache(self) -> CacheState:
        """The disk cache's sizes and health."""
        response = await self._call("fscache", "GET")
        assert response is not None
        body = _json(response, "fscache")
        return CacheState(
            available=_int(body.get("availdatasz")),
            total=_int(body.get("totdatasz")),
            releasable=_int(body.get("releaseable")),
            non_releasable=_int(body.get("nonreleaseable")),
            pending=_int(body.get("pending")),
            health=_int(body.get("health")),
            health_status=str(body.get("healthstatus", "")),
        )

    # -- machinery ------------------------------------------------------------

    async def _batch(
        self,
        endpoint: str,
        paths: Sequence[str],
        key: str,
        topic: str,
        on_accepted: Callable[[Sequence[str]], Awaitable[None]] | None = None,
    ) -> int:
        calls = 0
        for part in chunks(paths, self._settings.scout_max_paths_per_call):
            body = {"path": list(part), "copy": 0, "inode": [], "key": key, "topic": topic}
            await self._call(endpoint, "PUT", json=body)
            calls += 1
            if on_accepted is not None:
                await on_accepted(part)
        return calls

    async def _login(self, stale: str | None) -> str:
        """A valid token: log in unless another call already replaced ``stale``."""
        async with self._login_lock:
            if self._token is not None and self._token != stale:
                return self._token
            self._token = None  # a failed login below must not leave the stale token in use
            started = self._clock()
            try:
                response = await self._request(
                    "POST",
                    self._urls["login"],
                    json={"acct": self._user, "pass": self._password.get_secret_value()},
                )
            except (httpx.TransportError, TooLarge, TooSlow) as exc:
                self._observe("login", "error", self._clock() - started)
                raise _Transient(f"login: {_why(exc)}") from None
            outcome = "ok" if response.status_code == 200 else str(response.status_code)
            self._observe("login", outcome, self._clock() - started)
            if response.status_code >= 500:
                raise _Transient(f"login: HTTP {response.status_code}", response.status_code)
            if response.status_code != 200:
                raise ScoutError(
                    "login",
                    f"HTTP {response.status_code} (check the credentials)",
                    response.status_code,
                )
            token = _json(response, "login").get("response")
            if not isinstance(token, str) or not token:
                raise ScoutError("login", "the answer holds no token")
            self._token = token
            return token

    async def _call(
        self,
        endpoint: str,
        method: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        missing_ok: bool = False,
    ) -> httpx.Response | None:
        """One logical call: retried while transient, re-logged once on 401/403."""
        deadline = self._clock() + self._settings.scout_retry_budget_seconds
        delays = Backoff(
            self._settings.scout_retry_initial_seconds, self._settings.scout_retry_max_seconds
        ).delays()
        relogged = False
        while True:
            try:
                token = self._token or await self._login(None)
                response = await self._send(endpoint, method, token, json, params)
                if response.status_code in (401, 403):
                    if relogged:
                        raise ScoutError(
                            endpoint,
                            f"HTTP {response.status_code} even after a fresh login",
                            response.status_code,
                        )
                    relogged = True
                    await self._login(token)
                    continue
                if response.status_code >= 500:
                    raise _Transient(f"HTTP {response.status_code}", response.status_code)
                if response.status_code == 200:
                    return response
                if missing_ok and 400 <= response.status_code < 500:
                    return None
                raise ScoutError(
                    endpoint,
                    f"HTTP {response.status_code}: {_short(response)}",
                    response.status_code,
                )
            except _Transient as exc:
                pause = next(delays)
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise ScoutError(
                        endpoint,
                        f"{exc} (still failing after "
                        f"{self._settings.scout_retry_budget_seconds:g} s of retries)",
                        exc.status,
                    ) from None
                log.warning("Scout %s call failed (%s); retrying in %.1f s", endpoint, exc, pause)
                await self._sleep(min(pause, remaining))

    async def _send(
        self,
        endpoint: str,
        method: str,
        token: str,
        json: Any,
        params: dict[str, str] | None,
    ) -> httpx.Response:
        started = self._clock()
        try:
            response = await self._request(
                method,
                self._urls[endpoint],
                json=json,
                params=params,
                headers={"Authorization": f"Bearer {token}"},
            )
        except (httpx.TransportError, TooLarge, TooSlow) as exc:
            self._observe(endpoint, "error", self._clock() - started)
            raise _Transient(_why(exc)) from None
        outcome = "ok" if response.status_code == 200 else str(response.status_code)
        self._observe(endpoint, outcome, self._clock() - started)
        return response

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, its answer read within the size and time limits."""
        async with self._slots:
            answer = await fetch(
                self._client,
                method,
                url,
                max_bytes=self._settings.scout_max_response_bytes,
                seconds=self._settings.scout_timeout_seconds,
                **kwargs,
            )
        return httpx.Response(
            answer.status_code,
            content=answer.content,
            headers={"content-type": answer.headers.get("content-type", "")},
            request=httpx.Request(method, url),
        )


def _why(exc: Exception) -> str:
    if isinstance(exc, TooLarge | TooSlow):
        return str(exc)
    return type(exc).__name__


def _json(response: httpx.Response, endpoint: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise ScoutError(endpoint, "the answer is not JSON") from None
    if not isinstance(body, dict):
        raise ScoutError(endpoint, "the answer is not a JSON object")
    return body


def _short(response: httpx.Response) -> str:
    return response.text[:200].replace("\n", " ")
