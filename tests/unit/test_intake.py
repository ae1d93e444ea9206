"""The intake: which watch events run the create and TTL steps (no cluster, no database)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from mwa_staging_operator import create, delete
from mwa_staging_operator import intake as intake_module
from mwa_staging_operator.intake import Intake

from mwa_staging.kube import FINALIZER


def body(uid: str = "u1", generation: int = 1, ttl: int | None = None, **meta: Any) -> Any:
    spec: dict[str, Any] = {"jobId": 1, "files": ["a"]}
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    metadata = {
        "uid": uid,
        "name": "j",
        "namespace": "ns",
        "generation": generation,
        "finalizers": [FINALIZER],
        **meta,
    }
    return {"metadata": metadata, "spec": spec}


class Steps:
    """Records the calls the intake makes; ``fail`` RetryLater answers come first."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, row_generation: int = 1) -> None:
        self.creates: list[Any] = []
        self.ttls: list[tuple[int | None, int]] = []
        self.fail = 0
        self.row_generation = row_generation

        async def handle_create(app: Any, obj: Any) -> Any:
            self.creates.append(obj)
            if self.fail:
                self.fail -= 1
                raise create.RetryLater("database unavailable", delay=0.01)
            return SimpleNamespace(generation=self.row_generation)

        async def handle_ttl_change(app: Any, ref: Any, ttl: int | None, generation: int) -> None:
            self.ttls.append((ttl, generation))

        monkeypatch.setattr(create, "handle_create", handle_create)
        monkeypatch.setattr(delete, "handle_ttl_change", handle_ttl_change)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)  # polling interval of the condition


def test_first_sight_creates_and_later_events_of_that_generation_cost_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps = Steps(monkeypatch)
    intake = Intake(None)  # type: ignore[arg-type]

    async def scenario() -> None:
        await intake.on_event(None, body())  # listed at start-up
        for _ in range(5):  # our own status patches, kopf's finalizer
            await intake.on_event("MODIFIED", body())

    asyncio.run(scenario())
    assert len(steps.creates) == 1 and steps.ttls == []
    assert intake.known == 1


def test_nothing_starts_before_the_finalizer_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf adds it in the cycle of the first event; the work starts on the next one."""
    steps = Steps(monkeypatch)
    intake = Intake(None)  # type: ignore[arg-type]

    async def scenario() -> None:
        await intake.on_event("ADDED", body(finalizers=[]))
        assert steps.creates == []
        await intake.on_event("MODIFIED", body())

    asyncio.run(scenario())
    assert len(steps.creates) == 1


def test_a_new_generation_stores_the_ttl_without_creating_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps = Steps(monkeypatch)
    intake = Intake(None)  # type: ignore[arg-type]

    async def scenario() -> None:
        await intake.on_event("ADDED", body())
        await intake.on_event("MODIFIED", body(generation=2, ttl=60))
        await intake.on_event("MODIFIED", body(generation=2, ttl=60))

    asyncio.run(scenario())
    assert len(steps.creates) == 1
    assert steps.ttls == [(60, 2)]


def test_a_ttl_changed_while_the_operator_was_down_is_stored_at_first_sight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps = Steps(monkeypatch, row_generation=1)
    intake = Intake(None)  # type: ignore[arg-type]
    asyncio.run(intake.on_event(None, body(generation=3, ttl=5)))
    assert len(steps.creates) == 1
    assert steps.ttls == [(5, 3)]


def test_a_database_error_is_retried_with_the_newest_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps = Steps(monkeypatch)
    steps.fail = 2
    intake = Intake(None)  # type: ignore[arg-type]

    async def scenario() -> None:
        await intake.on_event("ADDED", body())
        await until(lambda: intake.known == 1)
        await intake.stop()

    asyncio.run(scenario())
    assert len(steps.creates) == 3  # two refusals, then done


def test_deletion_cancels_a_pending_retry_and_gone_objects_are_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps = Steps(monkeypatch)
    intake = Intake(None)  # type: ignore[arg-type]

    async def scenario() -> None:
        steps.fail = 1
        await intake.on_event("ADDED", body("u1"))
        # Being deleted: on.delete's business; the retry must not create it again.
        await intake.on_event("MODIFIED", body("u1", deletionTimestamp="2026-12-02T00:00:00Z"))
        await intake.on_event("ADDED", body("u2"))
        await intake.on_event("DELETED", body("u2"))
        assert intake.retries_pending == 0  # no timer left to create u1 again
        await intake.stop()

    asyncio.run(scenario())
    assert [b["metadata"]["uid"] for b in steps.creates] == ["u1", "u2"]
    assert intake.known == 0


def test_the_first_object_seen_with_a_job_id_is_recorded_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kubectl's object waits for kopf's finalizer; the gateway's (made with it) must wait too."""
    steps = Steps(monkeypatch)
    intake = Intake(None)  # type: ignore[arg-type]

    async def scenario() -> None:
        await intake.on_event("ADDED", body("kubectl", finalizers=[]))
        await intake.on_event("ADDED", body("gateway"))  # same job id, finalizer already set
        assert steps.creates == []
        await intake.on_event("MODIFIED", body("kubectl"))  # kopf's finalizer patch
        await until(lambda: intake.known == 2)
        await intake.stop()

    asyncio.run(scenario())
    assert [b["metadata"]["uid"] for b in steps.creates] == ["kubectl", "gateway"]


def test_an_earlier_object_deleted_or_stuck_does_not_hold_the_job_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps = Steps(monkeypatch)
    monkeypatch.setattr(intake_module, "FIRST_SEEN_WAIT", 0.2)
    intake = Intake(None)  # type: ignore[arg-type]

    async def scenario() -> None:
        await intake.on_event("ADDED", body("deleted", finalizers=[]))
        await intake.on_event("ADDED", body("stuck", finalizers=[]))
        await intake.on_event("ADDED", body("later"))
        await intake.on_event("DELETED", body("deleted", finalizers=[]))
        assert steps.creates == []  # "stuck" was seen first and is not recorded yet
        await until(lambda: intake.known == 1)  # after FIRST_SEEN_WAIT, no longer
        await intake.stop()

    asyncio.run(scenario())
    assert [b["metadata"]["uid"] for b in steps.creates] == ["later"]


def test_other_job_ids_do_not_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = Steps(monkeypatch)
    intake = Intake(None)  # type: ignore[arg-type]
    other = body("other")
    other["spec"]["jobId"] = 2

    async def scenario() -> None:
        await intake.on_event("ADDED", body("waiting", finalizers=[]))
        await intake.on_event("ADDED", other)

    asyncio.run(scenario())
    assert [b["metadata"]["uid"] for b in steps.creates] == ["other"]
