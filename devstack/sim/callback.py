"""The client's callback receiver (docs/contracts.md, Callback).

Usage::

    python -m devstack.sim.callback --port P --user U --password PW --log FILE

Any ``POST`` under ``/callback`` is checked against HTTP Basic credentials
(401 if wrong), logged and answered 200. Each request becomes one JSON line
in ``--log``: ``{"time", "method", "path", "query", "user", "body", "status"}``
(``body`` parsed JSON, else the raw text; ``status`` what was or will be
answered; ``hang`` the seconds it was held, if it was). Lines are flushed as
they are written because tests read the file while the receiver runs; a
request that is held is logged when it arrives.

The delivery failures the operator must survive are switched on through
``/_control``:

=============================  ================================================
``POST /_control/fail``        ``{"status": 500, "count": N}``: the next N
                               authenticated requests get that status
``POST /_control/hang``        ``{"count": N, "seconds": S}``: the next N are
                               held S seconds before the answer
``POST /_control/hostile``     ``{"mode": M, "count": N}``: the next N
                               authenticated requests get a hostile answer:
                               ``redirect`` (307 to ``/callback/redirected``),
                               ``huge`` (200 and an endless body), ``drip``
                               (200, then a byte a second)
``POST /_control/users``       ``{"user", "password"}``: accept another pair
``GET /_control``              the modes in force
``GET /_control/log?since=N``  the log's entries from the N-th on (0-based,
                               default 0) as a JSON list; header
                               ``X-Log-Length`` gives the total number
``DELETE /_control``           back to the start: no failure, no hang, only the
                               command line's credentials
=============================  ================================================

``count`` omitted means until reset. Authentication comes first: a 401 uses
up neither a failure nor a hang.

``/_control/log`` serves the same entries as the ``--log`` file (it is read at
start, so entry N is line N of the file across restarts), for readers that do
not share the receiver's file system: the end-to-end tests read callbacks
through it, on the local stack and in a cluster alike. ``DELETE /_control``
does not clear it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from devstack.sim import _server

log = logging.getLogger("devstack.sim.callback")


class _Mode:
    """A failure mode applied to the next ``count`` requests (None: forever)."""

    def __init__(self) -> None:
        self.active = False
        self.count: int | None = None
        self.value: float = 0

    def set(self, value: float, count: int | None) -> None:
        self.active, self.value, self.count = True, value, count

    def clear(self) -> None:
        self.active, self.value, self.count = False, 0, None

    def take(self) -> float | None:
        if not self.active:
            return None
        value = self.value
        if self.count is not None:
            self.count -= 1
            if self.count <= 0:
                self.clear()
        return value

    def describe(self) -> dict[str, Any] | None:
        return {"value": self.value, "count": self.count} if self.active else None


def _basic_user(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class Receiver:
    """Handlers of ``/callback...`` and ``/_control``."""

    def __init__(self, user: str, password: str, log_path: Path) -> None:
        self._initial = {user: password}
        self.users: dict[str, str] = dict(self._initial)
        self.fail = _Mode()
        self.hang = _Mode()
        self.hostile: str | None = None
        self.hostile_left: int | None = None
        self._log_path = log_path
        self._log: IO[str] | None = None
        # Every entry of the log file as its JSON text, for GET /_control/log.
        self._entries: list[str] = _read_entries(log_path)

    def _write(self, entry: dict[str, Any]) -> None:
        if self._log is None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self._log_path.open("a", encoding="utf-8")
        line = json.dumps(entry)
        self._log.write(line + "\n")
        self._log.flush()
        self._entries.append(line)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    async def callback(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        text = raw.decode("utf-8", errors="replace")
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        credentials = _basic_user(request.headers.get("Authorization"))
        user = credentials[0] if credentials else None
        entry: dict[str, Any] = {
            "time": time.time(),
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "user": user,
            "body": body,
        }
        if request.method != "POST":
            status = 405
            hang = None
        elif credentials is None or self.users.get(credentials[0]) != credentials[1]:
            status = 401
            hang = None
        else:
            hostile = self._take_hostile()
            if hostile is not None:  # before (and instead of) a failure or a hang
                entry["hostile"] = hostile
                entry["status"] = 307 if hostile == "redirect" else 200
                self._write(entry)
                return await _hostile_answer(request, hostile)
            hang = self.hang.take()
            failure = self.fail.take()
            status = int(failure) if failure is not None else 200
        entry["status"] = status
        if hang is not None:
            entry["hang"] = hang
        self._write(entry)
        if hang is not None:
            await asyncio.sleep(hang)
        headers = {"WWW-Authenticate": 'Basic realm="callback"'} if status == 401 else None
        return web.json_response({"status": status}, status=status, headers=headers)

    async def set_fail(self, request: web.Request) -> web.Response:
        body = await _body(request)
        status, count = body.get("status", 500), body.get("count")
        if not _int(status) or not 100 <= status <= 599:
            raise web.HTTPBadRequest(text="status must be an HTTP status code")
        if count is not None and (not _int(count) or count < 1):
            raise web.HTTPBadRequest(text="count must be an integer >= 1, or omitted")
        self.fail.set(status, count)
        return web.json_response(self.describe())

    async def set_hang(self, request: web.Request) -> web.Response:
        body = await _body(request)
        seconds, count = body.get("seconds", 90), body.get("count")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise web.HTTPBadRequest(text="seconds must be a number >= 0")
        if count is not None and (not _int(count) or count < 1):
            raise web.HTTPBadRequest(text="count must be an integer >= 1, or omitted")
        self.hang.set(float(seconds), count)
        return web.json_response(self.describe())

    def _take_hostile(self) -> str | None:
        if self.hostile is None:
            return None
        mode = self.hostile
        if self.hostile_left is not None:
            self.hostile_left -= 1
            if self.hostile_left <= 0:
                self.hostile, self.hostile_left = None, None
        return mode

    async def set_hostile(self, request: web.Request) -> web.Response:
        body = await _body(request)
        mode, count = body.get("mode"), body.get("count")
        if mode not in HOSTILE_MODES:
            raise web.HTTPBadRequest(text=f"mode must be one of {sorted(HOSTILE_MODES)}")
        if count is not None and (not _int(count) or count < 1):
            raise web.HTTPBadRequest(text="count must be an integer >= 1, or omitted")
        self.hostile, self.hostile_left = mode, count
        return web.json_response(self.describe())

    async def add_user(self, request: web.Request) -> web.Response:
        body = await _body(request)
        user, password = body.get("user"), body.get("password")
        if not isinstance(user, str) or not user or not isinstance(password, str):
            raise web.HTTPBadRequest(text="user (non-empty) and password must be strings")
        self.users[user] = password
        return web.json_response(self.describe())

    async def get_log(self, request: web.Request) -> web.Response:
        since_text = request.query.get("since", "0")
        try:
            since = int(since_text)
        except ValueError:
            since = -1
        if since < 0:
            raise web.HTTPBadRequest(text="since must be an integer >= 0")
        total = len(self._entries)
        text = "[" + ",".join(self._entries[since:]) + "]"
        return web.Response(
            text=text, content_type="application/json", headers={"X-Log-Length": str(total)}
        )

    async def get_control(self, _request: web.Request) -> web.Response:
        return web.json_response(self.describe())

    async def reset(self, _request: web.Request) -> web.Response:
        self.users = dict(self._initial)
        self.fail.clear()
        self.hang.clear()
        self.hostile, self.hostile_left = None, None
        return web.json_response(self.describe())

    def describe(self) -> dict[str, Any]:
        return {
            "users": sorted(self.users),
            "fail": self.fail.describe(),
            "hang": self.hang.describe(),
            "hostile": {"mode": self.hostile, "remaining": self.hostile_left},
        }


HOSTILE_MODES = frozenset({"redirect", "huge", "drip"})


async def _hostile_answer(request: web.Request, mode: str) -> web.StreamResponse:
    """A redirect, an endless body or a drip; ends when the client hangs up."""
    if mode == "redirect":
        return web.Response(status=307, headers={"Location": "/callback/redirected"})
    response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    try:
        if mode == "huge":
            chunk = b"x" * 65536
            for _ in range(32 * 1024):  # 2 GiB at most
                await response.write(chunk)
        else:
            for _ in range(3600):
                await response.write(b"x")
                await asyncio.sleep(1.0)
    except ConnectionError:
        pass
    return response


def _read_entries(path: Path) -> list[str]:
    """The JSON lines already in the log file (a torn last line is left out)."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            json.loads(line)
        except ValueError:
            continue
        entries.append(line)
    return entries


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body


