"""Reading an answer from a service we do not control, within a size and a time limit.

httpx's ``timeout`` bounds each network operation, not the whole answer: a
server that sends one byte every few seconds keeps a plain ``client.get``
going forever, and one that streams gigabytes fills memory. Every answer the
operator, the bridge or the gateway reads from outside (data_files, Scout)
goes through :func:`fetch`, which stops at ``max_bytes`` and at ``seconds``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx


class TooLarge(Exception):
    """The answer's body passed the size limit (the connection was closed)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer is larger than {limit} bytes")
        self.limit = limit


class TooSlow(Exception):
    """The whole answer did not arrive within the time limit."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no complete answer within {seconds:g} s")
        self.seconds = seconds


@dataclass(frozen=True)
class Answer:
    status_code: int
    content: bytes
    headers: httpx.Headers


async def fetch(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    max_bytes: int,
    seconds: float,
    **kwargs: Any,
) -> Answer:
    """One request; raises TooLarge, TooSlow or httpx.TransportError."""
    try:
        async with asyncio.timeout(seconds):
            return await _read(client, method, url, max_bytes, seconds, kwargs)
    except TimeoutError:
        raise TooSlow(seconds) from None


async def _read(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    max_bytes: int,
    seconds: float,
    kwargs: dict[str, Any],
) -> Answer:
    kwargs.setdefault("timeout", seconds)
    async with client.stream(method, url, **kwargs) as response:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise TooLarge(max_bytes)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise TooLarge(max_bytes)
            chunks.append(chunk)
        return Answer(response.status_code, b"".join(chunks), response.headers)
