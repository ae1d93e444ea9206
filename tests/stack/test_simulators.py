"""The simulators of docs/contracts.md behave as the contracts say.

Two levels:

* through the session's stack (fixture ``stack``): Scout calls go through the
  real HAProxy over TLS to the stack's nodes and banksia, messages are read
  back from the real Kafka broker, data_files and the callback receiver are the
  stack's own processes. These tests only change shared settings inside a
  ``try/finally`` that restores them, and use unique paths, keys and topics;
* against private simulator instances (in-process on a thread, or as
  subprocesses with ``--port 0``) for what would disturb the shared stack:
  token lifetime, outages, pause, delays, scale, a broker that is away, and
  killing a node.

Nothing sleeps to synchronise: every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import select
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from devstack.sim import _server
from devstack.sim.archive import ERROR_TEXT, Archive
from devstack.sim.banksia import make_app as banksia_app
from devstack.sim.data_files import expected_paths
from devstack.sim.publisher import Publisher
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.stack

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000 GMT$")
USER, PASSWORD = "sim-user", "sim-password"


# -- helpers ---------------------------------------------------------------------


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class ThreadServer:
    """An aiohttp app on its own event loop in a thread, on a free port."""

    def __init__(self, factory: Callable[[], web.Application]) -> None:
        self._factory = factory
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def __enter__(self) -> ThreadServer:
        self._thread.start()

        async def start() -> tuple[web.AppRunner, int]:
            return await _server.start(self._factory(), "127.0.0.1", 0)

        self._runner, port = asyncio.run_coroutine_threadsafe(start(), self._loop).result(30)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class Proc:
    """A simulator command run as a subprocess on a free port (``--port 0``)."""

    def __init__(self, module: str, args: list[str], log: Path) -> None:
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        line = ""
        deadline = time.monotonic() + 30
        assert self.proc.stdout is not None
        while not line and time.monotonic() < deadline and self.proc.poll() is None:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
        match = re.search(r"listening on (http://\S+)", line)
        if not match:
            self.stop()
            pytest.fail(f"{module} did not start: {log.read_text()}")
        self.url = match.group(1)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM and wait; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log.close()
        return code


@contextmanager
def running(module: str, args: list[str], log: Path) -> Iterator[Proc]:
    proc = Proc(module, args, log)
    try:
        yield proc
    finally:
        proc.stop()


def create_topic(bootstrap: str) -> str:
    """A new single-partition topic (so the order of its messages is the publish order)."""
    topic = unique("simtest")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    return topic


class TopicReader:
    """Reads one single-partition topic from the beginning."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": unique("reader"),
                "enable.auto.commit": False,
                "log_level": 2,
            }
        )
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.messages: list[tuple[str | None, dict[str, Any]]] = []

    def read(self, count: int, timeout: float = 30.0) -> list[tuple[str | None, dict[str, Any]]]:
        """Wait until at least ``count`` messages were read; return all read so far."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"{len(self.messages)} of {count} messages on {self.topic}")
            for msg in self.consumer.consume(10_000, 0.5):
                if msg.error() is None:
                    key = msg.key()
                    self.messages.append(
                        (key.decode() if key else None, json.loads(msg.value() or b""))
                    )
        return self.messages

    def end_offset(self) -> int:
        return int(self.consumer.get_watermark_offsets(TopicPartition(self.topic, 0), 10)[1])

    def close(self) -> None:
        self.consumer.close()


@contextmanager
def topic_reader(bootstrap: str) -> Iterator[TopicReader]:
    reader = TopicReader(bootstrap, create_topic(bootstrap))
    try:
        yield reader
    finally:
        reader.close()


def login(client: httpx.Client, user: str, password: str) -> str:
    answer = client.post("/v1/security/login", json={"acct": user, "pass": password})
    assert answer.status_code == 200, answer.text
    token = answer.json()["response"]
    assert isinstance(token, str) and token
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stage_body(paths: list[str], key: str, topic: str) -> dict[str, Any]:
    return {"path": paths, "copy": 0, "inode": [], "key": key, "topic": topic}


# -- fixtures --------------------------------------------------------------------


@pytest.fixture
def env(stack: Any) -> dict[str, str]:
    return dict(stack.env)


@pytest.fixture
def scout(env: dict[str, str]) -> Iterator[httpx.Client]:
    """A client of the stack's HAProxy Scout front (TLS verified against the stack CA)."""
    tls = ssl.create_default_context(cafile=env["SCOUT_CA_FILE"])
    with httpx.Client(base_url=env["SCOUT_URL"], verify=tls, timeout=30) as client:
        yield client


@pytest.fixture
def control(env: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=env["SIM_CONTROL_URL"], timeout=30) as client:
        yield client


@pytest.fixture
def scout_token(scout: httpx.Client, env: dict[str, str]) -> str:
    return login(scout, env["SCOUT_API_USER"], env["SCOUT_API_PASSWORD"])


@pytest.fixture
def callback_control(env: dict[str, str]) -> Iterator[httpx.Client]:
    """The stack's callback receiver control, reset before and after the test."""
    origin = re.match(r"^(https?://[^/]+)", env["CALLBACK_URL"])
    assert origin
    with httpx.Client(base_url=origin.group(1), timeout=30) as client:
        assert client.delete("/_control").status_code == 200
        yield client
        client.delete("/_control")


