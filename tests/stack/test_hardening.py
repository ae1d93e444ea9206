"""TLS verified with the stack's own CA, and answers from outside bounded in size and time.

For each connection to the outside -- Scout (through the real HAProxy), the
data_files service, the callback receiver and Kafka (the SASL_SSL listener) --
our own client code (``Settings`` -> ``ScoutClient``, ``resolve_observation``,
``callback_client.send``, ``Settings.kafka_config``) succeeds with the stack CA
as its CA bundle and fails without it. The data_files and callback simulators
run here in-process behind TLS with a certificate of the stack CA (the stack's
own instances speak plain HTTP).

Then the hostile modes of the simulators: a data_files answer that is huge,
nested 100,000 deep, dripping or holding an unusable path; a Scout answer
(through HAProxy) that is huge or drips; a callback receiver that redirects,
streams forever or drips. Each ends in a clear failure within its limit, the
process' memory growing by far less than what was sent.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from aiohttp import web
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from devstack.sim import _server
from devstack.sim import callback as callback_sim
from devstack.sim import data_files as data_files_sim
from devstack.stack import Stack
from mwa_staging.callback_client import CallbackPayload, send
from mwa_staging.resolve import ResolveError, resolve_observation
from mwa_staging.scout import ScoutClient, ScoutError
from mwa_staging.settings import Settings
from mwa_staging.vocabulary import ReturnCode
from tests.helpers import wait_for

pytestmark = pytest.mark.stack

PAYLOAD = CallbackPayload(
    job_id=1, return_code=0, total_files=1, ready_files=1, error_files=0, comment="1 of 1"
)


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


@asynccontextmanager
async def tls_server(stack: Stack, app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` over TLS with a certificate of the stack CA; yields the base URL."""
    files = stack.pki.issue("hardening-test", common_name="127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(files.cert), str(files.key))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def scout_settings(stack: Stack, **kw: Any) -> Settings:
    base: dict[str, Any] = dict(
        scout_url=stack.env["SCOUT_URL"],
        scout_api_user=stack.env["SCOUT_API_USER"],
        scout_api_password=stack.env["SCOUT_API_PASSWORD"],
        scout_retry_budget_seconds=0.5,
        scout_retry_initial_seconds=0.1,
    )
    base.update(kw)
    return Settings(**base)


# ------------------------------------------------------------------------------ TLS


def test_scout_through_haproxy_verifies_with_the_stack_ca_and_fails_without(stack: Stack) -> None:
    assert stack.env["SCOUT_URL"].startswith("https://")

    async def fscache(settings: Settings) -> object:
        client = ScoutClient(settings)
        try:
            return await client.fscache()
        finally:
            await client.aclose()

    with_ca = asyncio.run(fscache(scout_settings(stack, scout_ca_file=stack.env["SCOUT_CA_FILE"])))
    assert with_ca is not None
    with pytest.raises(ScoutError, match="ConnectError"):
        asyncio.run(fscache(scout_settings(stack)))  # the system store does not know the CA


def test_data_files_verifies_with_the_stack_ca_and_fails_without(stack: Stack) -> None:
    async def lookup(ca: str | None) -> list[str]:
        async with tls_server(stack, data_files_sim.make_app()) as base:
            settings = Settings(
                data_files_url=f"{base}/metadata/data_files",
                data_files_ca_file=ca,
                data_files_attempts=1,
            )
            async with httpx.AsyncClient(verify=settings.data_files_verify()) as client:
                return await resolve_observation(client, settings, 1_234_500_003)

    assert asyncio.run(lookup(stack.env["SCOUT_CA_FILE"])) == data_files_sim.expected_paths(
        1_234_500_003
    )
    with pytest.raises(ResolveError, match="ConnectError") as err:
        asyncio.run(lookup(None))
    assert err.value.code == ReturnCode.LOOKUP_FAILED


def test_callback_verifies_with_the_stack_ca_and_fails_without(
    stack: Stack, tmp_path: Path
) -> None:
    async def deliver(ca: str | None) -> tuple[bool, str | None]:
        app = callback_sim.make_app("u", "p", tmp_path / "cb.jsonl")
        async with tls_server(stack, app) as base:
            settings = Settings(callback_ca_file=ca)
            async with httpx.AsyncClient(verify=settings.callback_verify()) as client:
                found = await send(client, f"{base}/callback", PAYLOAD, "u", "p", timeout=10)
                return found.delivered, found.error

    assert asyncio.run(deliver(stack.env["SCOUT_CA_FILE"])) == (True, None)
    delivered, error = asyncio.run(deliver(None))
    assert not delivered and error is not None and "ConnectError" in error


def test_kafka_settings_verify_the_broker_with_the_stack_ca_and_fail_without(
    stack: Stack,
) -> None:
    def settings(ca: str | None) -> Settings:
        return Settings(
            kafka_server=stack.env["KAFKA_SASL_BOOTSTRAP"],
            kafka_security_protocol="SASL_SSL",
            kafka_user=stack.env["KAFKA_USER"],
            kafka_password=stack.env["KAFKA_PASSWORD"],
            kafka_ca=ca,
        )

    good = AdminClient(settings(stack.env["KAFKA_CA"]).kafka_config())
    assert stack.env["KAFKA_TOPIC"] in good.list_topics(timeout=20).topics
    errors: list[KafkaError] = []
    bad = AdminClient({**settings(None).kafka_config(), "error_cb": errors.append, "log_level": 0})
    with pytest.raises(KafkaException):
        bad.list_topics(timeout=5)

    def ssl_error_seen() -> bool:
        bad.poll(0.2)
        return any(
            "certificate verify failed" in e.str() or e.code() == KafkaError._SSL for e in errors
        )

    wait_for(ssl_error_seen, timeout=20, interval=0, message="an SSL verification error")


# ------------------------------------------------------------------------- data_files


def data_files_settings(stack: Stack, **kw: Any) -> Settings:
    base: dict[str, Any] = dict(
        data_files_url=stack.env["DATA_FILES_URL"],
        data_files_attempts=1,
        data_files_timeout_seconds=3.0,
        data_files_max_bytes=8 * 1024 * 1024,
    )
    base.update(kw)
    return Settings(**base)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (1, "larger than 8388608 bytes"),
        (2, "nested too deeply"),
        (3, "no complete answer within 3 s"),
        (4, "unusable path"),
    ],
    ids=["huge", "deep", "drip", "unsafe-path"],
)
def test_hostile_data_files_answers_fail_the_lookup_within_bounds(
    stack: Stack, mode: int, message: str
) -> None:
    obs_id = data_files_sim.HOSTILE_FROM + mode
    before, started = _rss(), time.monotonic()

    async def lookup() -> list[str]:
        async with httpx.AsyncClient() as client:
            return await resolve_observation(client, data_files_settings(stack), obs_id)

    with pytest.raises(ResolveError, match=message) as err:
        asyncio.run(lookup())
    assert err.value.code == ReturnCode.LOOKUP_FAILED
    assert time.monotonic() - started < 10
    assert _rss() - before < 64 * 1024 * 1024  # the sender would go on to 2 GiB