def make_app(user: str, password: str, log_path: Path) -> web.Application:
    """The callback receiver application."""
    app = web.Application(client_max_size=_server.CLIENT_MAX_SIZE)
    receiver = Receiver(user, password, log_path)
    _server.add_healthz(app)
    app.router.add_route("*", "/callback", receiver.callback)
    app.router.add_route("*", "/callback/{tail:.*}", receiver.callback)
    app.router.add_post("/_control/fail", receiver.set_fail)
    app.router.add_post("/_control/hang", receiver.set_hang)
    app.router.add_post("/_control/hostile", receiver.set_hostile)
    app.router.add_post("/_control/users", receiver.add_user)
    app.router.add_get("/_control", receiver.get_control)
    app.router.add_get("/_control/log", receiver.get_log)
    app.router.add_delete("/_control", receiver.reset)

    async def close_log(_app: web.Application) -> None:
        receiver.close()

    app.on_cleanup.append(close_log)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = _server.base_parser("Simulated client callback receiver.")
    parser.add_argument("--user", required=True, help="accepted Basic-auth user")
    parser.add_argument("--password", required=True, help="its password")
    parser.add_argument("--log", required=True, type=Path, help="JSON-lines log file")
    args = parser.parse_args(argv)
    logger = _server.setup_logging("callback", args.log_level)
    _server.run(make_app(args.user, args.password, args.log), args.host, args.port, logger)


if __name__ == "__main__":
    main()
