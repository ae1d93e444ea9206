"""The callback to the client (docs/contracts.md, Callback): payload, one delivery attempt, backoff.

Only the mechanics of one attempt live here; when to attempt, how often and
what to record is the operator's scheduler. Rules from the contract:

* JSON body ``{job_id, return_code, total_files, ready_files, error_files,
  comment}``, HTTP Basic auth, 60 s timeout, TLS verified by default;
* only HTTP 200 counts as delivered (a 201 or 204 is *not*: the original
  treated only 200 as success and clients were written against it);
* redirects are not followed (a redirect would resend the credentials
  elsewhere); a 3xx is a failed attempt;
* the whole attempt takes at most the timeout, and the answer's body is never
  read (only its status counts; the connection is closed after the head), so a
  receiver that drips or streams forever holds neither a connection nor memory;
* where the URL may point is :mod:`mwa_staging.callback_policy`'s business,
  checked by the caller before each attempt.

Error texts written to the database and the status never contain the URL
(it may carry credentials in its userinfo) nor the auth header.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel

from mwa_staging.db.rows import JobRow
from mwa_staging.retry import Backoff

#: The contract's cap on the pause between two attempts.
MAX_BACKOFF_SECONDS = 600.0


class CallbackPayload(BaseModel):
    """The JSON body POSTed to the client."""

    job_id: int
    return_code: int
    total_files: int
    ready_files: int
    error_files: int
    comment: str


def payload_for(job: JobRow) -> CallbackPayload:
    """The payload of a finished job row."""
    if job.return_code is None:
        raise ValueError(f"job {job.job_id} has no return code yet")
    return CallbackPayload(
        job_id=job.job_id,
        return_code=job.return_code,
        total_files=job.total_files,
        ready_files=job.ready_files,
        error_files=job.error_files,
        comment=job.message or "",
    )


@dataclass(frozen=True)
class Delivery:
    """What one attempt achieved."""

    delivered: bool
    http_status: int | None
    error: str | None


async def send(
    client: httpx.AsyncClient,
    url: str,
    payload: CallbackPayload,
    username: str,
    password: str,
    timeout: float = 60.0,
) -> Delivery:
    """POST the payload once; never raises for network or HTTP failures."""
    try:
        async with asyncio.timeout(timeout):
            status = await _post(client, url, payload, username, password, timeout)
    except (httpx.TimeoutException, TimeoutError):
        return Delivery(False, None, f"no answer within {timeout:g} s")
    except httpx.TransportError as exc:
        return Delivery(False, None, f"{type(exc).__name__} connecting to {host_of(url)}")
    if status == 200:
        return Delivery(True, 200, None)
    if 300 <= status < 400:
        return Delivery(False, status, f"HTTP {status} (redirects are not followed)")
    return Delivery(False, status, f"HTTP {status}")


async def _post(
    client: httpx.AsyncClient,
    url: str,
    payload: CallbackPayload,
    username: str,
    password: str,
    timeout: float,
) -> int:
    """The answer's status; the body is not read (leaving the block closes the stream)."""
    async with client.stream(
        "POST",
        url,
        content=payload.model_dump_json(),
        headers={"Content-Type": "application/json"},
        auth=httpx.BasicAuth(username, password),
        timeout=timeout,
        follow_redirects=False,
    ) as response:
        return response.status_code


def host_of(url: str) -> str:
    """The host name of a URL (for messages: never the userinfo or the path)."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def backoff_seconds(attempt: int, initial: float, maximum: float = MAX_BACKOFF_SECONDS) -> float:
    """Pause after failed attempt number ``attempt`` (1-based): initial * 2^(n-1), capped.

    The cap is never above the contract's 10 minutes, whatever the setting. The
    attempt number comes from the database, so the pause is a function of it
    (:meth:`mwa_staging.retry.Backoff.delay`), not the state of a loop.
    """
    return Backoff(initial, min(maximum, MAX_BACKOFF_SECONDS)).delay(attempt)


@dataclass(frozen=True)
class Decision:
    """After a failed attempt: try again at ``next_attempt``, or give up."""

    give_up: bool
    next_attempt: datetime | None


def after_failure(
    attempt: int,
    now: datetime,
    finished_at: datetime,
    *,
    initial: float,
    maximum: float,
    give_up_seconds: float,
) -> Decision:
    """When to try again after failed attempt ``attempt``, given the give-up time.

    The last attempt is made at the give-up time itself (not skipped because the
    next regular slot would fall after it), so a receiver that recovers just
    before the deadline is still told.
    """
    give_up_at = finished_at + timedelta(seconds=give_up_seconds)
    if now >= give_up_at:
        return Decision(True, None)
    pause = timedelta(seconds=backoff_seconds(attempt, initial, maximum))
    return Decision(False, min(now + pause, give_up_at))
