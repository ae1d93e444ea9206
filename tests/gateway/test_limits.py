"""Security settings of the gateway, each on a gateway of its own spawned for the test.

The stack's gateway runs the defaults; these tests start a second one with the
setting under test (a small body limit, an allow-list, a tokens file,
authentication off) and talk to it over HTTP only.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devstack.stack import Stack
from tests.e2e.sj import new_job_id
from tests.gateway.client import Api
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.stack

Spawn = Callable[[str, dict[str, str]], Api]


@pytest.fixture
def spawn(stack: Stack) -> Iterator[Spawn]:
    """``spawn(name, **env)`` starts a gateway with extra settings; stopped afterwards."""
    started: list[str] = []

    def start(name: str, env: dict[str, str]) -> Api:
        port = free_port()
        stack.spawn(name, "gateway", {"GATEWAY_PORT": str(port), **env})
        started.append(name)
        return Api(f"http://127.0.0.1:{port}", stack.env["STAGING_API_TOKEN"])

    yield start
    for name in started:
        stack.stop(name)


def post_chunked(api: Api, path: str, body: bytes) -> tuple[int, dict[str, str]]:
    """POST with Transfer-Encoding: chunked (no Content-Length to refuse up front)."""
    host, port = api.base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Authorization", f"Bearer {api.token}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for start in range(0, len(body), 8192):
            piece = body[start : start + 8192]
            conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        conn.send(b"0\r\n\r\n")
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_body_too_large_is_413_declared_or_chunked(spawn: Spawn, stack: Stack) -> None:
    api = spawn("gateway-small-body", {"GATEWAY_MAX_BODY_BYTES": "65536"})
    job_id = new_job_id()
    paths = [f"mwa/{job_id}/{i:06d}.fits" for i in range(4000)]  # ~100 kB of JSON
    body = {"job_id": job_id, "notify_url": stack.env["CALLBACK_URL"], "files": paths}
    answer = api.submit(body)
    assert answer.status == 413
    assert answer.body == {"errormsg": "request body too large: at most 65536 bytes are accepted"}
    status, got = post_chunked(api, "/staging", json.dumps(body).encode())
    assert status == 413 and "too large" in got["errormsg"]
    assert api.status(job_id).status == 404
    # Under the limit, chunked or not, it is an ordinary request.
    small = {**body, "files": paths[:10]}
    status, got = post_chunked(api, "/staging", json.dumps(small).encode())
    assert status == 202 and got is None


def test_callback_allow_list_applies_to_http_jobs(spawn: Spawn, stack: Stack) -> None:
    api = spawn("gateway-allow-list", {"CALLBACK_ALLOWED_HOSTS": '["asvo.example.org"]'})
    job_id = new_job_id()
    answer = api.submit(
        {"job_id": job_id, "notify_url": stack.env["CALLBACK_URL"], "files": ["mwa/a/b.fits"]}
    )
    assert answer.status == 400
    assert answer.body == {"errormsg": "notify_url: callbacks to host 127.0.0.1 are not allowed"}
    assert api.status(job_id).status == 404


def test_tokens_file_is_reread_so_tokens_rotate(spawn: Spawn, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("first-token\n")
    api = spawn("gateway-tokens-file", {"GATEWAY_TOKENS": "", "GATEWAY_TOKENS_FILE": str(tokens)})
    assert api.with_token("first-token").call("GET", "/get_joblist").status == 200
    assert api.call("GET", "/get_joblist").status == 401  # the stack's token is not in the file
    tokens.write_text("second-token\nthird-token\n")
    wait_for(
        lambda: api.with_token("second-token").call("GET", "/get_joblist").status == 200,
        timeout=10,
        message="the new token accepted",
    )
    assert api.with_token("third-token").call("GET", "/get_joblist").status == 200
    assert api.with_token("first-token").call("GET", "/get_joblist").status == 401


def test_authentication_off_is_explicit_and_warned(spawn: Spawn, stack: Stack) -> None:
    api = spawn("gateway-open", {"GATEWAY_AUTH": "none", "GATEWAY_TOKENS": ""})
    assert api.with_token(None).call("GET", "/get_stats").status == 200
    log = stack.log_path("gateway-open").read_text()
    assert "authentication is OFF (GATEWAY_AUTH=none)" in log


def test_no_token_configured_refuses_to_start(stack: Stack) -> None:
    """Authentication on (the default) without a token: the gateway does not serve at all."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, **stack.service_env("gateway"))
    env.update({"GATEWAY_TOKENS": "", "GATEWAY_PORT": str(free_port())})
    env.pop("GATEWAY_AUTH", None)
    result = subprocess.run(
        [sys.executable, "-m", "mwa_staging_gateway"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no token is configured" in result.stderr
