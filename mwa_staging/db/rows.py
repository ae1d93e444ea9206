"""The typed rows and columns the database layer takes and gives.

Everything a caller hands to a query or gets back from one is defined here, in
the layer that owns the tables, so data flows down: the operator and the
bridge build these values and pass them to ``mwa_staging.db``, never the other
way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class JobRow:
    """One row of ``jobs`` (see migrations/0001_init.sql for what each column means)."""

    id: int
    uid: str
    namespace: str
    name: str
    job_id: int
    live: bool
    state: str
    reason: str | None
    message: str | None
    return_code: int | None
    generation: int
    total_files: int
    ready_files: int
    error_files: int
    created_at: datetime
    start_time: datetime | None
    resolved_at: datetime | None
    stage_requested_at: datetime | None
    last_file_time: datetime | None
    completion_time: datetime | None
    deadline: datetime | None
    restage_interval_s: int
    next_restage_at: datetime | None
    ttl_after_finished_s: int | None
    notify_url: str
    callback_secret: str | None
    callback_state: str
    callback_attempts: int
    callback_last_attempt: datetime | None
    callback_last_error: str | None
    callback_next_attempt: datetime | None
    callback_delivered_at: datetime | None
    version: int
    projected_version: int
    projected_at: datetime | None

    @classmethod
    def columns(cls) -> str:
        """The SELECT list matching the dataclass fields, in order."""
        return ", ".join(f.name for f in fields(cls))

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> JobRow:
        """Build from a tuple selected with :meth:`columns`."""
        return cls(*row)


@dataclass(frozen=True)
class FailedFile:
    """A file the archive could not stage, for the status' bounded sample."""

    path: str
    error: str


@dataclass
class Arrivals:
    """File arrivals as columns, the form the bridge's SQL takes (``errors[i]`` None: staged)."""

    paths: list[str] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # epoch seconds


@dataclass
class MalformedRows:
    """Messages kept in ``malformed_messages``, as columns."""

    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
