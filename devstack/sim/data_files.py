"""The MWA data_files web service (docs/contracts.md, data_files lookup), deterministic.

Usage::

    python -m devstack.sim.data_files --port P

``GET /metadata/data_files?obs_id=X&location=3&terse=True&all_files=False
[&mintime=A&maxtime=B]``:

* observation ``X`` has ``X % 100000`` files; file ``i`` (0-based) has GPS time
  ``X + i``; ``mintime``/``maxtime`` (inclusive) keep the files whose GPS time
  lies in the window (how the operator's VCS window is exercised);
* ``X % 100000 == 0``, or a window with no file -> 404 (no files);
  ``X >= 9000000000`` -> 500; ``8000000000 <= X < 9000000000`` answers only
  after ``X % 1000`` seconds (a hanging lookup); ``7000000000 <= X < 7000000010``
  are hostile answers (:data:`HOSTILE`): 1 streams an endless JSON object (up to
  2 GiB), 2 is JSON nested 100,000 deep, 3 sends a 200 and then one byte a
  second, 4 holds a path with a newline; a missing or non-integer ``obs_id``, ``mintime``
  or ``maxtime`` -> 400;
* 200: ``{filename: {"bucket", "folder", "gpstime", "filesize", "filetype", ...}}``
  in the real body shape. Entries cycle through the cases the path rules must
  handle: bucket and folder, null bucket, null folder, a folder with a leading
  ``/`` (and a sub-folder), and both null.

:func:`expected_paths` is the oracle tests compare the operator against. It
is written from the per-index choice of bucket and folder, deliberately not by
applying the path rules to the body, so a wrong rule in the operator cannot be
mirrored here.

Every query is kept for ``GET /_control/requests`` (cleared by ``DELETE``), so
tests can check the parameters the operator sent.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import deque
from typing import Any

from aiohttp import web

from devstack.sim import _server

log = logging.getLogger("devstack.sim.data_files")

FILES_MODULUS = 100_000
SERVER_ERROR_FROM = 9_000_000_000
#: Observations from here (below SERVER_ERROR_FROM) answer after ``X % 1000`` seconds.
SLOW_FROM = 8_000_000_000
#: Hostile answers, by observation id (what the operator's limits must survive).
HOSTILE_FROM = 7_000_000_000
HOSTILE = {1: "huge", 2: "deep", 3: "drip", 4: "unsafe path"}
#: Entry kinds, by ``index % len(KINDS)``.
KINDS = ("bucket+folder", "null bucket", "null folder", "slash folder", "null both")


def file_count(obs_id: int) -> int:
    """How many files observation ``obs_id`` has."""
    return obs_id % FILES_MODULUS


def filename(obs_id: int, index: int) -> str:
    """Name of file ``index`` of ``obs_id`` (unique: it contains the GPS time)."""
    return f"{obs_id}_{obs_id + index}_ch{index % 24 + 1:03d}.sub"


def bucket_name(obs_id: int) -> str:
    return f"mwaingest-{obs_id // FILES_MODULUS}"


def _bucket_folder(obs_id: int, index: int) -> tuple[str | None, str | None]:
    """The (bucket, folder) the service reports for file ``index``."""
    kind = KINDS[index % len(KINDS)]
    bucket, folder = bucket_name(obs_id), str(obs_id)
    if kind == "bucket+folder":
        return bucket, folder
    if kind == "null bucket":
        return None, folder
    if kind == "null folder":
        return bucket, None
    if kind == "slash folder":
        return bucket, f"/{folder}/raw"
    return None, None


def _index_window(obs_id: int, mintime: int | None, maxtime: int | None) -> range:
    """The file indices whose GPS time ``obs_id + i`` lies in [mintime, maxtime]."""
    count = file_count(obs_id)
    low = 0 if mintime is None else max(0, mintime - obs_id)
    high = count - 1 if maxtime is None else min(count - 1, maxtime - obs_id)
    return range(low, max(low, high + 1))


def expected_paths(
    obs_id: int, mintime: int | None = None, maxtime: int | None = None
) -> list[str]:
    """The Scout paths the operator must stage for this observation and window.

    Built from the kind of each entry, not from its bucket and folder, so it
    is an independent oracle of the rule ``mwa/<bucket>/<folder>/<filename>``
    (null = empty, no empty segment, leading ``/`` of the folder dropped).
    """
    bucket, obs = bucket_name(obs_id), str(obs_id)
    paths = []
    for index in _index_window(obs_id, mintime, maxtime):
        name = filename(obs_id, index)
        kind = KINDS[index % len(KINDS)]
        if kind == "bucket+folder":
            paths.append(f"mwa/{bucket}/{obs}/{name}")
        elif kind == "null bucket":
            paths.append(f"mwa/{obs}/{name}")
        elif kind == "null folder":
            paths.append(f"mwa/{bucket}/{name}")
        elif kind == "slash folder":
            paths.append(f"mwa/{bucket}/{obs}/raw/{name}")
        else:
            paths.append(f"mwa/{name}")
    return paths


@functools.lru_cache(maxsize=4)
def _fragments(obs_id: int) -> list[str]:
    """Each file's ``"name": {...}`` JSON text, built once per observation.

    Joining slices of these is what makes a 99,999-file answer fast.
    """
    fragments = []
    for index in range(file_count(obs_id)):
        bucket, folder = _bucket_folder(obs_id, index)
        entry = {
            "bucket": bucket,
            "folder": folder,
            "gpstime": obs_id + index,
            "filesize": 253_755_392 + (index * 7919) % 1_000_000,
            "filetype": 11,
            "location": 3,
            "remote_archived": True,
            "deleted": False,
        }
        fragments.append(f"{json.dumps(filename(obs_id, index))}:{json.dumps(entry)}")
    return fragments


@functools.lru_cache(maxsize=4)
def _body(obs_id: int, low: int, high: int) -> bytes:
    return ("{" + ",".join(_fragments(obs_id)[low:high]) + "}").encode()


def _int_param(request: web.Request, name: str, required: bool) -> int | None:
    raw = request.query.get(name)
    if raw is None or (raw == "" and not required):
        if required:
            raise web.HTTPBadRequest(text=f"query parameter {name} is required")
        return None
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"query parameter {name} must be an integer") from None


class DataFiles:
    """Handlers of the data_files service and its small control API."""

    def __init__(self) -> None:
        self.requests: deque[dict[str, Any]] = deque(maxlen=10_000)

    async def data_files(self, request: web.Request) -> web.StreamResponse:
        record: dict[str, Any] = {"time": time.time(), "query": dict(request.query)}
        self.requests.append(record)
        mode = _hostile_mode(request)
        if mode is not None:
            record["status"] = 200
            record["hostile"] = mode
            return await _hostile(request, mode)
        try:
            await self._maybe_hang(request)
            response = self._answer(request)
        except web.HTTPException as exc:
            record["status"] = exc.status
            raise
        record["status"] = response.status
        return response

    @staticmethod
    async def _maybe_hang(request: web.Request) -> None:
        try:
            obs_id = int(request.query.get("obs_id", ""))
        except ValueError:
            return
        if SLOW_FROM <= obs_id < SERVER_ERROR_FROM:
            await asyncio.sleep(obs_id % 1000)

    def _answer(self, request: web.Request) -> web.Response:
        obs_id = _int_param(request, "obs_id", required=True)
        mintime = _int_param(request, "mintime", required=False)
        maxtime = _int_param(request, "maxtime", required=False)
        assert obs_id is not None
        if obs_id < 0:
            raise web.HTTPBadRequest(text="obs_id must be positive")
        if obs_id >= SERVER_ERROR_FROM:
            raise web.HTTPInternalServerError(text="simulated server error")
        window = _index_window(obs_id, mintime, maxtime)
        if not window:
            raise web.HTTPNotFound(text=f"no files for observation {obs_id}")
        body = _body(obs_id, window.start, window.stop)
        return web.Response(body=body, content_type="application/json")

    async def get_requests(self, _request: web.Request) -> web.Response:
        return web.json_response(list(self.requests))

    async def clear_requests(self, _request: web.Request) -> web.Response:
        self.requests.clear()
        return web.json_response({"ok": True})


def _hostile_mode(request: web.Request) -> str | None:
    try:
        obs_id = int(request.query.get("obs_id", ""))
    except ValueError:
        return None
    if HOSTILE_FROM <= obs_id < HOSTILE_FROM + 10:
        return HOSTILE.get(obs_id - HOSTILE_FROM)
    return None


async def _hostile(request: web.Request, mode: str) -> web.StreamResponse:
    """An answer built to hurt a client without limits; ends when the client hangs up."""
    if mode == "deep":
        depth = 100_000
        return web.Response(body=b"[" * depth + b"]" * depth, content_type="application/json")
    if mode == "unsafe path":
        body = {"ok.fits": {"bucket": "b", "folder": "f"}, "bad\nname.fits": {"bucket": "b"}}
        return web.json_response(body)
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    try:
        if mode == "huge":
            chunk = b"".join(
                b'"f%07d.fits": {"bucket": "b", "folder": "f"}, ' % i for i in range(20_000)
            )
            await response.write(b"{")
            sent = 0
            while sent < 2 * 1024**3:
                await response.write(chunk)
                sent += len(chunk)
        else:  # drip: a valid start, then a byte a second, for an hour at most
            await response.write(b"{")
            for _ in range(3600):
                await asyncio.sleep(1.0)
                await response.write(b" ")
    except ConnectionError:
        pass  # the client gave up: what it should do
    return response


def make_app() -> web.Application:
    """The data_files application."""
    app = web.Application()
    service = DataFiles()
    _server.add_healthz(app)
    app.router.add_get("/metadata/data_files", service.data_files)
    app.router.add_get("/_control/requests", service.get_requests)
    app.router.add_delete("/_control/requests", service.clear_requests)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = _server.base_parser("Simulated MWA data_files service.")
    args = parser.parse_args(argv)
    logger = _server.setup_logging("data_files", args.log_level)
    _server.run(make_app(), args.host, args.port, logger)


if __name__ == "__main__":
    main()
