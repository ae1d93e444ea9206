"""A plain HTTP client of the gateway, as the portal would use it (urllib, JSON)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


class Api:
    """The original API at ``base``, with a bearer ``token`` (None: no credentials)."""

    def __init__(self, base: str, token: str | None) -> None:
        self.base = base.rstrip("/")
        self.token = token

    def with_token(self, token: str | None) -> Api:
        return Api(self.base, token)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 120.0,
    ) -> Answer:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json"}
        if self.token is not None:
            hdrs["Authorization"] = f"Bearer {self.token}"
        hdrs.update(headers or {})
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, content, got = response.status, response.read(), response.headers
        except urllib.error.HTTPError as exc:
            status, content, got = exc.code, exc.read(), exc.headers
        parsed = json.loads(content) if content else None
        return Answer(status, parsed, {k.lower(): v for k, v in got.items()})

    def call_text(self, path: str) -> str:
        """A GET answered with text (/metrics, /docs); no credentials needed there."""
        with urllib.request.urlopen(self.base + path, timeout=30) as response:
            return str(response.read().decode())

    def metric(self, line_start: str) -> float | None:
        """The value of the /metrics sample whose name and labels are ``line_start``."""
        for line in self.call_text("/metrics").splitlines():
            if line.startswith(line_start + " "):
                return float(line.split()[-1])
        return None

    def basic(self, user: str, password: str) -> dict[str, str]:
        value = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {value}"}

    # -- the endpoints ----------------------------------------------------------------

    def submit(self, body: dict[str, Any], slash: str = "") -> Answer:
        return self.call("POST", "/staging" + slash, body)

    def status(self, job_id: int, include_files: bool = False, slash: str = "") -> Answer:
        flag = "true" if include_files else "false"
        return self.call("GET", f"/staging{slash}?job_id={job_id}&include_files={flag}")

    def delete(self, job_id: int, slash: str = "") -> Answer:
        return self.call("DELETE", f"/staging{slash}?job_id={job_id}")
