"""The banksia control endpoint (``SIM_CONTROL_URL``), for tests and the demo.

It lets a test see what the operator did to Scout (the call log), steer the
archive (pause, delay, token lifetime, outages) and look inside it (one file's
state, counters). Routes:

========================  ==================================================
``GET /control/calls``    every Scout call received (``?key=K`` filters)
``DELETE /control/calls`` forget them
``POST /control/pause``   stop completing arrivals (they wait)
``POST /control/resume``  go on; everything due happens now
``POST /control/delay``   ``{"delay_ms": int, "jitter_ms": int}`` (new stages)
``POST /control/token-ttl`` ``{"seconds": float}`` (applies to issued tokens)
``POST /control/expire-tokens`` forget every token now
``POST /control/outage``  ``{"status": 503, "count": N, "endpoint": P, "after": K, "mode": M}``
                          (count omitted: until ``DELETE /control/outage``;
                          endpoint: only calls of path P; after: let the
                          first K such calls through)
``GET /control/outage``   the outage in force
``GET /control/files``    ``?path=P``: the simulator's state of one path
``GET /control/stats``    counters of the archive and the publisher
========================  ==================================================
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from devstack.sim.archive import Archive
from devstack.sim.scout_api import HOSTILE_MODES, CallLog, Outage


class HasStats(Protocol):
    def stats(self) -> dict[str, int]: ...


class Control:
    """Handlers of ``/control/...``; ``wake`` is called when arrivals may be due."""

    def __init__(
        self,
        archive: Archive,
        calls: CallLog,
        outage: Outage,
        publisher: HasStats,
        wake: Callable[[], None],
    ) -> None:
        self.archive = archive
        self.calls = calls
        self.outage = outage
        self.publisher = publisher
        self.wake = wake

    async def get_calls(self, request: web.Request) -> web.Response:
        return web.json_response(self.calls.entries(request.query.get("key")))

    async def delete_calls(self, _request: web.Request) -> web.Response:
        self.calls.clear()
        return web.json_response({"ok": True})

    async def pause(self, _request: web.Request) -> web.Response:
        self.archive.paused = True
        return web.json_response({"paused": True})

    async def resume(self, _request: web.Request) -> web.Response:
        self.archive.paused = False
        self.wake()
        return web.json_response({"paused": False})

    async def delay(self, request: web.Request) -> web.Response:
        body = await _body(request)
        delay = body.get("delay_ms", self.archive.delay_ms)
        jitter = body.get("jitter_ms", self.archive.jitter_ms)
        if not _nonneg_int(delay) or not _nonneg_int(jitter):
            raise web.HTTPBadRequest(text="delay_ms and jitter_ms must be integers >= 0")
        self.archive.delay_ms, self.archive.jitter_ms = delay, jitter
        return web.json_response({"delay_ms": delay, "jitter_ms": jitter})

    async def token_ttl(self, request: web.Request) -> web.Response:
        seconds = (await _body(request)).get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise web.HTTPBadRequest(text="seconds must be a number >= 0")
        self.archive.token_ttl = float(seconds)
        return web.json_response({"seconds": float(seconds)})

    async def expire_tokens(self, _request: web.Request) -> web.Response:
        return web.json_response({"expired": self.archive.expire_tokens()})

    async def set_outage(self, request: web.Request) -> web.Response:
        body = await _body(request)
        status = body.get("status", 503)
        count = body.get("count")
        if not _nonneg_int(status) or not 100 <= status <= 599:
            raise web.HTTPBadRequest(text="status must be an HTTP status code")
        if count is not None and (not _nonneg_int(count) or count < 1):
            raise web.HTTPBadRequest(text="count must be an integer >= 1, or omitted")
        endpoint = body.get("endpoint")
        after = body.get("after", 0)
        if endpoint is not None and not (isinstance(endpoint, str) and endpoint.startswith("/")):
            raise web.HTTPBadRequest(text="endpoint must be a path such as /v1/request/batchstage")
        if not _nonneg_int(after):
            raise web.HTTPBadRequest(text="after must be an integer >= 0")
        mode = body.get("mode")
        if mode is not None and mode not in HOSTILE_MODES:
            raise web.HTTPBadRequest(text=f"mode must be one of {sorted(HOSTILE_MODES)}")
        self.outage.set(status, count, endpoint=endpoint, after=after, mode=mode)
        return web.json_response(self.outage.describe())

    async def get_outage(self, _request: web.Request) -> web.Response:
        return web.json_response(self.outage.describe())

    async def clear_outage(self, _request: web.Request) -> web.Response:
        self.outage.clear()
        return web.json_response(self.outage.describe())

    async def files(self, request: web.Request) -> web.Response:
        path = request.query.get("path")
        if not path:
            raise web.HTTPBadRequest(text="query parameter path is required")
        return web.json_response(self.archive.describe(path))

    async def stats(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {**self.archive.stats(), **self.publisher.stats(), "outage": self.outage.describe()}
        )

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/control/calls", self.get_calls)
        r.add_delete("/control/calls", self.delete_calls)
        r.add_post("/control/pause", self.pause)
        r.add_post("/control/resume", self.resume)
        r.add_post("/control/delay", self.delay)
        r.add_post("/control/token-ttl", self.token_ttl)
        r.add_post("/control/expire-tokens", self.expire_tokens)
        r.add_post("/control/outage", self.set_outage)
        r.add_get("/control/outage", self.get_outage)
        r.add_delete("/control/outage", self.clear_outage)
        r.add_get("/control/files", self.files)
        r.add_get("/control/stats", self.stats)


def _nonneg_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body