class LocalBanksia:
    """A private banksia (in-process) against the stack's Kafka."""

    def __init__(
        self, server: ThreadServer, archive: Archive, publisher: Publisher, bootstrap: str
    ) -> None:
        self.server = server
        self.bootstrap = bootstrap
        self.archive = archive
        self.publisher = publisher
        self.client = httpx.Client(base_url=server.url, timeout=60)

    def token(self) -> str:
        return login(self.client, USER, PASSWORD)

    def stats(self) -> dict[str, Any]:
        return dict(self.client.get("/control/stats").json())

    def file(self, path: str) -> dict[str, Any]:
        return dict(self.client.get("/control/files", params={"path": path}).json())


@contextmanager
def local_banksia(bootstrap: str, **archive_args: Any) -> Iterator[LocalBanksia]:
    archive = Archive(USER, PASSWORD, **archive_args)
    publisher = Publisher(bootstrap)
    with ThreadServer(lambda: banksia_app(archive, publisher)) as server:
        local = LocalBanksia(server, archive, publisher, bootstrap)
        try:
            yield local
        finally:
            local.client.close()


@pytest.fixture
def banksia(env: dict[str, str]) -> Iterator[LocalBanksia]:
    with local_banksia(env["KAFKA_BOOTSTRAP"], delay_ms=5, jitter_ms=5) as local:
        yield local


# -- Scout through HAProxy -------------------------------------------------------


def test_login_and_tokens_through_haproxy(scout: httpx.Client, env: dict[str, str]) -> None:
    token = login(scout, env["SCOUT_API_USER"], env["SCOUT_API_PASSWORD"])
    assert scout.get("/v1/fscache", headers=bearer(token)).status_code == 200
    bad = scout.post("/v1/security/login", json={"acct": env["SCOUT_API_USER"], "pass": "wrong"})
    assert bad.status_code == 401
    assert scout.post("/v1/security/login", json={"acct": "nobody", "pass": "x"}).status_code == 401
    assert scout.post("/v1/security/login", content=b"not json").status_code == 400
    path = f"mwa/{unique()}/a.fits"
    assert scout.get("/v1/file", params={"path": path}).status_code == 401
    assert scout.get("/v1/file", params={"path": path}, headers=bearer("bogus")).status_code == 401
    body = stage_body([path], unique("job"), "t")
    assert scout.put("/v1/request/batchstage", json=body).status_code == 401
    assert scout.put("/v1/request/batchstage", json=body, headers=bearer("x")).status_code == 401


def test_markers_publish_the_contract_messages(
    scout: httpx.Client, scout_token: str, control: httpx.Client, env: dict[str, str]
) -> None:
    run = unique("obs")
    paths = {
        name: f"mwa/{run}/{run}_{name}.fits" for name in ("ok", "ERROR", "LOST", "NEVER", "DUP")
    }
    key = unique("job")
    with topic_reader(env["KAFKA_BOOTSTRAP"]) as reader:
        body = stage_body(list(paths.values()), key, reader.topic)
        answer = scout.put("/v1/request/batchstage", json=body, headers=bearer(scout_token))
        assert answer.status_code == 200, answer.text

        def settled() -> bool:
            states = [
                control.get("/control/files", params={"path": p}).json() for p in paths.values()
            ]
            return all(not s["pending"] for s in states)

        wait_for(settled, message="every arrival of the stage call done")
        # ok: 1, ERROR: 1, DUP: 2, LOST and NEVER: none. Nothing else may follow,
        # since the simulator has no arrival left for this topic.
        messages = reader.read(4)
        wait_for(lambda: reader.end_offset() >= 4, message="4 messages on the broker")
        assert reader.end_offset() == 4
        assert len(messages) == 4
        assert {k for k, _ in messages} == {key}
        by_name: dict[str, list[dict[str, Any]]] = {}
        for _, value in messages:
            by_name.setdefault(value["Filename"], []).append(value)
        assert sorted(by_name) == sorted([paths["ok"], paths["ERROR"], paths["DUP"]])
        assert len(by_name[paths["DUP"]]) == 2
        assert by_name[paths["ok"]][0]["Error"] == ""
        assert by_name[paths["DUP"]][0]["Error"] == ""
        assert by_name[paths["ERROR"]][0]["Error"] == ERROR_TEXT
        for _, value in messages:
            assert set(value) == {"Inode", "Filename", "RequestTime", "CompleteTime", "Error"}
            assert TIME_RE.match(value["RequestTime"]) and TIME_RE.match(value["CompleteTime"])
            assert value["RequestTime"] <= value["CompleteTime"]
            status = scout.get(
                "/v1/file", params={"path": value["Filename"]}, headers=bearer(scout_token)
            ).json()
            assert value["Inode"] == status["inode"]

    def offline(path: str) -> int:
        answer = scout.get("/v1/file", params={"path": path}, headers=bearer(scout_token))
        assert answer.status_code == 200
        return int(answer.json()["offlineblocks"])

    assert offline(paths["ok"]) == 0
    assert offline(paths["DUP"]) == 0
    assert offline(paths["LOST"]) == 0  # online, but no message was ever sent
    assert offline(paths["ERROR"]) > 0
    assert offline(paths["NEVER"]) > 0
    lost = control.get("/control/files", params={"path": paths["LOST"]}).json()
    assert lost["online"] is True and lost["messages"] == 0


