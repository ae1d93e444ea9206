"""From an observation to the archive paths to stage: the MWA data_files service.

docs/contracts.md, "data_files lookup". The rules live here, as pure functions unit tests can
check one by one:

* query parameters: ``obs_id``, ``location=3`` (Banksia), ``terse=True``,
  ``all_files=False``, plus ``mintime``/``maxtime`` only for a VCS window
  (``startTime`` and ``duration`` both non-zero);
* path: ``mwa/<bucket>/<folder>/<filename>``, a null or empty bucket or folder
  adds no segment, and a folder's leading ``/`` is dropped;
* outcomes: 404 (or an empty answer) means the observation has no files
  (return code 101); anything else that is not a usable 200 -- another status,
  a timeout, a malformed body -- is a failed lookup (100), but only after
  ``data_files_attempts`` tries, because the service is occasionally slow.

A 100,000-file answer is ~15 MB of JSON: it is parsed in a worker thread so
the operator's event loop keeps serving other jobs. What the service sends is
bounded (:mod:`mwa_staging.bounded_http`): at most ``data_files_max_bytes``,
the whole answer within ``data_files_timeout_seconds``, and a body nested too
deeply for the parser is a malformed answer (100), never an escaping error. A
path with a NUL, CR or LF, or longer than :data:`MAX_PATH_LENGTH` (the CRD's
rules for ``spec.files``), makes the answer malformed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from mwa_staging.bounded_http import TooLarge, TooSlow, fetch
from mwa_staging.retry import Backoff
from mwa_staging.settings import Settings
from mwa_staging.vocabulary import ReturnCode

log = logging.getLogger(__name__)

Sleeper = Callable[[float], Awaitable[None]]

#: The longest archive path (the CRD's maxLength of a spec.files item).
MAX_PATH_LENGTH = 4096
_BAD_CHARACTERS = ("\x00", "\n", "\r")


class ResolveError(Exception):
    """The observation could not be turned into files; ``code`` is 100 or 101."""

    def __init__(self, code: ReturnCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def query_params(obs_id: int, start_time: int | None, duration: int | None) -> dict[str, str]:
    """The data_files query for an observation and an optional VCS window."""
    params = {
        "obs_id": str(obs_id),
        "location": "3",
        "terse": "True",
        "all_files": "False",
    }
    if start_time and duration:
        params["mintime"] = str(start_time)
        params["maxtime"] = str(start_time + duration)
    return params


def archive_path(filename: str, bucket: str | None, folder: str | None) -> str:
    """``mwa/<bucket>/<folder>/<filename>`` without empty segments."""
    parts = ["mwa"]
    if bucket:
        parts.append(bucket.strip("/"))
    if folder:
        folder = folder.lstrip("/").rstrip("/")
        if folder:
            parts.append(folder)
    parts.append(filename.lstrip("/"))
    return "/".join(part for part in parts if part)


def paths_from_body(body: Any) -> list[str]:
    """Every path of a data_files answer, in the answer's order, without duplicates.

    Raises ResolveError(100) for a body that is not the documented shape, and
    ResolveError(101) for an answer with no files.
    """
    if not isinstance(body, dict):
        raise ResolveError(
            ReturnCode.LOOKUP_FAILED, "data_files answered something not a JSON object"
        )
    paths: dict[str, None] = {}
    for filename, entry in body.items():
        if not isinstance(filename, str) or not filename or not isinstance(entry, dict):
            raise ResolveError(
                ReturnCode.LOOKUP_FAILED,
                f"data_files answered a malformed entry for {str(filename)[:100]!r}",
            )
        bucket, folder = entry.get("bucket"), entry.get("folder")
        if not isinstance(bucket, str | None) or not isinstance(folder, str | None):
            raise ResolveError(
                ReturnCode.LOOKUP_FAILED,
                f"data_files answered a malformed entry for {filename[:100]!r}",
            )
        path = archive_path(filename, bucket, folder)
        if len(path) > MAX_PATH_LENGTH or any(c in path for c in _BAD_CHARACTERS):
            raise ResolveError(
                ReturnCode.LOOKUP_FAILED,
                f"data_files answered an unusable path for {filename[:100]!r}"
                f" (longer than {MAX_PATH_LENGTH} characters, or a NUL, CR or LF in it)",
            )
        paths[path] = None
    if not paths:
        raise ResolveError(ReturnCode.NO_FILES, "the observation has no files on Banksia")
    return list(paths)


#: Lookups in flight at once, and the client's connections. Thousands of observation
#: jobs created together would otherwise queue in httpx's own pool, whose queue is
#: scanned against every connection each time one frees up (the cost found in the
#: Scout client, issue 12); past this number they wait on a semaphore instead, and
#: the shared service sees a bounded load. The wait is not counted in a request's
#: time limit: it is our queue, not the service's slowness.
DATA_FILES_CONNECTIONS = 8


def data_files_client(settings: Settings) -> httpx.AsyncClient:
    """The HTTP client for the data_files service (TLS as the settings say)."""
    return httpx.AsyncClient(
        follow_redirects=False,
        verify=settings.data_files_verify(),
        limits=httpx.Limits(
            max_connections=DATA_FILES_CONNECTIONS,
            max_keepalive_connections=DATA_FILES_CONNECTIONS,
        ),
    )


def _window(start_time: int | None, duration: int | None) -> str:
    if start_time and duration:
        return f" between GPS {start_time} and {start_time + duration}"
    return ""


async def resolve_observation(
    client: httpx.AsyncClient,
    settings: Settings,
    obs_id: int,
    start_time: int | None = None,
    duration: int | None = None,
    *,
    sleep: Sleeper = asyncio.sleep,
    slots: asyncio.Semaphore | None = None,
) -> list[str]:
    """The observation's archive paths; raises ResolveError with code 100 or 101.

    ``slots`` bounds the lookups in flight (see :data:`DATA_FILES_CONNECTIONS`);
    it is held for one request at a time, never across the pause between attempts.
    """
    params = query_params(obs_id, start_time, duration)
    attempts = settings.data_files_attempts
    # The service is occasionally slow: a few attempts, the pause doubling (uncapped).
    backoff = Backoff(settings.data_files_retry_seconds, math.inf)
    problem = ""
    for attempt in range(1, attempts + 1):
        try:
            async with slots or contextlib.nullcontext():
                response = await fetch(
                    client,
                    "GET",
                    settings.data_files_url,
                    params=params,
                    max_bytes=settings.data_files_max_bytes,
                    seconds=settings.data_files_timeout_seconds,
                )
        except (TooLarge, TooSlow) as exc:
            problem = f"data_files: {exc}"
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__} talking to data_files"
        else:
            if response.status_code == 404:
                raise ResolveError(
                    ReturnCode.NO_FILES,
                    f"observation {obs_id} has no files on Banksia{_window(start_time, duration)}",
                )
            if response.status_code == 200:
                try:
                    body = await asyncio.to_thread(json.loads, response.content)
                except ValueError:
                    problem = "data_files answered a body that is not JSON"
                except RecursionError:
                    problem = "data_files answered JSON nested too deeply"
                else:
                    try:
                        paths = await asyncio.to_thread(paths_from_body, body)
                    except ResolveError as exc:
                        if exc.code == ReturnCode.NO_FILES:
                            raise ResolveError(
                                ReturnCode.NO_FILES,
                                f"observation {obs_id} has no files on Banksia"
                                f"{_window(start_time, duration)}",
                            ) from None
                        problem = exc.message
                    else:
                        return paths
            else:
                problem = f"data_files answered HTTP {response.status_code}"
        if attempt < attempts:
            pause = backoff.delay(attempt)
            log.warning(
                "looking up observation %s failed (%s); attempt %d of %d, retrying in %.1f s",
                obs_id,
                problem,
                attempt,
                attempts,
                pause,
            )
            await sleep(pause)
    raise ResolveError(
        ReturnCode.LOOKUP_FAILED,
        f"looking up the files of observation {obs_id} failed after {attempts} attempt(s): "
        f"{problem}",
    )
