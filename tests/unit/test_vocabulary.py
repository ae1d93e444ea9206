"""The vocabulary's values are the ones the schema allows (its CHECK constraints)."""

from __future__ import annotations

import re
from importlib import resources

from mwa_staging.vocabulary import (
    FAILURE_REASONS,
    PHASE_OF_STATE,
    CallbackState,
    FileState,
    JobState,
)


def _schema() -> str:
    return (
        resources.files("mwa_staging.db")
        .joinpath("migrations", "0001_init.sql")
        .read_text(encoding="utf-8")
    )


def _checked(column: str) -> set[str]:
    match = re.search(rf"\b{column}\b[^,]*?CHECK \({column} IN \(([^)]*)\)\)", _schema(), re.S)
    assert match is not None, f"no CHECK constraint on {column}"
    return {value.strip().strip("'") for value in match.group(1).split(",")}


def test_job_states_are_the_schemas() -> None:
    assert _checked("state") == {s.value for s in JobState}


def test_callback_states_are_the_schemas() -> None:
    assert _checked("callback_state") == {s.value for s in CallbackState}


def test_file_states_are_the_schemas() -> None:
    match = re.search(r"state\s+smallint[^\n]*CHECK \(state IN \(([^)]*)\)\)", _schema())
    assert match is not None
    assert {int(v) for v in match.group(1).split(",")} == {int(s) for s in FileState}


def test_every_state_has_a_phase_and_every_failure_code_a_reason() -> None:
    assert set(PHASE_OF_STATE) == set(JobState)
    assert all(reason for reason in FAILURE_REASONS.values())