def test_file_status_and_fscache(
    scout: httpx.Client, scout_token: str, control: httpx.Client
) -> None:
    path = f"mwa/{unique()}/never_staged.fits"
    answer = scout.get("/v1/file", params={"path": path}, headers=bearer(scout_token))
    assert answer.status_code == 200
    status = answer.json()
    assert status["path"] == path
    assert status["archdone"] is True
    assert status["onlineblocks"] == 0 and status["offlineblocks"] > 0
    assert isinstance(status["inode"], int) and isinstance(status["size"], int)
    assert re.match(r"^[0-9a-f-]{36}$", status["uuid"])
    again = scout.get("/v1/file", params={"path": path}, headers=bearer(scout_token)).json()
    assert again["inode"] == status["inode"]  # same file whichever node answers
    missing = f"mwa/{unique()}/MISSING.fits"
    assert (
        scout.get("/v1/file", params={"path": missing}, headers=bearer(scout_token)).status_code
        == 404
    )
    assert scout.get("/v1/file", headers=bearer(scout_token)).status_code == 400

    cache = scout.get("/v1/fscache", headers=bearer(scout_token)).json()
    for field in ("availdatasz", "totdatasz", "releaseable", "nonreleaseable", "pending"):
        assert isinstance(cache[field], str) and cache[field].isdigit(), field
    assert cache["health"] == 1 and cache["healthstatus"] == "ok"
    assert int(cache["availdatasz"]) <= int(cache["totdatasz"])


def test_health_checks_are_401_and_not_recorded(banksia: LocalBanksia, tmp_path: Path) -> None:
    with running(
        "devstack.sim.scout_node",
        ["--node-id", "4", "--state-url", banksia.server.url],
        tmp_path / "node.log",
    ) as node:
        started = time.monotonic()
        answer = httpx.get(node.url + "/v1/fscache")
        assert answer.status_code == 401
        assert time.monotonic() - started < 1.0
        token = banksia.token()
        assert httpx.get(node.url + "/v1/fscache", headers=bearer(token)).status_code == 200
        assert httpx.get(node.url + "/healthz").status_code == 200
    calls = banksia.client.get("/control/calls").json()
    fscache_calls = [c for c in calls if c["path"] == "/v1/fscache"]
    assert [(c["node"], c["status"]) for c in fscache_calls] == [(4, 200)]


def test_batch_limits_and_malformed_bodies(
    scout: httpx.Client, scout_token: str, control: httpx.Client
) -> None:
    auth = bearer(scout_token)
    key = unique("job")
    run = unique()
    too_many = [f"mwa/{run}/NEVER_{i}.fits" for i in range(10_001)]
    answer = scout.put("/v1/request/batchstage", json=stage_body(too_many, key, "t"), headers=auth)
    assert answer.status_code == 413
    answer = scout.put(
        "/v1/request/cancelbatchstage", json=stage_body(too_many, key, "t"), headers=auth
    )
    assert answer.status_code == 413
    # Exactly the limit is fine (NEVER paths: nothing gets published).
    answer = scout.put(
        "/v1/request/batchstage", json=stage_body(too_many[:10_000], key, "t"), headers=auth
    )
    assert answer.status_code == 200, answer.text
    calls = control.get("/control/calls", params={"key": key}).json()
    assert [(c["method"], c["path"], c["n_paths"], c["status"]) for c in calls] == [
        ("PUT", "/v1/request/batchstage", 10_001, 413),
        ("PUT", "/v1/request/cancelbatchstage", 10_001, 413),
        ("PUT", "/v1/request/batchstage", 10_000, 200),
    ]

    stage = "/v1/request/batchstage"
    assert scout.put(stage, content=b"{not json", headers=auth).status_code == 400
    assert scout.put(stage, json=["a"], headers=auth).status_code == 400
    assert scout.put(stage, json={"path": "mwa/x", "topic": "t"}, headers=auth).status_code == 400
    assert scout.put(stage, json={"path": [1, 2], "topic": "t"}, headers=auth).status_code == 400
    assert scout.put(stage, json={"path": ["mwa/x"]}, headers=auth).status_code == 400
    assert scout.put(stage, json={"path": ["a"], "topic": 3}, headers=auth).status_code == 400
    assert (
        scout.put(stage, json={"path": ["a"], "topic": "no way"}, headers=auth).status_code == 400
    )
    assert scout.get(stage, headers=auth).status_code == 405
    assert scout.get("/v1/nothing", headers=auth).status_code == 404


def test_calls_spread_over_nodes_and_are_listed(
    scout: httpx.Client, scout_token: str, control: httpx.Client, env: dict[str, str]
) -> None:
    key = unique("job")
    for i in range(9):
        body = stage_body([f"mwa/{key}/NEVER_{i}.fits"], key, "t")
        answer = scout.put("/v1/request/batchstage", json=body, headers=bearer(scout_token))
        assert answer.status_code == 200
    calls = control.get("/control/calls", params={"key": key}).json()
    assert len(calls) == 9
    for call in calls:
        assert call["method"] == "PUT"
        assert call["path"] == "/v1/request/batchstage"
        assert call["n_paths"] == 1 and call["key"] == key and call["status"] == 200
        assert isinstance(call["time"], float)
    assert len({c["node"] for c in calls}) >= 2, calls
    assert all(c["node"] >= 1 for c in calls)
    everything = control.get("/control/calls").json()
    assert len(everything) >= 9


def test_outage_through_haproxy(
    scout: httpx.Client, scout_token: str, control: httpx.Client, env: dict[str, str]
) -> None:
    try:
        assert control.post("/control/outage", json={"status": 503, "count": 1}).status_code == 200
        assert scout.get("/v1/fscache", headers=bearer(scout_token)).status_code == 503
        assert scout.get("/v1/fscache", headers=bearer(scout_token)).status_code == 200
    finally:
        control.delete("/control/outage")


