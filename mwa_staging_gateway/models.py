"""Request bodies of the original API (HTTP-API.md), as pydantic models.

Field names, types and defaults are the original's, so a body that the
original refused with 422 is refused here with FastAPI's same 422 shape.
Limits beyond the types (counts, lengths, job id range) are checked by the
endpoint, so that they get the original's ``errormsg`` style with status 400.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Observation(BaseModel):
    """``obs``: an observation and, for VCS, a time window (used when both are non-zero)."""

    obs_id: int | None = Field(default=None, description="The observation id.")
    start_time: int = Field(default=0, description="GPS start of the VCS window.")
    duration: int = Field(default=0, description="Length of the VCS window in seconds.")


class StagingRequest(BaseModel):
    """``POST /staging``."""

    job_id: int = Field(description="The client's id, sent back in the callback.")
    notify_url: str = Field(description="The callback URL.")
    files: list[str] = Field(default_factory=list, description="Archive paths to stage.")
    obs: Observation | None = Field(default=None, description="Or an observation.")


class FileStatusRequest(BaseModel):
    """``POST /filestatus``."""

    files: list[str]
