"""The e2e tests' target: the external one is wired from its variables, the callback
log is read over HTTP, and the kind path sets exactly the variables the target reads.

Nothing here needs a stack: the callback receiver runs in-process on a thread and
kubectl is a fake script.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import stat
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.sim import _server
from devstack.sim.callback import make_app
from devstack.stack import Stack
from tests.e2e.target import (
    FAST_ENV,
    OPTIONAL,
    REQUIRED,
    ExternalTarget,
    LocalTarget,
    TargetError,
    as_target,
    is_external,
)

REPO = Path(__file__).resolve().parents[2]
KIND_SCRIPT = REPO / "hack" / "kind-e2e.sh"
KIND_VALUES = REPO / "charts" / "mwa-staging" / "ci" / "kind-values.yaml"


class Receiver:
    """The callback receiver (devstack.sim.callback) on a thread, on a free port."""

    def __init__(self, log: Path, user: str = "asvo", password: str = "pw") -> None:
        self.log, self.user, self.password = log, user, password
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: Any = None
        self.url = ""

    def __enter__(self) -> Receiver:
        self._thread.start()

        async def start() -> tuple[Any, int]:
            return await _server.start(make_app(self.user, self.password, self.log), "127.0.0.1", 0)

        self._runner, port = asyncio.run_coroutine_threadsafe(start(), self._loop).result(30)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def post(self, body: Any, user: str | None = None, path: str = "/callback") -> int:
        token = base64.b64encode(f"{user or self.user}:{self.password}".encode()).decode()
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code


@pytest.fixture
def fake_kubectl(tmp_path: Path) -> Path:
    """A kubectl that records its arguments and KUBECONFIG, one JSON line per call."""
    script = tmp_path / "kubectl"
    record = tmp_path / "kubectl.calls"
    script.write_text(
        "#!/bin/sh\n"
        f'printf \'{{"kubeconfig": "%s", "args": "%s"}}\\n\' "$KUBECONFIG" "$*" >> {record}\n'
        'echo "out: $*"\n'
        'case "$1" in fail) echo "refused" >&2; exit 3;; esac\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def fake_env(tmp_path: Path, kubectl: Path, **changes: str) -> dict[str, str]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    env = {
        "MWA_E2E_EXTERNAL": "1",
        "MWA_E2E_KUBECONFIG": str(kubeconfig),
        "MWA_E2E_CALLBACK_URL": "http://sim-callback.mwa-staging.svc:8080/callback",
        "MWA_E2E_CALLBACK_CONTROL_URL": "http://127.0.0.1:18099/_control/",
        "MWA_E2E_SIM_CONTROL_URL": "http://127.0.0.1:18098/",
        "MWA_E2E_DATA_FILES_URL": "http://127.0.0.1:18097/metadata/data_files",
        "MWA_E2E_RESULT_USERNAME": "asvo",
        "MWA_E2E_OPERATOR_URL": "http://127.0.0.1:18080/",
        "MWA_E2E_DATABASE_URL": "postgresql://mwa:pw@127.0.0.1:15432/mwa_staging",
        "MWA_E2E_KUBECTL": str(kubectl),
    }
    env.update(changes)
    return {k: v for k, v in env.items() if v}


def test_is_external_only_when_asked() -> None:
    assert not is_external({})
    assert not is_external({"MWA_E2E_EXTERNAL": "0"})
    assert not is_external({"MWA_E2E_EXTERNAL": ""})
    assert is_external({"MWA_E2E_EXTERNAL": "1"})
    assert is_external({"MWA_E2E_EXTERNAL": "true"})


def test_external_target_is_wired_from_the_environment(tmp_path: Path, fake_kubectl: Path) -> None:
    env = fake_env(tmp_path, fake_kubectl)
    target = ExternalTarget.from_env(env)
    ep = target.endpoints
    assert ep.kubeconfig == env["MWA_E2E_KUBECONFIG"]
    # The callback URL the operator is given is the in-cluster one, untouched.
    assert ep.callback_url == "http://sim-callback.mwa-staging.svc:8080/callback"
    # Host-reachable bases, whatever suffix they were given with.
    assert ep.callback_control_url == "http://127.0.0.1:18099"
    assert ep.sim_control_url == "http://127.0.0.1:18098"
    assert ep.data_files_url == "http://127.0.0.1:18097"
    assert target.operator_url == "http://127.0.0.1:18080"
    assert ep.database_url == env["MWA_E2E_DATABASE_URL"]
    assert ep.kubectl == str(fake_kubectl)
    assert target.skipped == {}
    assert target.env == {
        "KUBECONFIG": env["MWA_E2E_KUBECONFIG"],
        "CALLBACK_URL": env["MWA_E2E_CALLBACK_URL"],
        "CALLBACK_CONTROL_URL": "http://127.0.0.1:18099",
        "SIM_CONTROL_URL": "http://127.0.0.1:18098",
        "DATA_FILES_URL": "http://127.0.0.1:18097",
        "RESULT_USERNAME": "asvo",
        "DATABASE_URL": env["MWA_E2E_DATABASE_URL"],
        "OPERATOR_URL": "http://127.0.0.1:18080",
    }


def test_external_target_runs_kubectl_with_its_kubeconfig(
    tmp_path: Path, fake_kubectl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/somewhere/else")  # the caller's is not used
    target = ExternalTarget.from_env(fake_env(tmp_path, fake_kubectl))
    result = target.kubectl("get", "stagingjobs", "-A")
    assert result.stdout == "out: get stagingjobs -A\n"
    with pytest.raises(subprocess.CalledProcessError) as failed:
        target.kubectl("fail", "now")
    assert failed.value.stderr == "refused\n"
    assert target.kubectl("fail", check=False).returncode == 3
    calls = [json.loads(line) for line in (tmp_path / "kubectl.calls").read_text().splitlines()]
    assert {c["kubeconfig"] for c in calls} == {str(tmp_path / "kubeconfig")}
    # The fast-operator context is a no-op on a cluster (its operator is configured so).
    with target.fast_operator():
        pass
    assert len(calls) == 3


def test_optional_values_may_be_missing(tmp_path: Path, fake_kubectl: Path) -> None:
    env = fake_env(tmp_path, fake_kubectl, MWA_E2E_OPERATOR_URL="", MWA_E2E_DATABASE_URL="")
    target = ExternalTarget.from_env(env)
    assert target.operator_url is None and target.endpoints.database_url is None
    assert "DATABASE_URL" not in target.env and "OPERATOR_URL" not in target.env
    with pytest.raises(pytest.skip.Exception, match="MWA_E2E_OPERATOR_URL"):
        target.operator_metrics()


@pytest.mark.parametrize("name", REQUIRED)
def test_a_missing_required_value_is_named(tmp_path: Path, fake_kubectl: Path, name: str) -> None:
    env = fake_env(tmp_path, fake_kubectl)
    del env[name]
    with pytest.raises(TargetError, match=name):
        ExternalTarget.from_env(env)


def test_a_kubeconfig_that_is_not_a_file_is_refused(tmp_path: Path, fake_kubectl: Path) -> None:
    env = fake_env(tmp_path, fake_kubectl, MWA_E2E_KUBECONFIG=str(tmp_path / "nope"))
    with pytest.raises(TargetError, match="not a file"):
        ExternalTarget.from_env(env)


# -- the callback log over HTTP ------------------------------------------------------


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path / "cb" / "callback.jsonl") as running:
        yield running


def get_log(url: str) -> tuple[list[dict[str, Any]], int]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read()), int(response.headers["X-Log-Length"])


def test_the_log_endpoint_serves_the_log_file(receiver: Receiver) -> None:
    assert get_log(receiver.url + "/_control/log") == ([], 0)
    assert receiver.post({"job_id": 1}) == 200
    assert receiver.post({"job_id": 2}, user="intruder") == 401
    assert receiver.post({"job_id": 3}, path="/callback/x") == 200
    entries, total = get_log(receiver.url + "/_control/log")
    assert total == 3
    assert [(e["body"]["job_id"], e["status"], e["path"]) for e in entries] == [
        (1, 200, "/callback"),
        (2, 401, "/callback"),
        (3, 200, "/callback/x"),
    ]
    # The file holds the same entries (make demo prints it).
    lines = [json.loads(line) for line in receiver.log.read_text().splitlines()]
    assert lines == entries
    later, total = get_log(receiver.url + "/_control/log?since=2")
    assert (later, total) == (entries[2:], 3)
    assert get_log(receiver.url + "/_control/log?since=10") == ([], 3)
    for bad in ("-1", "x"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(receiver.url + f"/_control/log?since={bad}", timeout=10)
        assert refused.value.code == 400
    # A reset of the failure modes keeps the log.
    request = urllib.request.Request(receiver.url + "/_control", method="DELETE")
    urllib.request.urlopen(request, timeout=10).close()
    assert get_log(receiver.url + "/_control/log")[1] == 3


def test_a_restarted_receiver_serves_its_earlier_entries(tmp_path: Path) -> None:
    log = tmp_path / "callback.jsonl"
    with Receiver(log) as first:
        first.post({"job_id": 1})
    with log.open("a") as handle:
        handle.write('{"torn line\n')
    with Receiver(log) as second:
        second.post({"job_id": 2})
        entries, total = get_log(second.url + "/_control/log")
    assert [e["body"]["job_id"] for e in entries] == [1, 2] and total == 2


def test_the_target_reads_callbacks_through_the_endpoint(
    tmp_path: Path, fake_kubectl: Path, receiver: Receiver
) -> None:
    target = ExternalTarget.from_env(
        fake_env(tmp_path, fake_kubectl, MWA_E2E_CALLBACK_CONTROL_URL=receiver.url)
    )
    receiver.post({"job_id": 7, "return_code": 0})
    receiver.post({"job_id": 8})
    assert [c["body"] for c in target.callbacks(7)] == [{"job_id": 7, "return_code": 0}]
    receiver.post({"job_id": 7, "return_code": 5})
    assert [c["body"]["return_code"] for c in target.callbacks(7)] == [0, 5]
    assert target.callbacks(9) == []
    assert len(target.callback_log()) == 3
    # The control endpoints are reached through the same base URL.
    target.callback_control("/fail", {"status": 500, "count": 1})
    assert receiver.post({"job_id": 7}) == 500
    assert [c["status"] for c in target.callbacks(7)] == [200, 200, 500]
    assert target.callback_control("", method="DELETE")["fail"] is None


def test_the_target_rereads_a_log_that_shrank(
    tmp_path: Path, fake_kubectl: Path, receiver: Receiver
) -> None:
    """A receiver that lost its log (a pod restarted without its file) is read again."""
    target = ExternalTarget.from_env(
        fake_env(tmp_path, fake_kubectl, MWA_E2E_CALLBACK_CONTROL_URL=receiver.url)
    )
    receiver.post({"job_id": 1})
    receiver.post({"job_id": 2})
    assert len(target.callback_log()) == 2
    with Receiver(tmp_path / "fresh.jsonl") as fresh:
        target.endpoints = replace(target.endpoints, callback_control_url=fresh.url)  # new pod
        fresh.post({"job_id": 3})
        assert [e["body"]["job_id"] for e in target.callback_log()] == [3]


# -- the kind path sets what the target reads -------------------------------------------


def test_kind_script_exports_every_variable_and_runs_the_external_tests() -> None:
    text = KIND_SCRIPT.read_text()
    exported = set(re.findall(r"^\s*export (MWA_E2E_\w+)=", text, re.MULTILINE))
    assert exported == {"MWA_E2E_EXTERNAL", *REQUIRED, *OPTIONAL} - {"MWA_E2E_KUBECTL"}
    assert re.search(r'pytest .*tests/e2e.* -m "not local_only"', text)
    syntax = subprocess.run(["bash", "-n", str(KIND_SCRIPT)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_kind_values_give_the_operator_the_fast_settings_and_every_namespace() -> None:
    values = yaml.safe_load(KIND_VALUES.read_text())
    extra = {e["name"]: e["value"] for e in values["operator"]["extraEnv"]}
    assert extra == FAST_ENV
    assert values["rbac"]["clusterWide"] is True  # each test module makes its namespace


def test_a_local_stack_is_its_own_cached_target(tmp_path: Path) -> None:
    """The sj helpers take a Stack too (local_only tests): one LocalTarget per stack."""
    stack = Stack(tmp_path / "stack")  # not started: only its env is read
    target = as_target(stack)
    assert isinstance(target, LocalTarget) and as_target(stack) is target
    assert as_target(target) is target
    env = stack.env
    assert target.env["CALLBACK_URL"] == env["CALLBACK_URL"]
    assert target.endpoints.callback_control_url == env["CALLBACK_URL"].removesuffix("/callback")
    assert target.endpoints.data_files_url + "/metadata/data_files" == env["DATA_FILES_URL"]
    assert target.env["DATABASE_URL"] == env["DATABASE_URL"]
    assert target.operator_url is None  # this stack runs no operator