# ------------------------------------------------------------------------------ Scout


@pytest.fixture
def scout_outage(stack: Stack) -> Callable[[dict[str, Any]], None]:
    control = stack.env["SIM_CONTROL_URL"]

    def set_outage(body: dict[str, Any]) -> None:
        httpx.post(f"{control}/control/outage", json=body, timeout=10).raise_for_status()

    yield set_outage  # type: ignore[misc]
    httpx.delete(f"{control}/control/outage", timeout=10).raise_for_status()


@pytest.mark.parametrize(
    ("mode", "message"),
    [("huge", "larger than 1048576 bytes"), ("drip", "no complete answer within 2 s")],
)
def test_hostile_scout_answers_through_haproxy_are_bounded(
    stack: Stack, scout_outage: Callable[[dict[str, Any]], None], mode: str, message: str
) -> None:
    scout_outage({"status": 200, "endpoint": "/v1/fscache", "mode": mode})
    settings = scout_settings(
        stack,
        scout_ca_file=stack.env["SCOUT_CA_FILE"],
        scout_max_response_bytes=1024 * 1024,
        scout_timeout_seconds=2.0,
    )
    before, started = _rss(), time.monotonic()

    async def fscache() -> object:
        client = ScoutClient(settings)
        try:
            return await client.fscache()
        finally:
            await client.aclose()

    with pytest.raises(ScoutError, match=message):
        asyncio.run(fscache())
    assert time.monotonic() - started < 15
    assert _rss() - before < 64 * 1024 * 1024