def test_shared_state_and_a_killed_node(banksia: LocalBanksia, tmp_path: Path) -> None:
    args = ["--state-url", banksia.server.url]
    with (
        running("devstack.sim.scout_node", ["--node-id", "1", *args], tmp_path / "n1.log") as n1,
        running("devstack.sim.scout_node", ["--node-id", "2", *args], tmp_path / "n2.log") as n2,
        topic_reader(banksia.bootstrap) as reader,
    ):
        answer = httpx.post(n1.url + "/v1/security/login", json={"acct": USER, "pass": PASSWORD})
        token = answer.json()["response"]
        path = f"mwa/{unique()}/shared.fits"
        key = unique("job")
        answer = httpx.put(
            n1.url + "/v1/request/batchstage",
            json=stage_body([path], key, reader.topic),
            headers=bearer(token),
        )
        assert answer.status_code == 200
        reader.read(1)

        def offline_via(node: Proc) -> int:
            got = httpx.get(node.url + "/v1/file", params={"path": path}, headers=bearer(token))
            assert got.status_code == 200
            return int(got.json()["offlineblocks"])

        assert offline_via(n2) == 0  # staged through node 1, online through node 2
        n1.proc.kill()
        n1.proc.wait(10)
        assert offline_via(n2) == 0
        calls = banksia.client.get("/control/calls", params={"key": key}).json()
        assert [c["node"] for c in calls] == [1]
        file_calls = [c for c in banksia.client.get("/control/calls").json() if c.get("file")]
        assert [c["node"] for c in file_calls] == [2, 2]
        assert n2.stop() == 0


# -- private banksia: tokens, outage, pause, cancel, restage, scale, broker away ---


def test_token_expiry_and_relogin(banksia: LocalBanksia) -> None:
    client = banksia.client
    token = banksia.token()
    assert client.get("/v1/fscache", headers=bearer(token)).status_code == 200
    assert client.post("/control/token-ttl", json={"seconds": 0.3}).status_code == 200
    wait_for(
        lambda: client.get("/v1/fscache", headers=bearer(token)).status_code == 401,
        timeout=5,
        message="token to expire",
    )
    fresh = banksia.token()
    assert fresh != token
    assert client.get("/v1/fscache", headers=bearer(fresh)).status_code == 200
    assert client.post("/control/token-ttl", json={"seconds": 300}).status_code == 200
    assert client.post("/control/expire-tokens").json()["expired"] >= 1
    assert client.get("/v1/fscache", headers=bearer(fresh)).status_code == 401
    assert client.post("/control/token-ttl", json={"seconds": "x"}).status_code == 400


def test_token_ttl_from_the_command_line(env: dict[str, str], tmp_path: Path) -> None:
    args = ["--kafka-bootstrap", env["KAFKA_BOOTSTRAP"], "--user", USER, "--password", PASSWORD]
    with (
        running(
            "devstack.sim.banksia", [*args, "--token-ttl", "0.5"], tmp_path / "banksia.log"
        ) as proc,
        httpx.Client(base_url=proc.url) as client,
    ):
        token = login(client, USER, PASSWORD)
        assert client.get("/v1/fscache", headers=bearer(token)).status_code == 200
        wait_for(
            lambda: client.get("/v1/fscache", headers=bearer(token)).status_code == 401,
            timeout=5,
            message="token to expire after 0.5 s",
        )
        assert client.get("/control/stats").json()["token_ttl"] == 0.5
        assert proc.stop() == 0


def test_outage_counts_and_until_cleared(banksia: LocalBanksia) -> None:
    client = banksia.client
    token = banksia.token()
    client.delete("/control/calls")
    assert client.post("/control/outage", json={"status": 503, "count": 2}).status_code == 200
    assert client.get("/v1/fscache").status_code == 401  # health check: no count used
    assert banksia.token()  # login is not affected
    assert client.get("/v1/fscache", headers=bearer(token)).status_code == 503
    assert (
        client.get("/v1/file", params={"path": "mwa/x"}, headers=bearer(token)).status_code == 503
    )
    assert client.get("/v1/fscache", headers=bearer(token)).status_code == 200
    calls = client.get("/control/calls").json()
    assert [(c["path"], c["status"]) for c in calls] == [
        ("/v1/security/login", 200),
        ("/v1/fscache", 503),
        ("/v1/file", 503),
        ("/v1/fscache", 200),
    ]
    assert client.post("/control/outage", json={"status": 500}).status_code == 200
    for _ in range(5):
        assert client.get("/v1/fscache", headers=bearer(token)).status_code == 500
    assert client.get("/control/outage").json() == {"status": 500, "remaining": None}
    assert client.delete("/control/outage").status_code == 200
    assert client.get("/v1/fscache", headers=bearer(token)).status_code == 200
    assert client.post("/control/outage", json={"status": 42}).status_code == 400
    assert client.delete("/control/calls").status_code == 200
    assert client.get("/control/calls").json() == []


def test_pause_holds_arrivals_until_resume(banksia: LocalBanksia) -> None:
    client = banksia.client
    token = banksia.token()
    paths = [f"mwa/{unique()}/p{i}.fits" for i in range(3)]
    key = unique("job")
    with topic_reader(banksia.bootstrap) as reader:
        assert (
            client.post("/control/delay", json={"delay_ms": 0, "jitter_ms": 0}).status_code == 200
        )
        assert client.post("/control/pause").json() == {"paused": True}
        staged_at = time.monotonic()
        body = stage_body(paths, key, reader.topic)
        assert (
            client.put("/v1/request/batchstage", json=body, headers=bearer(token)).status_code
            == 200
        )
        # Give the simulator ample opportunity to publish in spite of the pause.
        wait_for(lambda: time.monotonic() - staged_at > 0.5, message="arrivals overdue")
        stats = banksia.stats()
        assert stats["paused"] is True and stats["pending"] == 3 and stats["produced"] == 0
        assert not any(banksia.file(p)["online"] for p in paths)
        assert client.post("/control/resume").json() == {"paused": False}
        messages = reader.read(3)
        assert sorted(v["Filename"] for _, v in messages) == sorted(paths)
        assert all(banksia.file(p)["online"] for p in paths)
        wait_for(lambda: banksia.stats()["published"] == 3, message="3 acknowledged")


