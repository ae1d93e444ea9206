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


def error_responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """The OpenAPI ``responses`` of a route's refusals (401 everywhere a token is needed).

    A 400 may also be FastAPI's own ``{"detail": ...}`` for a body that is not
    JSON at all (as the original, also FastAPI, answered).
    """
    why = {
        400: "The request breaks a limit or a rule (errormsg says which), or its body is not"
        " JSON (detail).",
        401: "No valid token.",
        403: "A live job already has this job_id.",
        404: "No such job (or Scout does not know the file).",
        413: "The body is larger than GATEWAY_MAX_BODY_BYTES.",
    }
    errormsg = {
        "type": "object",
        "required": ["errormsg"],
        "properties": {"errormsg": {"type": "string"}},
    }
    detail = {
        "type": "object",
        "required": ["detail"],
        "properties": {"detail": {"type": "string"}},
    }
    found: dict[int | str, dict[str, object]] = {}
    for code in sorted({401, *codes}):
        schema = {"anyOf": [errormsg, detail]} if code == 400 else errormsg
        found[code] = {
            "description": why[code],
            "content": {"application/json": {"schema": schema}},
        }
    return found
