"""The operator's steps against a fake App: create, one callback attempt, a scheduler pass.

The steps are written against ``mwa_staging_operator.services.Services``; here
that is :class:`FakeApp`. The database is replaced by scripted query functions
(:class:`Queries`, patched into ``mwa_staging.db``), so these tests check what
each step decides and in which order it records it -- the SQL itself runs
against the real PostgreSQL in tests/stack and tests/e2e. Scout and the
callback receiver are in-process HTTP fakes (they are outside our control).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import psycopg2
import pytest
from kubernetes.client.exceptions import ApiException
from mwa_staging_operator import callback_delivery, create, deadline, scheduler
from mwa_staging_operator.events import ObjectRef
from mwa_staging_operator.ratelimit import Pacer, SlidingWindowLimiter

from mwa_staging.db import jobs_queries, status_queries
from mwa_staging.db.rows import JobRow
from mwa_staging.scout import ScoutClient
from mwa_staging.settings import Settings
from mwa_staging.vocabulary import JobState, Reason, ReturnCode
from tests.unit.test_callback import job_row

Handler = Callable[[httpx.Request], httpx.Response]


# --- the fake App -------------------------------------------------------------


class Queries:
    """Scripted stand-ins for query functions; every call is recorded, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def script(self, module: Any, name: str, result: Any) -> None:
        """``module.name(cur, ...)`` returns ``result`` (or ``result(*args)`` if callable)."""

        def fake(_cur: object, *args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return result(*args, **kwargs) if callable(result) else result

        self._monkeypatch.setattr(module, name, fake)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    def args(self, name: str) -> list[tuple[Any, ...]]:
        return [args for called, args, _ in self.calls if called == name]

    def kwargs(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for called, _, kwargs in self.calls if called == name]


class FakeDb:
    """The step's database function runs at once; the scripted queries ignore the cursor."""

    async def run(self, fn: Callable[[Any], Any]) -> Any:
        return fn(None)

    async def run_conn(self, fn: Callable[[Any], Any]) -> Any:
        return fn(None)


class FakeEvents:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str]] = []

    def normal(self, ref: ObjectRef, reason: str, message: str) -> None:
        self.posted.append(("Normal", reason, message))

    def warning(self, ref: ObjectRef, reason: str, message: str) -> None:
        self.posted.append(("Warning", reason, message))

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.posted]


class FakeCore:
    """CoreV1Api's Secret read, from a dict of name -> data (None: 404)."""

    def __init__(self, secrets: dict[str, dict[str, str] | None]) -> None:
        self.secrets = secrets

    def read_namespaced_secret(self, name: str, namespace: str, **_: object) -> object:
        data = self.secrets.get(name)
        if data is None:
            raise ApiException(status=404)
        return SimpleNamespace(
            data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        )


