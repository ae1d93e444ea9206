"""The gateway's pure parts: credentials, request checks, the original's answer shapes."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mwa_staging.db.gateway_queries import Heartbeat, ListedJob, Report, Totals
from mwa_staging.db.rows import JobRow
from mwa_staging.scout import CacheState
from mwa_staging.settings import Settings
from mwa_staging_gateway import views
from mwa_staging_gateway.app import check_submission
from mwa_staging_gateway.auth import Tokens, credential
from mwa_staging_gateway.jobs import Refused
from mwa_staging_gateway.models import Observation, StagingRequest

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"Bearer abc", b"abc"),
        (b"bearer  abc ", b"abc"),
        (basic("portal", "tok"), b"tok"),
        (basic("", "tok"), b"tok"),
        (basic("portal", ""), None),
        (b"Basic !!!", None),
        (b"Bearer", None),
        (b"Token abc", None),
        (None, None),
    ],
)
def test_credential(header: bytes | None, expected: bytes | None) -> None:
    assert credential(header) == expected


def test_tokens_fixed_and_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("one\ntwo, three\n")
    tokens = Tokens(["fixed"], str(path), recheck_seconds=0)
    for good in (b"fixed", b"one", b"two", b"three"):
        assert tokens.accepts(b"Bearer " + good)
    assert not tokens.accepts(b"Bearer on")
    path.write_text("four\n")
    path.touch()
    assert tokens.accepts(b"Bearer four") and not tokens.accepts(b"Bearer one")
    path.unlink()
    assert tokens.accepts(b"Bearer fixed") and not tokens.accepts(b"Bearer four")


def settings(**kw: object) -> Settings:
    return Settings(**kw)  # type: ignore[arg-type]


def request(**kw: object) -> StagingRequest:
    base: dict[str, object] = {"job_id": 7, "notify_url": "http://asvo.example.org/cb"}
    base.update(kw)
    return StagingRequest.model_validate(base)


def test_files_win_over_obs_and_the_window_is_kept() -> None:
    sub = check_submission(request(files=["a"], obs={"obs_id": 5}), settings())
    assert sub.files == ["a"] and sub.obs_id is None
    sub = check_submission(request(obs={"obs_id": 5, "start_time": 3}), settings())
    assert (sub.obs_id, sub.start_time, sub.duration) == (5, 3, 0)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({}, "No files or obs given"),
        ({"obs": {}}, "No files or obs given"),
        ({"job_id": 0, "files": ["a"]}, "job_id must be between"),
        ({"notify_url": "/relative", "files": ["a"]}, "absolute http or https URL"),
        ({"files": ["a", "b", "c"]}, "too many files: 3 given, at most 2"),
    ],
)
def test_refusals(kw: dict[str, object], message: str) -> None:
    with pytest.raises(Refused, match=message) as err:
        check_submission(request(**kw), settings(gateway_max_files=2))
    assert err.value.status == 400


def test_allow_list() -> None:
    allowed = settings(callback_allowed_hosts=["asvo.example.org"])
    check_submission(request(files=["a"]), allowed)
    with pytest.raises(Refused, match=r"callbacks to host evil\.example\.org are not allowed"):
        check_submission(request(files=["a"], notify_url="https://evil.example.org/"), allowed)


def job(**kw: object) -> JobRow:
    fields = dict.fromkeys(JobRow.__dataclass_fields__)
    fields.update(
        id=1, uid="u", namespace="ns", name="job-7", job_id=7, live=True, state="staging",
        generation=1, total_files=3, ready_files=1, error_files=1, created_at=T0,
        restage_interval_s=60, notify_url="http://x/", callback_state="none",
        callback_attempts=0, version=1, projected_version=1,
    )  # fmt: skip
    fields.update(kw)
    return JobRow(**fields)  # type: ignore[arg-type]


def test_job_status_shape() -> None:
    later = T0.replace(second=9)
    files = [("a", 1, later), ("b", 2, later), ("c", 0, None)]
    body = views.job_status(job(last_file_time=later), files)
    assert body == {
        "job_id": 7,
        "created": int(T0.timestamp()),
        "completed": False,
        "total_files": 3,
        "ready_files": 1,
        "error_files": 1,
        "last_readytime": int(later.timestamp()),
        "files": {
            "a": [True, False, int(later.timestamp())],
            "b": [False, True, int(later.timestamp())],
            "c": [False, False, None],
        },
    }
    assert views.job_status(job(state="failed"), None)["completed"] is True
    assert views.job_status(job(), None)["files"] == {}
    assert views.job_status(job(), None)["last_readytime"] == 0


def test_job_list_stats_and_reports() -> None:
    listed = views.job_list([ListedJob(7, T0, 2, 3, True, None, 1, "mwa/a")])
    assert listed == {"jobs": {"7": [7, T0.timestamp(), 2, 3, True, None, 1, "mwa/a"]}}
    totals = Totals(1, 2, 3, 4, 5)
    beat = Heartbeat(T0, None, True)
    cache = CacheState(10, 20, 3, 4, 5, 1, "ok")
    stats = views.stats(totals, beat, cache)
    assert (stats["availdatasz"], stats["totdatasz"], stats["releaseable"]) == (10, 20, 3)
    assert (stats["nonreleaseable"], stats["pending"], stats["health"]) == (4, 5, 1)
    assert stats["kafkad_heartbeat"] == T0.timestamp() and stats["last_message"] == 0.0
    down = views.stats(totals, replace(beat, broker_ok=False), None)
    assert (down["availdatasz"], down["health"], down["healthstatus"]) == (0, 0, "")
    assert down["waiting_files"] == 5 and down["kafka_alive"] is False
    report = Report(1, 7, T0, 3, 2)
    when = int(T0.timestamp())
    assert views.failed_job_list([report]) == {"jobs": {"7": [7, when, 0, 0, 0, 0, 0]}}
    body = views.failed_job(report, ["x", "y"])
    assert body["files"] == {"x": [False, True, when], "y": [False, True, when]}
    assert (body["total_files"], body["error_files"], body["last_readytime"]) == (3, 2, when)


def test_models_default_like_the_original() -> None:
    req = request()
    assert req.files == [] and req.obs is None
    assert Observation().model_dump() == {"obs_id": None, "start_time": 0, "duration": 0}