def test_cancel_stops_pending_files(banksia: LocalBanksia) -> None:
    client = banksia.client
    token = banksia.token()
    run = unique()
    keep, cancel, online = (f"mwa/{run}/{n}.fits" for n in ("keep", "cancel", "online"))
    key = unique("job")
    with topic_reader(banksia.bootstrap) as reader:
        body = stage_body([online], key, reader.topic)
        assert (
            client.put("/v1/request/batchstage", json=body, headers=bearer(token)).status_code
            == 200
        )
        reader.read(1)
        client.post("/control/pause")
        body = stage_body([keep, cancel], key, reader.topic)
        assert (
            client.put("/v1/request/batchstage", json=body, headers=bearer(token)).status_code
            == 200
        )
        body = stage_body([cancel, online, f"mwa/{run}/unknown.fits"], key, reader.topic)
        answer = client.put("/v1/request/cancelbatchstage", json=body, headers=bearer(token))
        assert answer.status_code == 200
        assert banksia.file(cancel)["pending"] == []
        client.post("/control/resume")
        wait_for(lambda: banksia.stats()["pending"] == 0, message="no arrival left")
        messages = reader.read(2)
        wait_for(lambda: banksia.stats()["published"] == 2, message="2 acknowledged")
        assert reader.end_offset() == 2
        assert [v["Filename"] for _, v in messages] == [online, keep]
        assert banksia.file(cancel)["online"] is False
        assert banksia.file(online)["online"] is True  # cancelling an online file changes nothing
        assert banksia.stats()["cancelled"] == 1
        # Staging it again after the cancel works.
        body = stage_body([cancel], key, reader.topic)
        assert (
            client.put("/v1/request/batchstage", json=body, headers=bearer(token)).status_code
            == 200
        )
        assert reader.read(3)[2][1]["Filename"] == cancel


def test_restaging_is_harmless(banksia: LocalBanksia) -> None:
    client = banksia.client
    token = banksia.token()
    path = f"mwa/{unique()}/again.fits"
    key_a, key_b = unique("job"), unique("job")
    with topic_reader(banksia.bootstrap) as reader:
        body = stage_body([path], key_a, reader.topic)
        assert (
            client.put("/v1/request/batchstage", json=body, headers=bearer(token)).status_code
            == 200
        )
        reader.read(1)
        assert banksia.file(path)["online"] is True
        # Already online: a new message after the delay.
        assert (
            client.put("/v1/request/batchstage", json=body, headers=bearer(token)).status_code
            == 200
        )
        reader.read(2)
        # Twice for the same job while pending: one message; another job: its own.
        client.post("/control/pause")
        for key in (key_a, key_a, key_b):
            body = stage_body([path], key, reader.topic)
            answer = client.put("/v1/request/batchstage", json=body, headers=bearer(token))
            assert answer.status_code == 200
        assert banksia.stats()["pending"] == 2
        client.post("/control/resume")
        wait_for(lambda: banksia.stats()["published"] == 4, message="4 acknowledged")
        messages = reader.read(4)
        assert reader.end_offset() == 4
        assert sorted(k or "" for k, _ in messages[2:]) == sorted([key_a, key_b])
        assert banksia.file(path)["stage_requests"] == 5


def test_delay_is_settable(banksia: LocalBanksia) -> None:
    client = banksia.client
    token = banksia.token()
    assert (
        client.post("/control/delay", json={"delay_ms": 60_000, "jitter_ms": 0}).status_code == 200
    )
    path = f"mwa/{unique()}/slow.fits"
    body = stage_body([path], unique("job"), "unused-topic")
    assert client.put("/v1/request/batchstage", json=body, headers=bearer(token)).status_code == 200
    wait_for(lambda: banksia.file(path)["staged"], message="file recorded")
    stats = banksia.stats()
    assert stats["delay_ms"] == 60_000 and stats["pending"] == 1
    due = banksia.archive.next_due()
    assert due is not None and due - time.monotonic() > 50
    assert client.post("/control/delay", json={"delay_ms": -1}).status_code == 400
    assert client.get("/control/files").status_code == 400


def test_hundred_thousand_files_in_ten_calls_twice(env: dict[str, str]) -> None:
    """One job of 100,000 paths staged in 10 calls, then again for a second job:
    200,000 arrivals published while the API stays responsive."""
    with (
        local_banksia(env["KAFKA_BOOTSTRAP"], delay_ms=200, jitter_ms=300) as banksia,
        topic_reader(env["KAFKA_BOOTSTRAP"]) as reader,
    ):
        token = banksia.token()
        run = unique()
        paths = [f"mwa/{run}/{i // 1000}/{run}_{i:06d}.fits" for i in range(100_000)]
        started = time.monotonic()
        slowest = 0.0
        for key in ("job-a", "job-b"):
            for chunk in range(10):
                body = stage_body(paths[chunk * 10_000 : (chunk + 1) * 10_000], key, reader.topic)
                call_started = time.monotonic()
                answer = banksia.client.put(
                    "/v1/request/batchstage", json=body, headers=bearer(token)
                )
                slowest = max(slowest, time.monotonic() - call_started)
                assert answer.status_code == 200
        assert slowest < 5.0, f"a stage call of 10,000 paths took {slowest:.1f} s"
        wait_for(
            lambda: banksia.stats()["published"] == 200_000,
            timeout=180,
            interval=0.5,
            message="200,000 messages acknowledged",
        )
        elapsed = time.monotonic() - started
        stats = banksia.stats()
        assert stats["online"] == 100_000 and stats["pending"] == 0
        messages = reader.read(200_000, timeout=120)
        assert len(messages) == 200_000
        per_key: dict[str | None, set[str]] = {}
        for message_key, value in messages:
            per_key.setdefault(message_key, set()).add(value["Filename"])
        assert per_key == {"job-a": set(paths), "job-b": set(paths)}
        print(f"200,000 arrivals staged and published in {elapsed:.1f} s")


