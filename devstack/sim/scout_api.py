"""The Scout REST API (docs/contracts.md, Scout API), answered by the banksia process.

Scout nodes forward every request here unchanged, naming themselves in the
:data:`NODE_HEADER` header, so the logic and the state exist once. The API is
also served directly by banksia (node 0), which tests may use.

Every call is written to the call log that the control endpoint lists, except
HAProxy's health checks (``GET /v1/fscache`` without a token), which would
otherwise drown the calls tests care about.

Order of checks for a call other than login: outage (a down server answers
before looking at the request), then the token, then the request itself.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from typing import Any

from aiohttp import web

from devstack.sim.archive import Archive

NODE_HEADER = "X-Scout-Node"
LOGIN = "/v1/security/login"
STAGE = "/v1/request/batchstage"
CANCEL = "/v1/request/cancelbatchstage"
FILE = "/v1/file"
FSCACHE = "/v1/fscache"
#: At most this many paths per stage or cancel call.
MAX_PATHS = 10_000
#: Bodies over about 4 MB are refused.
MAX_BODY = 4 * 1024 * 1024
#: A legal Kafka topic name (a stage call names the topic to notify on).
TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class CallLog:
    """Every Scout call received, for tests to assert on.

    Bounded (the oldest go first) so a long-running ``make up`` stack under a
    benchmark cannot grow without limit; tests never come near the bound.
    """

    def __init__(self, limit: int = 200_000) -> None:
        self._calls: deque[dict[str, Any]] = deque(maxlen=limit)

    def add(self, call: dict[str, Any]) -> None:
        self._calls.append(call)

    def entries(self, key: str | None = None) -> list[dict[str, Any]]:
        if key is None:
            return list(self._calls)
        return [c for c in self._calls if c.get("key") == key]

    def clear(self) -> None:
        self._calls.clear()


class Outage:
    """A simulated Scout outage: calls answer ``status`` while it lasts.

    ``remaining`` None means until cleared; otherwise the number of calls left.
    ``endpoint`` limits the outage to calls of that path (None: every call);
    ``after`` lets that many of those calls through before the outage starts
    (e.g. the first stage call of a job is accepted, the second refused).
    ``mode`` makes the outage hostile instead: ``huge`` answers 200 with an
    endless body, ``drip`` answers 200 and then one byte a second.
    """

    def __init__(self) -> None:
        self.mode: str | None = None
        self.status: int | None = None
        self.remaining: int | None = None
        self.endpoint: str | None = None
        self.after = 0

    def set(
        self,
        status: int,
        count: int | None,
        *,
        endpoint: str | None = None,
        after: int = 0,
        mode: str | None = None,
    ) -> None:
        self.mode = mode
        self.status = status
        self.remaining = count
        self.endpoint = endpoint
        self.after = after

    def clear(self) -> None:
        self.mode = None
        self.status = None
        self.remaining = None
        self.endpoint = None
        self.after = 0

    def take(self, endpoint: str | None = None) -> int | None:
        """The status to answer this call with, or None when there is no outage."""
        if self.status is None:
            return None
        if self.endpoint is not None and endpoint != self.endpoint:
            return None
        if self.after > 0:
            self.after -= 1
            return None
        status = self.status
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.clear()
        return status

    def describe(self) -> dict[str, Any]:
        found: dict[str, Any] = {"status": self.status, "remaining": self.remaining}
        if self.endpoint is not None:
            found["endpoint"] = self.endpoint
        if self.after:
            found["after"] = self.after
        if self.mode:
            found["mode"] = self.mode
        return found


HOSTILE_MODES = frozenset({"huge", "drip"})


class _Hostile(Exception):
    """Raised inside a handler to send a hostile answer (``Outage.mode``)."""

    def __init__(self, mode: str) -> None:
        super().__init__(mode)
        self.mode = mode


async def _hostile_answer(request: web.Request, mode: str) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    try:
        await response.write(b'{"response": "')
        if mode == "huge":
            chunk = b"x" * 65536
            for _ in range(32 * 1024):  # 2 GiB at most
                await response.write(chunk)
        else:
            for _ in range(3600):
                await asyncio.sleep(1.0)
                await response.write(b"x")
    except ConnectionError:
        pass
    return response


class _Answer(Exception):
    """Raised inside a handler to answer ``status`` with an error text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class ScoutApi:
    """The aiohttp handler of every ``/v1/...`` Scout call."""

    def __init__(self, archive: Archive, calls: CallLog, outage: Outage) -> None:
        self.archive = archive
        self.calls = calls
        self.outage = outage

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        auth = request.headers.get("Authorization")
        if path == FSCACHE and auth is None:
            # HAProxy health check: alive, unauthenticated, not worth recording.
            return web.json_response({"error": "unauthorized"}, status=401)
        call: dict[str, Any] = {
            "node": _node(request),
            "method": request.method,
            "path": path,
            "n_paths": None,
            "key": None,
            "status": 0,
            "time": time.time(),
        }
        try:
            status, payload = await self._dispatch(request, path, auth, call)
        except _Answer as answer:
            status, payload = answer.status, {"error": answer.text}
        except _Hostile as hostile:
            call["status"] = 200
            call["hostile"] = hostile.mode
            self.calls.add(call)
            return await _hostile_answer(request, hostile.mode)
        call["status"] = status
        self.calls.add(call)
        return web.json_response(payload, status=status)

    async def _dispatch(
        self, request: web.Request, path: str, auth: str | None, call: dict[str, Any]
    ) -> tuple[int, Any]:
        if path == LOGIN:
            _require_method(request, "POST")
            body = await _json_body(request)
            token = self.archive.login(body.get("acct"), body.get("pass"))
            if token is None:
                raise _Answer(401, "bad credentials")
            return 200, {"response": token}
        mode = self.outage.mode
        down = self.outage.take(path)
        if down is not None and mode is not None:
            raise _Hostile(mode)
        if down is not None:
            raise _Answer(down, "service unavailable (simulated outage)")
        token = _bearer(auth)
        if token is None or not self.archive.token_valid(token):
            raise _Answer(401, "missing, unknown or expired token")
        if path in (STAGE, CANCEL):
            _require_method(request, "PUT")
            return self._batch(path, await _json_body(request), call)
        if path == FILE:
            _require_method(request, "GET")
            target = request.query.get("path")
            if not target:
                raise _Answer(400, "query parameter path is required")
            call["file"] = target
            status = self.archive.file_status(target)
            if status is None:
                raise _Answer(404, f"no such file: {target}")
            return 200, status
        if path == FSCACHE:
            _require_method(request, "GET")
            return 200, self.archive.fscache()
        raise _Answer(404, f"no such endpoint: {path}")

    def _batch(self, path: str, body: dict[str, Any], call: dict[str, Any]) -> tuple[int, Any]:
        paths = body.get("path")
        key = body.get("key", "")
        topic = body.get("topic", "")
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise _Answer(400, "path must be a list of non-empty strings")
        if not isinstance(key, str) or not isinstance(topic, str):
            raise _Answer(400, "key and topic must be strings")
        if not isinstance(body.get("copy", 0), int) or not isinstance(body.get("inode", []), list):
            raise _Answer(400, "copy must be an integer and inode a list")
        call["n_paths"] = len(paths)
        call["key"] = key
        if len(paths) > MAX_PATHS:
            raise _Answer(413, f"at most {MAX_PATHS} paths per call, got {len(paths)}")
        if path == STAGE:
            if not TOPIC_RE.match(topic):
                raise _Answer(400, f"topic must be a Kafka topic name, got {topic!r}")
            self.archive.stage(paths, key, topic)
            return 200, {"response": f"staging {len(paths)} file(s)"}
        cancelled = self.archive.cancel(paths)
        return 200, {"response": f"cancelled {cancelled} request(s)"}


def _node(request: web.Request) -> int:
    try:
        return int(request.headers.get(NODE_HEADER, "0"))
    except ValueError:
        return 0


def _require_method(request: web.Request, method: str) -> None:
    if request.method != method:
        raise _Answer(405, f"{request.method} not allowed here, use {method}")


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise _Answer(413, f"body of {len(raw)} bytes is over {MAX_BODY}")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Answer(400, f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _Answer(400, "body must be a JSON object")
    return body


def add_routes(app: web.Application, api: ScoutApi) -> None:
    """Serve the Scout API under ``/v1/``."""
    app.router.add_route("*", "/v1/{tail:.*}", api.handle)