# --------------------------------------------------------------------------- callback


@pytest.fixture
def hostile_receiver(stack: Stack) -> Callable[[str], None]:
    base = stack.env["CALLBACK_URL"].rsplit("/callback", 1)[0]

    def set_mode(mode: str) -> None:
        httpx.post(
            f"{base}/_control/hostile", json={"mode": mode, "count": 1}, timeout=10
        ).raise_for_status()

    yield set_mode  # type: ignore[misc]
    httpx.delete(f"{base}/_control", timeout=10).raise_for_status()


def _log_since(stack: Stack, since: int) -> list[dict[str, Any]]:
    base = stack.env["CALLBACK_URL"].rsplit("/callback", 1)[0]
    return list(httpx.get(f"{base}/_control/log", params={"since": since}, timeout=10).json())


@pytest.mark.parametrize(
    ("mode", "delivered", "error"),
    [
        ("redirect", False, "HTTP 307 (redirects are not followed)"),
        ("huge", True, None),  # a 200 is a 200; its body is never read
        ("drip", True, None),  # likewise: the status came, the body is not waited for
    ],
)
def test_hostile_callback_receivers_are_bounded_and_never_followed(
    stack: Stack,
    hostile_receiver: Callable[[str], None],
    mode: str,
    delivered: bool,
    error: str | None,
) -> None:
    base = stack.env["CALLBACK_URL"].rsplit("/callback", 1)[0]
    since = len(_log_since(stack, 0))
    hostile_receiver(mode)
    tag = uuid.uuid4().hex
    before, started = _rss(), time.monotonic()

    async def deliver() -> tuple[bool, str | None]:
        async with httpx.AsyncClient() as client:
            found = await send(
                client,
                f"{base}/callback/{tag}",
                PAYLOAD,
                stack.env["RESULT_USERNAME"],
                stack.env["RESULT_PASSWORD"],
                timeout=5,
            )
            return found.delivered, found.error

    assert asyncio.run(deliver()) == (delivered, error)
    assert time.monotonic() - started < 8
    assert _rss() - before < 64 * 1024 * 1024
    paths = [entry["path"] for entry in _log_since(stack, since)]
    assert paths == [f"/callback/{tag}"]  # one request; the redirect's target never asked


def test_a_dripping_callback_status_line_times_out(tmp_path: Path) -> None:
    """A receiver that never finishes its answer's head: the whole attempt ends at the timeout."""

    async def hold(_request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def run() -> tuple[bool, str | None, float]:
        app = web.Application()
        app.router.add_post("/cb", hold)
        runner, port = await _server.start(app, "127.0.0.1", 0)
        try:
            started = time.monotonic()
            async with httpx.AsyncClient() as client:
                found = await send(client, f"http://127.0.0.1:{port}/cb", PAYLOAD, "u", "p", 1.5)
            return found.delivered, found.error, time.monotonic() - started
        finally:
            await runner.cleanup()

    delivered, error, seconds = asyncio.run(run())
    assert (delivered, error) == (False, "no answer within 1.5 s")
    assert seconds < 5
