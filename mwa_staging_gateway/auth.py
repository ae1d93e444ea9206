"""Authentication and the request-body limit, as one ASGI middleware in front of the API.

It runs before the framework reads a body, so a request with wrong or missing
credentials is refused (401) without its body being read or anything being
created, and a body over the limit is refused (413) without being held in
memory.

Credentials: ``Authorization: Bearer <token>``, or HTTP Basic with one of the
tokens as the password (any user name). Basic is there for clients that can
only put credentials into a URL (``https://portal:TOKEN@host/``), which HTTP
libraries turn into Basic auth with no code change. Tokens come from
``GATEWAY_TOKENS`` and/or ``GATEWAY_TOKENS_FILE`` (a mounted Secret, re-read
when it changes so tokens can be rotated without a restart); they are compared
in constant time and never logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mwa_staging_gateway import metrics

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths served without credentials: liveness, metrics, the API's documentation.
OPEN_PATHS = frozenset(
    {"/ping", "/healthz", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}
)
REALM = 'Bearer realm="mwa-staging", Basic realm="mwa-staging"'


class Tokens:
    """The accepted tokens: fixed ones plus those of a file, re-read when it changes."""

    def __init__(self, fixed: list[str], path: str | None, *, recheck_seconds: float = 1.0):
        self._fixed = [t.encode() for t in fixed if t]
        self._path = path
        self._recheck = recheck_seconds
        self._from_file: list[bytes] = []
        self._stamp: tuple[float, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._reload()

    def _reload(self) -> None:
        if not self._path:
            return
        try:
            st = os.stat(self._path)
            stamp = (st.st_mtime, st.st_size)
            if stamp == self._stamp:
                return
            with open(self._path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            if self._stamp is not None or not self._from_file:
                log.warning("cannot read the gateway tokens file: %s", type(exc).__name__)
            self._from_file, self._stamp = [], None
            return
        self._from_file = [t.encode() for t in text.replace(",", " ").split()]
        self._stamp = stamp

    def current(self) -> list[bytes]:
        now = time.monotonic()
        with self._lock:
            if self._path and now - self._checked >= self._recheck:
                self._checked = now
                self._reload()
            return self._fixed + self._from_file

    def __len__(self) -> int:
        return len(self.current())

    def accepts(self, header: bytes | None) -> bool:
        """True when the Authorization header carries one of the tokens."""
        presented = credential(header)
        if presented is None:
            return False
        found = False
        for token in self.current():
            # compare_digest against every token: the time does not tell which matched.
            found |= hmac.compare_digest(presented, token)
        return found


def credential(header: bytes | None) -> bytes | None:
    """The token of a Bearer header, or the password of a Basic one; None otherwise."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(b" ")
    value = value.strip()
    if scheme.lower() == b"bearer" and value:
        return value
    if scheme.lower() == b"basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        _, sep, password = decoded.partition(b":")
        return password if sep and password else None
    return None


async def _answer(
    send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


def _counting(send: Send, endpoint: str) -> Send:
    """``send`` that counts the response's status code by endpoint."""

    async def counted(message: Message) -> None:
        if message["type"] == "http.response.start":
            metrics.REQUESTS.labels(endpoint, str(message["status"])).inc()
        await send(message)

    return counted


class Guard:
    """ASGI middleware: credentials first (401), then the body size (413)."""

    def __init__(self, app: ASGIApp, *, tokens: Tokens | None, max_body: int) -> None:
        self.app = app
        self.tokens = tokens
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "/")
        normalised = path.rstrip("/") or "/"
        send = _counting(send, normalised if normalised in metrics.ENDPOINTS else "other")
        headers = dict(scope.get("headers") or [])
        if self.tokens is not None and normalised not in OPEN_PATHS:
            header = headers.get(b"authorization")
            if not self.tokens.accepts(header):
                metrics.AUTH_FAILURES.labels("missing" if not header else "wrong").inc()
                text = (
                    "authentication required: send Authorization: Bearer <token>"
                    if not header
                    else "invalid credentials"
                )
                await _answer(
                    send, 401, {"errormsg": text}, [(b"www-authenticate", REALM.encode())]
                )
                return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _answer(send, 400, {"errormsg": "invalid Content-Length"})
                return
            if declared > self.max_body:
                await _answer(send, 413, {"errormsg": self._too_large()})
                return
            await self.app(scope, receive, send)
            return
        if scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        # A body without a declared length (chunked): read it within the limit first.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _answer(send, 413, {"errormsg": self._too_large()})
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"request body too large: at most {self.max_body} bytes are accepted"
