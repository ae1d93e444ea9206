"""Small HTTP helpers for readiness probes (httpx, short timeouts, no retries)."""

from __future__ import annotations

import ssl

import httpx


def status(url: str, *, context: ssl.SSLContext | bool = True, timeout: float = 2.0) -> int:
    """The HTTP status of a GET, raising on connection errors (which mean "not ready")."""
    with httpx.Client(verify=context, timeout=timeout, trust_env=False) as client:
        return client.get(url).status_code


def is_ok(url: str, *, context: ssl.SSLContext | bool = True) -> bool:
    return status(url, context=context) == 200
