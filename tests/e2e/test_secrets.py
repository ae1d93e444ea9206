"""No secret ever shows: logs at DEBUG, Events, status, /metrics, error messages.

The operator, the bridge (on the SASL_SSL listener, so it really uses the Kafka
password) and the gateway are replaced by instances logging at DEBUG. Then a
scenario that walks the paths where a secret could slip out: HTTP jobs with the
gateway token as a bearer token and as a Basic-auth password, a job whose
callback credentials come from a Secret, a callback that fails once, a job
whose Secret is missing, an expired Scout token (a re-login), a failing
data_files lookup, refused callback URLs carrying a password (gateway 400 and
API server), and a wrong gateway token. Afterwards every line of the three
processes' logs, every Event and StagingJob status in the cluster, the
gateway's 400 bodies, the database's job and callback-attempt texts, and each
process' /metrics page are searched for every secret value (as is, base64 and
URL-quoted): the Scout password, the Kafka password, the database password,
the gateway token, the default callback password and the job Secret's password.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg2
import pytest

from devstack.stack import Stack
from tests.e2e import sj
from tests.e2e.sj import Jobs, callback_control, new_job_id
from tests.e2e.target import FAST_ENV
from tests.gateway.client import Api
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.stack

NAMES = {"operator": "operator-debug", "kafka-bridge": "bridge-debug", "gateway": "gateway-debug"}


def forms(value: str) -> set[str]:
    """The ways a secret could be written out."""
    raw = value.encode()
    return {
        value,
        base64.b64encode(raw).decode(),
        urllib.parse.quote(value, safe=""),
        json.dumps(value)[1:-1],
    }


@pytest.fixture
def debug_services(stack: Stack) -> Iterator[dict[str, int]]:
    """The three services at DEBUG (the bridge on SASL_SSL); the stack's own are back after."""
    ports = {kind: free_port() for kind in NAMES}
    env = {
        "operator": {
            **FAST_ENV,
            "LOG_LEVEL": "DEBUG",
            "OPERATOR_HTTP_PORT": str(ports["operator"]),
        },
        "kafka-bridge": {
            "LOG_LEVEL": "DEBUG",
            "BRIDGE_HTTP_PORT": str(ports["kafka-bridge"]),
            "KAFKA_SERVER": stack.env["KAFKA_SASL_BOOTSTRAP"],
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        },
        "gateway": {"LOG_LEVEL": "DEBUG", "GATEWAY_PORT": str(ports["gateway"])},
    }
    stopped = [kind for kind in NAMES if stack.is_running(kind)]
    for kind in stopped:
        stack.stop(kind)
    try:
        for kind, name in NAMES.items():
            stack.spawn(name, kind, env[kind])
        yield ports
    finally:
        for name in NAMES.values():
            stack.stop(name)
        for kind in stopped:
            stack.start(kind)


def secrets_of(stack: Stack, job_secret: str, url_password: str) -> dict[str, str]:
    db_password = urllib.parse.urlsplit(stack.env["DATABASE_URL"]).password or ""
    found = {
        "Scout password": stack.env["SCOUT_API_PASSWORD"],
        "Kafka password": stack.env["KAFKA_PASSWORD"],
        "database password": urllib.parse.unquote(db_password),
        "gateway token": stack.env["STAGING_API_TOKEN"],
        "callback password": stack.env["RESULT_PASSWORD"],
        "job Secret password": job_secret,
        "password in a refused URL": url_password,
    }
    assert all(len(v) >= 8 for v in found.values()), "a secret too short to search for"
    return found


def test_no_secret_in_logs_events_status_metrics_or_errors(
    stack: Stack, debug_services: dict[str, int]
) -> None:
    job_secret = "jobsecret-" + uuid.uuid4().hex
    url_password = "urlpass-" + uuid.uuid4().hex
    secrets = secrets_of(stack, job_secret, url_password)
    token = stack.env["STAGING_API_TOKEN"]
    gateway = f"http://127.0.0.1:{debug_services['gateway']}"
    api = Api(gateway, token)
    wait_for(lambda: api.call("GET", "/ping").status == 200, timeout=30, message="gateway up")
    texts: dict[str, str] = {}

    with sj.namespace(stack, "secrets") as jobs:
        texts.update(_scenario(stack, jobs, api, gateway, job_secret, url_password))
        texts["events"] = stack.kubectl("get", "events", "-A", "-o", "json").stdout
        texts["statuses"] = stack.kubectl("get", "stagingjobs", "-A", "-o", "json").stdout
    texts["database"] = _database_texts(stack)
    for kind, port in debug_services.items():
        texts[f"{kind} /metrics"] = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for name in NAMES.values():
        texts[f"{name} log"] = stack.log_path(name).read_text(errors="replace")
    assert "DEBUG" in texts["operator-debug log"]  # the bridge has little to say at DEBUG
    assert "consuming" in texts["bridge-debug log"]

    leaks = [
        f"{what} in {where}"
        for what, value in secrets.items()
        for where, text in texts.items()
        if any(form in text for form in forms(value))
    ]
    assert not leaks, leaks
    lines = sum(t.count("\n") for t in texts.values())
    print(f"searched {len(texts)} sources, {lines} lines, for {len(secrets)} secrets: none found")