def test_publisher_survives_a_broker_that_is_away(tmp_path: Path) -> None:
    args = [
        "--kafka-bootstrap",
        f"127.0.0.1:{free_port()}",
        "--user",
        USER,
        "--password",
        PASSWORD,
        "--delay-ms",
        "0",
        "--jitter-ms",
        "0",
    ]
    with running("devstack.sim.banksia", args, tmp_path / "banksia.log") as proc:
        client = httpx.Client(base_url=proc.url, timeout=10)
        token = login(client, USER, PASSWORD)
        paths = [f"mwa/{unique()}/{i}.fits" for i in range(50)]
        body = stage_body(paths, unique("job"), "nowhere")
        assert (
            client.put("/v1/request/batchstage", json=body, headers=bearer(token)).status_code
            == 200
        )
        wait_for(lambda: client.get("/control/stats").json()["produced"] == 50, message="queued")
        stats = client.get("/control/stats").json()
        assert stats["published"] == 0 and stats["delivery_failed"] == 0
        assert stats["in_flight"] >= 50 and stats["online"] == 50
        assert client.get("/healthz").status_code == 200
        started = time.monotonic()
        assert proc.stop() == 0
        assert time.monotonic() - started < 8
        client.close()
    assert "Traceback" not in (tmp_path / "banksia.log").read_text()


def test_publisher_rides_out_a_broker_restart(stack: Any, env: dict[str, str]) -> None:
    """Kafka stops after part of a stream and comes back: nothing is lost."""
    bootstrap = env["KAFKA_BOOTSTRAP"]
    with (
        local_banksia(bootstrap, delay_ms=0, jitter_ms=0) as banksia,
        topic_reader(bootstrap) as reader,
    ):
        token = banksia.token()
        key = unique("job")
        paths = [f"mwa/{unique()}/{i}.fits" for i in range(2000)]

        def stage(part: list[str]) -> None:
            body = stage_body(part, key, reader.topic)
            answer = banksia.client.put("/v1/request/batchstage", json=body, headers=bearer(token))
            assert answer.status_code == 200

        stage(paths[:1000])
        wait_for(lambda: banksia.stats()["published"] == 1000, message="first half delivered")
        banksia.client.post("/control/pause")
        stage(paths[1000:])
        stack.stop("kafka")
        try:
            banksia.client.post("/control/resume")
            wait_for(
                lambda: banksia.stats()["produced"] == 2000,
                message="second half handed to the producer while the broker is away",
            )
            stats = banksia.stats()
            assert stats["published"] == 1000 and stats["delivery_failed"] == 0
            assert stats["in_flight"] >= 1000
            assert banksia.client.get("/healthz").status_code == 200
        finally:
            stack.start("kafka")
        wait_for(
            lambda: banksia.stats()["published"] == 2000,
            timeout=120,
            message="every message delivered after the restart",
        )
        assert banksia.stats()["delivery_failed"] == 0
        # Retries after the broker left may duplicate a message; none may be missing.
        names = {value["Filename"] for _, value in reader.read(2000, timeout=60)}
        assert names == set(paths)


# -- data_files ------------------------------------------------------------------


def path_rule(filename: str, entry: dict[str, Any]) -> str:
    """docs/contracts.md (data_files lookup), applied to one body entry (the test's own reading)."""
    segments = ["mwa"]
    if entry["bucket"]:
        segments.append(entry["bucket"])
    if entry["folder"]:
        segments.append(entry["folder"].lstrip("/"))
    segments.append(filename)
    return "/".join(segments)