class FakeApp:
    """The attributes of ``Services`` a step uses, with fakes where I/O would be."""

    def __init__(
        self,
        *,
        scout: Handler | None = None,
        receiver: Handler | None = None,
        secrets: dict[str, dict[str, str] | None] | None = None,
        **settings: Any,
    ) -> None:
        values: dict[str, Any] = {
            "scout_url": "https://scout.test",
            "scout_api_user": "u",
            "scout_api_password": "secret",
            "kafka_topic": "topic-x",
            "result_username": "asvo",
            "result_password": "default-pw",
        }
        values.update(settings)
        self.settings = Settings(**values)
        self.db = FakeDb()
        self.status_db = self.db
        self.jobs = None
        self.custom = None
        self.core = FakeCore(secrets or {})
        self.events = FakeEvents()
        self.scout = ScoutClient(
            self.settings, transport=httpx.MockTransport(scout or ScoutArchive())
        )
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(404)))
        self.callback_http = httpx.AsyncClient(
            transport=httpx.MockTransport(receiver or (lambda r: httpx.Response(200)))
        )
        self.limiter = SlidingWindowLimiter(self.settings.callback_rate_per_minute, 60.0)
        self.status_pacer = Pacer(self.settings.scout_status_rate_per_second)
        self.data_files_slots = asyncio.Semaphore(2)
        self.projection_busy = False
        self.wake_event = asyncio.Event()
        self.wakes = 0
        self.status_updates: list[int] = []
        self.forgotten: list[int] = []

    def wake(self) -> None:
        self.wakes += 1
        self.wake_event.set()

    async def kube(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    async def update_status(self, job_pk: int) -> None:
        self.status_updates.append(job_pk)

    def forget_callback(self, job_pk: int) -> None:
        self.forgotten.append(job_pk)


class ScoutArchive:
    """Scout's login and stage calls; ``stage_answers`` scripts the stage calls' statuses."""

    def __init__(self, stage_answers: list[int] | None = None) -> None:
        self.stage_answers = list(stage_answers or [])
        self.staged: list[list[str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/security/login":
            return httpx.Response(200, json={"response": "token"})
        if request.url.path == "/v1/request/batchstage":
            status = self.stage_answers.pop(0) if self.stage_answers else 200
            if status == 200:
                self.staged.append(json.loads(request.content)["path"])
            return httpx.Response(status, text="refused")
        return httpx.Response(404)


def body(files: list[str], url: str = "https://client.test/cb") -> dict[str, Any]:
    return {
        "metadata": {"uid": "u", "namespace": "ns", "name": "n", "generation": 1},
        "spec": {"jobId": 42, "files": files, "callback": {"url": url}},
    }


def resolving() -> JobRow:
    """A job just recorded: nothing of its later life set yet."""
    unset = ("return_code", "reason", "message", "resolved_at", "stage_requested_at")
    counts = {"total_files": 0, "ready_files": 0, "error_files": 0, "callback_attempts": 0}
    return job_row(
        state=JobState.RESOLVING,
        callback_state="none",
        completion_time=None,
        **dict.fromkeys(unset),
        **counts,
    )


def staging() -> JobRow:
    return replace(
        resolving(), state=JobState.STAGING, total_files=3, resolved_at=datetime.now(UTC)
    )


def script_create(
    queries: Queries, row: JobRow, *, created: bool = True, progress: str = JobState.STAGING
) -> None:
    queries.script(jobs_queries, "create_job", jobs_queries.Created(row, created=created))
    queries.script(jobs_queries, "record_files", True)
    queries.script(status_queries, "get_job", staging())
    queries.script(jobs_queries, "unrequested_paths", ["c", "d"])
    queries.script(jobs_queries, "record_stage_progress", progress)
    queries.script(jobs_queries, "mark_stage_requested", None)
    queries.script(jobs_queries, "fail_job", True)


# --- handle_create ------------------------------------------------------------


def test_create_records_the_files_before_staging_them_in_code_point_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queries = Queries(monkeypatch)
    script_create(queries, resolving())
    archive = ScoutArchive()
    app = FakeApp(scout=archive, scout_max_paths_per_call=2)
    asyncio.run(create.handle_create(app, body(["b", "a", "b", "c"])))  # type: ignore[arg-type]

    assert queries.names() == [
        "create_job",
        "record_files",
        "get_job",
        "record_stage_progress",
        "record_stage_progress",
        "mark_stage_requested",
    ]
    assert queries.args("record_files") == [(1, ["b", "a", "c"])]  # spec order, each once
    assert archive.staged == [["a", "b"], ["c"]]
    assert queries.args("record_stage_progress") == [(1, "b"), (1, "c")]
    assert app.events.posted == [
        ("Normal", Reason.STAGE_REQUESTED, "asked the archive to stage 3 files in 2 call(s)"),
    ]
    assert app.status_updates and set(app.status_updates) == {1}
    assert app.wakes >= 1


def test_create_resumed_in_staging_stages_only_what_scout_has_not_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queries = Queries(monkeypatch)
    script_create(queries, staging(), created=False)
    archive = ScoutArchive()
    app = FakeApp(scout=archive)
    asyncio.run(create.handle_create(app, body(["a", "b", "c", "d"])))  # type: ignore[arg-type]

    assert "record_files" not in queries.names()
    assert archive.staged == [["c", "d"]]
    assert queries.names()[-1] == "mark_stage_requested"


def test_create_refuses_a_callback_host_off_the_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    queries = Queries(monkeypatch)
    script_create(queries, resolving())
    archive = ScoutArchive()
    app = FakeApp(scout=archive, callback_allowed_hosts=["allowed.test"])
    asyncio.run(create.handle_create(app, body(["a"], url="https://other.test/cb")))  # type: ignore[arg-type]

    assert queries.names() == ["create_job", "fail_job"]
    [(job_pk, code, reason, _message)] = queries.args("fail_job")
    assert (job_pk, code, reason) == (1, ReturnCode.UNEXPECTED, Reason.UNEXPECTED_ERROR)
    assert queries.kwargs("fail_job") == [{"callback": False}]
    assert archive.staged == []


def test_create_with_no_files_fails_with_101(monkeypatch: pytest.MonkeyPatch) -> None:
    queries = Queries(monkeypatch)
    script_create(queries, resolving())
    app = FakeApp()
    asyncio.run(create.handle_create(app, body([])))  # type: ignore[arg-type]

    assert queries.names() == ["create_job", "fail_job"]
    assert queries.args("fail_job") == [(1, 101, Reason.NO_FILES, "spec.files is empty")]
    assert queries.kwargs("fail_job") == [{"callback": True}]
    assert app.events.posted == [
        ("Warning", Reason.NO_FILES, "return code 101: spec.files is empty")
    ]


def test_create_fails_with_102_when_scout_refuses_part_way(monkeypatch: pytest.MonkeyPatch) -> None:
    queries = Queries(monkeypatch)
    script_create(queries, resolving())
    app = FakeApp(scout=ScoutArchive(stage_answers=[200, 400]), scout_max_paths_per_call=2)
    asyncio.run(create.handle_create(app, body(["a", "b", "c"])))  # type: ignore[arg-type]

    assert "mark_stage_requested" not in queries.names()
    [(job_pk, code, reason, message)] = queries.args("fail_job")
    assert (job_pk, code, reason) == (1, ReturnCode.STAGE_FAILED, Reason.STAGE_FAILED)
    assert "HTTP 400" in message
    assert "2 of 3 files had been requested from the archive and are being cancelled" in message


def test_create_stops_quietly_when_the_job_ends_while_staging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queries = Queries(monkeypatch)
    script_create(queries, resolving(), progress=JobState.FAILED)  # the deadline passed
    archive = ScoutArchive()
    app = FakeApp(scout=archive, scout_max_paths_per_call=2)
    asyncio.run(create.handle_create(app, body(["a", "b", "c"])))  # type: ignore[arg-type]

    assert archive.staged == [["a", "b"]]  # no call after the job ended
    assert "mark_stage_requested" not in queries.names()
    assert "fail_job" not in queries.names()
    assert app.wakes >= 1


def test_create_of_a_duplicate_job_id_only_shows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    queries = Queries(monkeypatch)
    duplicate = replace(resolving(), state=JobState.FAILED, message="jobId 42 is already used")
    queries.script(
        jobs_queries, "create_job", jobs_queries.Created(duplicate, True, duplicate_of="other")
    )
    app = FakeApp()
    asyncio.run(create.handle_create(app, body(["a"])))  # type: ignore[arg-type]

    assert queries.names() == ["create_job"]
    assert app.events.posted == [("Warning", Reason.DUPLICATE_JOB_ID, "jobId 42 is already used")]
    assert app.status_updates == [1]


def test_create_retries_later_when_the_database_is_away(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*_: object) -> None:
        raise psycopg2.OperationalError("connection refused")

    Queries(monkeypatch).script(jobs_queries, "create_job", unavailable)
    with pytest.raises(create.RetryLater):
        asyncio.run(create.handle_create(FakeApp(), body(["a"])))  # type: ignore[arg-type]


# --- callback_delivery.attempt ------------------------------------------------------


def receiver(status: int, seen: list[httpx.Request]) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status)

    return handle


def test_attempt_delivered_is_recorded_and_announced(monkeypatch: pytest.MonkeyPatch) -> None:
    queries = Queries(monkeypatch)
    queries.script(jobs_queries, "record_callback_result", True)
    seen: list[httpx.Request] = []
    app = FakeApp(receiver=receiver(200, seen))
    asyncio.run(callback_delivery.attempt(app, job_row()))  # type: ignore[arg-type]

    assert json.loads(seen[0].content)["return_code"] == 5
    assert (
        seen[0].headers["Authorization"] == "Basic " + base64.b64encode(b"asvo:default-pw").decode()
    )
    assert queries.args("record_callback_result") == [(1, 1)]
    assert queries.kwargs("record_callback_result") == [
        {"delivered": True, "http_status": 200, "error": None}
    ]
    # One Event for the end and its callback delivered at the first attempt.
    assert app.events.reasons() == [Reason.COMPLETE]
    assert app.events.posted[0][2].endswith("; callback delivered")
    assert app.status_updates == [1]


def test_attempt_failed_schedules_the_next_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    queries = Queries(monkeypatch)
    queries.script(jobs_queries, "record_callback_result", True)
    app = FakeApp(receiver=receiver(500, []), callback_backoff_initial_seconds=30.0)
    job = job_row(callback_attempts=2, completion_time=datetime.now(UTC))
    before = datetime.now(UTC)
    asyncio.run(callback_delivery.attempt(app, job))  # type: ignore[arg-type]

    [recorded] = queries.kwargs("record_callback_result")
    assert recorded["delivered"] is False and recorded["give_up"] is False
    assert (recorded["http_status"], recorded["error"]) == (500, "HTTP 500")
    pause = recorded["next_attempt"] - before
    assert timedelta(seconds=59) <= pause <= timedelta(seconds=62)  # 30 s doubled once
    assert app.events.reasons() == ["CallbackFailed"]  # not the first attempt: no "Complete"


def test_attempt_after_the_give_up_time_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    queries = Queries(monkeypatch)
    queries.script(jobs_queries, "record_callback_result", True)
    app = FakeApp(receiver=receiver(503, []), callback_give_up_seconds=60.0)
    ended = datetime.now(UTC) - timedelta(hours=1)
    asyncio.run(callback_delivery.attempt(app, job_row(callback_attempts=9, completion_time=ended)))  # type: ignore[arg-type]

    [recorded] = queries.kwargs("record_callback_result")
    assert recorded["give_up"] is True and recorded["next_attempt"] is None
    assert app.events.reasons() == [Reason.CALLBACK_GAVE_UP]


@pytest.mark.parametrize(
    ("url", "hosts", "why"),
    [
        ("http://169.254.169.254/latest", [], "a cloud metadata address"),
        ("http://u:p@receiver.test/cb", ["receiver.test"], "must not hold credentials"),
        ("http://other.test/cb", ["receiver.test"], "not among the allowed callback hosts"),
    ],
)
def test_attempt_refused_by_the_callback_rules_gives_up_without_a_post(
    monkeypatch: pytest.MonkeyPatch, url: str, hosts: list[str], why: str
) -> None:
    queries = Queries(monkeypatch)
    queries.script(jobs_queries, "record_callback_result", True)
    posted: list[httpx.Request] = []
    app = FakeApp(receiver=receiver(200, posted), callback_allowed_hosts=hosts)
    job = job_row(callback_attempts=1, completion_time=datetime.now(UTC), notify_url=url)
    asyncio.run(callback_delivery.attempt(app, job))  # type: ignore[arg-type]

    [recorded] = queries.kwargs("record_callback_result")
    assert recorded["give_up"] is True and recorded["delivered"] is False
    assert recorded["error"].startswith("callback refused: ") and why in recorded["error"]
    assert posted == []
    assert Reason.CALLBACK_GAVE_UP in app.events.reasons()


def test_attempt_uses_the_jobs_secret_and_reports_a_missing_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queries = Queries(monkeypatch)
    queries.script(jobs_queries, "record_callback_result", True)
    seen: list[httpx.Request] = []
    app = FakeApp(
        receiver=receiver(200, seen),
        secrets={"cb": {"username": "portal", "password": "pw2"}, "gone": None},
    )
    asyncio.run(callback_delivery.attempt(app, job_row(callback_secret="cb")))  # type: ignore[arg-type]
    assert seen[0].headers["Authorization"] == "Basic " + base64.b64encode(b"portal:pw2").decode()

    asyncio.run(
        callback_delivery.attempt(app, job_row(callback_secret="gone", callback_attempts=2))
    )  # type: ignore[arg-type]
    assert len(seen) == 1  # nothing POSTed without the credentials
    failed = queries.kwargs("record_callback_result")[-1]
    assert failed["delivered"] is False and failed["http_status"] is None
    assert failed["error"] == "Secret gone not found in namespace ns"


# --- the scheduler pass ----------------------------------------------------------


def claim(job_pk: int) -> jobs_queries.Claim:
    return jobs_queries.Claim(job_pk, 40 + job_pk, "ns", f"n{job_pk}", f"u{job_pk}")


def script_pass(queries: Queries, now: datetime, *, callbacks: list[JobRow]) -> list[Any]:
    sweeps: list[Any] = []
    timed_out = job_row(id=7, state=JobState.FAILED, message="timed out after 10 s")
    queries.script(jobs_queries, "claim_deadlines", [timed_out])
    queries.script(jobs_queries, "claim_cancels", [claim(7)])
    queries.script(jobs_queries, "claim_restages", [])
    queries.script(jobs_queries, "claim_callbacks", callbacks)
    queries.script(jobs_queries, "claim_ttl_deletes", [])
    queries.script(jobs_queries, "counts_by_state", {})
    queries.script(
        jobs_queries,
        "due_times",
        jobs_queries.DueTimes(
            now,
            deadline=now + timedelta(seconds=20),
            restage=None,
            callback=now - timedelta(seconds=1),
            cancel=None,
            delete=None,
        ),
    )
    queries.script(scheduler, "write_dirty_statuses", lambda *a, **kw: sweeps.append(kw) or 0)
    return sweeps


def test_a_pass_starts_due_work_within_its_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    queries = Queries(monkeypatch)
    now = datetime.now(UTC)
    rows = [job_row(id=i) for i in (1, 2, 3)]
    sweeps = script_pass(queries, now, callbacks=rows[:2])
    started: list[tuple[str, int]] = []

    async def fake_attempt(app: object, job: JobRow) -> None:
        started.append(("callback", job.id))

    async def fake_cancel(app: object, claimed: jobs_queries.Claim) -> None:
        started.append(("cancel", claimed.job_pk))

    monkeypatch.setattr(callback_delivery, "attempt", fake_attempt)
    monkeypatch.setattr(deadline, "cancel_pending", fake_cancel)
    app = FakeApp(callback_rate_per_minute=2, scheduler_batch=200)

    async def one_pass() -> float:
        runner = scheduler.Scheduler(app)  # type: ignore[arg-type]
        sleep = await runner.pass_once()
        await asyncio.gather(*asyncio.all_tasks() - {asyncio.current_task()})  # the lanes' tasks
        await runner.stop()
        return sleep

    sleep = asyncio.run(one_pass())

    # The timed-out job is announced and shown; its cancel runs in its lane.
    assert ("Warning", Reason.DEADLINE_EXCEEDED, "timed out after 10 s") in app.events.posted
    assert 7 in app.status_updates
    # Callbacks: no more claimed than the rate limit lets start now (2 a minute).
    assert queries.args("claim_callbacks")[0][0] == 2
    assert app.limiter.available() == 0
    assert sorted(started) == [("callback", 1), ("callback", 2), ("cancel", 7)]
    assert sweeps == [{"min_interval_s": scheduler.SWEEP_AFTER_SECONDS, "limit": 100}]
    # Due callbacks wait for the rate limit (a minute); the deadline in 20 s comes first.
    assert sleep == pytest.approx(20.0, abs=0.01)


def test_a_refused_status_write_makes_the_sweep_come_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    queries = Queries(monkeypatch)
    sweeps = script_pass(queries, datetime.now(UTC), callbacks=[])
    queries.script(jobs_queries, "claim_deadlines", [])
    queries.script(jobs_queries, "claim_cancels", [])
    app = FakeApp()
    app.projection_busy = True

    async def one_pass() -> float:
        runner = scheduler.Scheduler(app)  # type: ignore[arg-type]
        return await runner.pass_once()

    sleep = asyncio.run(one_pass())
    assert sweeps == [{"min_interval_s": 0.0, "limit": 100}]
    assert app.projection_busy is False
    assert sleep <= 1.0