def _scenario(
    stack: Stack, jobs: Jobs, api: Api, gateway: str, job_secret: str, url_password: str
) -> dict[str, str]:
    texts: dict[str, str] = {}
    cb = stack.env["CALLBACK_URL"]
    base = 900_000_000 + new_job_id() % 10**8
    # The gateway token as a bearer token, and as a Basic-auth password.
    files = [f"mwa/{base}/a.fits", f"mwa/{base}/b_ERROR.fits"]
    assert (
        api.call("POST", "/staging", {"job_id": base, "notify_url": cb, "files": files}).status
        == 202
    )
    basic = base64.b64encode(f"portal:{api.token}".encode()).decode()
    answer = Api(gateway, None).call(
        "POST", "/staging",
        {"job_id": base + 1, "notify_url": cb, "obs": {"obs_id": 9_000_000_001}},
        headers={"Authorization": f"Basic {basic}"},
    )  # fmt: skip
    assert answer.status == 202, answer
    # A callback URL carrying a password: the gateway and the API server refuse it.
    refused = api.call("POST", "/staging", {"job_id": base + 2, "files": ["mwa/x"],
                       "notify_url": f"https://portal:{url_password}@example.org/cb"})  # fmt: skip
    assert refused.status == 400
    texts["gateway 400"] = json.dumps(refused.body)
    texts["API server refusal"] = jobs.refused(
        "creds", base + 3, files=["a"], callback={"url": f"https://u:{url_password}@x.test/cb"}
    )
    assert Api(gateway, "wrong-" + uuid.uuid4().hex).call("GET", "/get_joblist").status == 401

    # kubectl jobs: a Secret's credentials, a failing first callback, a missing Secret.
    secret_args = ["--from-literal=username=jobuser", f"--from-literal=password={job_secret}"]
    stack.kubectl("create", "secret", "generic", "cb-creds", "-n", jobs.ns, *secret_args)
    callback_control(stack, "/users", {"user": "jobuser", "password": job_secret})
    callback_control(stack, "/fail", {"status": 500, "count": 1})
    httpx.post(f"{stack.env['SIM_CONTROL_URL']}/control/expire-tokens", timeout=10)
    jobs.create("with-secret", base + 4, files=[f"mwa/{base}/c.fits"],
                callback={"url": cb, "secretRef": {"name": "cb-creds"}})  # fmt: skip
    jobs.create("missing-secret", base + 5, files=[f"mwa/{base}/d.fits"],
                callback={"url": cb, "secretRef": {"name": "no-such-secret"}})  # fmt: skip
    status = jobs.wait_delivered("with-secret", timeout=90)
    assert status["returnCode"] == 0
    wait_for(
        lambda: jobs.status("missing-secret").get("callback", {}).get("attempts", 0) >= 2,
        timeout=60,
        message="the missing Secret's callback failing",
    )
    http_jobs = Jobs(stack, stack.env["GATEWAY_NAMESPACE"])
    for job_id in (base, base + 1):
        http_jobs.wait_delivered(f"job-{job_id}", timeout=90)
    callback_control(stack, "", None, method="DELETE")
    return texts


def _database_texts(stack: Stack) -> str:
    with psycopg2.connect(stack.env["DATABASE_URL"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(message, ''), coalesce(callback_last_error, ''),"
                    " notify_url FROM jobs")  # fmt: skip
        rows: list[Any] = list(cur.fetchall())
        cur.execute("SELECT coalesce(error, '') FROM callback_attempts")
        rows += list(cur.fetchall())
    conn.close()
    return "\n".join(" ".join(str(c) for c in row) for row in rows) + os.linesep