@pytest.fixture
def data_files(env: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as client:
        yield client


def query(obs_id: object, **extra: object) -> dict[str, Any]:
    return {"obs_id": obs_id, "location": 3, "terse": "True", "all_files": "False", **extra}


def test_data_files_body_shape_and_path_rules(
    data_files: httpx.Client, env: dict[str, str]
) -> None:
    obs = 1_234_500_012
    answer = data_files.get(env["DATA_FILES_URL"], params=query(obs))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert len(body) == 12
    entries = list(body.values())
    assert sorted(e["gpstime"] for e in entries) == list(range(obs, obs + 12))
    for entry in entries:
        assert isinstance(entry["filesize"], int) and isinstance(entry["filetype"], int)
        assert entry["bucket"] is None or isinstance(entry["bucket"], str)
        assert entry["folder"] is None or isinstance(entry["folder"], str)
    # Every case of the path rule is present in the raw body.
    assert any(e["bucket"] and e["folder"] and not e["folder"].startswith("/") for e in entries)
    assert any(e["bucket"] is None and e["folder"] for e in entries)
    assert any(e["bucket"] and e["folder"] is None for e in entries)
    assert any(e["folder"] and e["folder"].startswith("/") for e in entries)
    assert any(e["bucket"] is None and e["folder"] is None for e in entries)
    derived = sorted(path_rule(name, entry) for name, entry in body.items())
    assert derived == sorted(expected_paths(obs))
    for path in derived:
        assert "//" not in path and path.startswith("mwa/") and not path.endswith("/")


def test_data_files_window(data_files: httpx.Client, env: dict[str, str]) -> None:
    obs = 1_300_000_040
    url = env["DATA_FILES_URL"]
    body = data_files.get(url, params=query(obs, mintime=obs + 10, maxtime=obs + 19)).json()
    assert sorted(e["gpstime"] for e in body.values()) == list(range(obs + 10, obs + 20))
    assert sorted(path_rule(n, e) for n, e in body.items()) == sorted(
        expected_paths(obs, obs + 10, obs + 19)
    )
    assert len(expected_paths(obs, obs + 10, obs + 19)) == 10
    tail = data_files.get(url, params=query(obs, mintime=obs + 35)).json()
    assert sorted(e["gpstime"] for e in tail.values()) == list(range(obs + 35, obs + 40))
    head = data_files.get(url, params=query(obs, maxtime=obs + 1)).json()
    assert len(head) == 2 and len(expected_paths(obs, maxtime=obs + 1)) == 2
    wide = data_files.get(url, params=query(obs, mintime=obs - 100, maxtime=obs + 100)).json()
    assert len(wide) == 40
    empty = data_files.get(url, params=query(obs, mintime=obs + 40, maxtime=obs + 50))
    assert empty.status_code == 404
    assert expected_paths(obs, obs + 40, obs + 50) == []


def test_data_files_errors(data_files: httpx.Client, env: dict[str, str]) -> None:
    url = env["DATA_FILES_URL"]
    assert data_files.get(url, params=query(1_234_500_000)).status_code == 404
    assert expected_paths(1_234_500_000) == []
    assert data_files.get(url, params=query(9_000_000_001)).status_code == 500
    assert data_files.get(url, params=query(9_000_000_000)).status_code == 500
    assert data_files.get(url, params=query("abc")).status_code == 400
    assert data_files.get(url, params={"location": 3}).status_code == 400
    assert data_files.get(url, params=query(1_234_500_001, mintime="soon")).status_code == 400
    assert data_files.get(url, params=query(1_234_500_001)).status_code == 200


def test_data_files_answers_a_large_observation_fast(tmp_path: Path) -> None:
    obs = 1_299_999_999  # 99,999 files
    with running("devstack.sim.data_files", [], tmp_path / "df.log") as proc:
        url = proc.url + "/metadata/data_files"
        started = time.monotonic()
        answer = httpx.get(url, params=query(obs), timeout=60)
        first = time.monotonic() - started
        assert answer.status_code == 200
        body = answer.json()
        assert len(body) == 99_999
        assert sorted(path_rule(n, e) for n, e in body.items()) == sorted(expected_paths(obs))
        started = time.monotonic()
        assert httpx.get(url, params=query(obs), timeout=60).status_code == 200
        cached = time.monotonic() - started
        assert first < 5.0 and cached < 2.0, (first, cached)
        requests = httpx.get(proc.url + "/_control/requests").json()
        assert [r["query"]["obs_id"] for r in requests] == [str(obs), str(obs)]
        assert requests[0]["query"]["location"] == "3" and requests[0]["status"] == 200
        assert httpx.delete(proc.url + "/_control/requests").status_code == 200
        assert httpx.get(proc.url + "/_control/requests").json() == []
        assert proc.stop() == 0


# -- callback receiver -----------------------------------------------------------


def log_lines(env: dict[str, str], path: str) -> list[dict[str, Any]]:
    log = Path(env["CALLBACK_LOG"])
    if not log.exists():
        return []
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["path"] == path]


def wait_lines(env: dict[str, str], path: str, count: int) -> list[dict[str, Any]]:
    """The log lines of ``path`` once there are ``count`` of them (and not more)."""
    wait_for(lambda: len(log_lines(env, path)) >= count, message=f"{count} log lines of {path}")
    lines = log_lines(env, path)
    assert len(lines) == count, lines
    return lines


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def callback_url(env: dict[str, str]) -> tuple[str, str]:
    """A unique URL under the stack's callback receiver, and its path."""
    url = f"{env['CALLBACK_URL'].rstrip('/')}/{unique('job')}"
    return url, httpx.URL(url).path


def test_callback_auth_and_log(callback_control: httpx.Client, env: dict[str, str]) -> None:
    url, path = callback_url(env)
    auth = (env["RESULT_USERNAME"], env["RESULT_PASSWORD"])
    payload = {"job_id": 7, "return_code": 0, "total_files": 2, "ready_files": 2,
               "error_files": 0, "comment": "done"}  # fmt: skip
    assert httpx.post(url, json=payload, auth=auth).status_code == 200
    assert httpx.post(url, json=payload, auth=(auth[0], "wrong")).status_code == 401
    assert httpx.post(url, json=payload, auth=("someone", auth[1])).status_code == 401
    assert httpx.post(url, json=payload).status_code == 401
    assert httpx.post(url, content=b"plain text", auth=auth).status_code == 200
    assert httpx.get(url, auth=auth).status_code == 405
    lines = wait_lines(env, path, 6)
    assert [(line["user"], line["status"]) for line in lines] == [
        (auth[0], 200),
        (auth[0], 401),
        ("someone", 401),
        (None, 401),
        (auth[0], 200),
        (auth[0], 405),
    ]
    assert lines[0]["body"] == payload
    assert lines[4]["body"] == "plain text"
    assert all(isinstance(line["time"], float) for line in lines)
    # The bare /callback path is accepted too.
    assert httpx.post(env["CALLBACK_URL"], json={}, auth=auth).status_code == 200


def test_callback_fail_mode(callback_control: httpx.Client, env: dict[str, str]) -> None:
    url, path = callback_url(env)
    auth = (env["RESULT_USERNAME"], env["RESULT_PASSWORD"])
    assert (
        callback_control.post("/_control/fail", json={"status": 500, "count": 2}).status_code == 200
    )
    assert httpx.post(url, json={"n": 0}, auth=("x", "y")).status_code == 401  # count not used
    codes = [httpx.post(url, json={"n": i}, auth=auth).status_code for i in range(1, 4)]
    assert codes == [500, 500, 200]
    lines = wait_lines(env, path, 4)
    assert [line["status"] for line in lines] == [401, 500, 500, 200]
    assert callback_control.post("/_control/fail", json={"status": 503}).status_code == 200
    assert [httpx.post(url, json={}, auth=auth).status_code for _ in range(3)] == [503] * 3
    assert callback_control.get("/_control").json()["fail"] == {"value": 503, "count": None}
    assert callback_control.delete("/_control").status_code == 200
    assert httpx.post(url, json={}, auth=auth).status_code == 200
    assert callback_control.post("/_control/fail", json={"status": "x"}).status_code == 400


def test_callback_hang_mode(callback_control: httpx.Client, env: dict[str, str]) -> None:
    url, path = callback_url(env)
    auth = (env["RESULT_USERNAME"], env["RESULT_PASSWORD"])
    answer = callback_control.post("/_control/hang", json={"count": 1, "seconds": 3})
    assert answer.status_code == 200
    outcome: dict[str, object] = {}

    def hung_call() -> None:
        try:
            outcome["status"] = httpx.post(
                url, json={"hung": True}, auth=auth, timeout=1
            ).status_code
        except httpx.TimeoutException as exc:
            outcome["timeout"] = exc

    caller = threading.Thread(target=hung_call)
    caller.start()
    lines = wait_for(lambda: log_lines(env, path), message="the hung request logged on arrival")
    assert caller.is_alive()  # logged while still held
    assert lines[0]["status"] == 200 and lines[0]["hang"] == 3.0
    caller.join(10)
    assert "timeout" in outcome and "status" not in outcome  # the client gave up first
    started = time.monotonic()
    assert httpx.post(url, json={}, auth=auth, timeout=5).status_code == 200
    assert time.monotonic() - started < 1.0  # only the next one was held


def test_callback_extra_users(callback_control: httpx.Client, env: dict[str, str]) -> None:
    url, _ = callback_url(env)
    pair = {"user": unique("portal"), "password": unique("pw")}
    assert httpx.post(url, json={}, auth=(pair["user"], pair["password"])).status_code == 401
    assert callback_control.post("/_control/users", json=pair).status_code == 200
    assert httpx.post(url, json={}, auth=(pair["user"], pair["password"])).status_code == 200
    auth = (env["RESULT_USERNAME"], env["RESULT_PASSWORD"])
    assert httpx.post(url, json={}, auth=auth).status_code == 200  # the first pair still works
    assert callback_control.delete("/_control").status_code == 200
    assert httpx.post(url, json={}, auth=(pair["user"], pair["password"])).status_code == 401


# -- every command: ready, /healthz, clean exit on SIGTERM ------------------------


@pytest.mark.parametrize("kind", ["banksia", "scout_node", "data_files", "callback"])
def test_commands_start_and_stop_cleanly(kind: str, tmp_path: Path, env: dict[str, str]) -> None:
    args = {
        "banksia": ["--kafka-bootstrap", env["KAFKA_BOOTSTRAP"], "--user", "u", "--password", "p",
                    "--delay-ms", "1", "--jitter-ms", "1"],
        "scout_node": ["--node-id", "5", "--state-url", env["SIM_CONTROL_URL"]],
        "data_files": [],
        "callback": ["--user", "u", "--password", "p", "--log", str(tmp_path / "cb.jsonl")],
    }[kind]  # fmt: skip
    log = tmp_path / f"{kind}.log"
    proc = Proc(f"devstack.sim.{kind}", args, log)
    try:
        assert httpx.get(proc.url + "/healthz").status_code == 200
        if kind == "callback":
            assert httpx.post(proc.url + "/callback/x", json={}, auth=("u", "p")).status_code == 200
            assert json.loads((tmp_path / "cb.jsonl").read_text())["path"] == "/callback/x"
    finally:
        code = proc.stop()
    assert code == 0
    text = log.read_text()
    assert "stopped" in text and "Traceback" not in text


def test_basic_auth_header_is_parsed_strictly(tmp_path: Path) -> None:
    log = tmp_path / "cb.jsonl"
    with running(
        "devstack.sim.callback",
        ["--user", "u", "--password", "p:with:colons", "--log", str(log)],
        tmp_path / "cb.log",
    ) as proc:
        url = proc.url + "/callback"
        assert httpx.post(url, json={}, auth=("u", "p:with:colons")).status_code == 200
        assert httpx.post(url, json={}, headers={"Authorization": "Basic !!!"}).status_code == 401
        assert httpx.post(url, json={}, headers=basic("u", "p")).status_code == 401
        assert httpx.post(url, json={}, headers={"Authorization": "Bearer x"}).status_code == 401
    statuses = [json.loads(line)["status"] for line in log.read_text().splitlines()]
    assert statuses == [200, 401, 401, 401]
