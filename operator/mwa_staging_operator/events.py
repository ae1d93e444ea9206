"""Kubernetes Events on StagingJobs, posted in the background.

kopf's own ``kopf.event`` works only inside its handlers' context, but many of
our steps happen in the scheduler (deadline, restage, callback), so the
operator has its own small poster: ``emit`` never blocks or fails the caller
(a lost Event is a lost hint for people, never lost state), and one task posts
the queue through the Kubernetes API in a worker thread. The queue is bounded:
under a storm the oldest hints are dropped rather than memory growing.

Messages are written by the operator's own code and never hold secrets (no
URLs with credentials, no Secret contents).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from mwa_staging.kube import GROUP, KIND, VERSION
from mwa_staging.observability import RateLimitedLog

log = logging.getLogger(__name__)

COMPONENT = "mwa-staging-operator"
MAX_MESSAGE = 1024


@dataclass(frozen=True)
class ObjectRef:
    """The StagingJob an Event is about."""

    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> ObjectRef:
        """The reference of a StagingJob object (a kopf body or a watch event's dict)."""
        meta = body["metadata"]
        return cls(meta.get("namespace") or "", meta.get("name") or "", meta.get("uid") or "")


@dataclass(frozen=True)
class Event:
    ref: ObjectRef
    type: str  # Normal or Warning
    reason: str
    message: str


def event_body(event: Event, now: datetime, instance: str) -> dict[str, Any]:
    """A core/v1 Event for the object (``generateName`` keeps names unique)."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{event.ref.name}.", "namespace": event.ref.namespace},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": event.ref.name,
            "namespace": event.ref.namespace,
            "uid": event.ref.uid,
        },
        "reason": event.reason,
        "message": event.message[:MAX_MESSAGE],
        "type": event.type,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class EventRecorder:
    """Queue Events with :meth:`normal`/:meth:`warning`; :meth:`run` posts them."""

    def __init__(
        self, api: CoreV1Api, executor: Executor, instance: str, max_queue: int = 10_000
    ) -> None:
        self._api = api
        self._executor = executor
        self._instance = instance
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=max_queue)
        self.dropped = 0
        # An API server outage fails every post: one warning per interval, not one per Event.
        self._rlog = RateLimitedLog(log, 15.0)

    def normal(self, ref: ObjectRef, reason: str, message: str) -> None:
        self._put(Event(ref, "Normal", reason, message))

    def warning(self, ref: ObjectRef, reason: str, message: str) -> None:
        self._put(Event(ref, "Warning", reason, message))

    def _put(self, event: Event) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    def _post(self, event: Event) -> None:
        body = event_body(event, datetime.now(UTC), self._instance)
        try:
            self._api.create_namespaced_event(
                event.ref.namespace,
                body,  # type: ignore[arg-type]  # the client accepts a plain dict body
                _request_timeout=10,
            )
        except ApiException as exc:
            self._rlog.warning(
                f"http-{exc.status}",
                "could not post event %s on %s/%s: HTTP %s",
                event.reason,
                event.ref.namespace,
                event.ref.name,
                exc.status,
            )
        except Exception as exc:  # network trouble: the hint is lost, nothing else
            self._rlog.warning(
                "error", "could not post event %s: %s", event.reason, type(exc).__name__
            )

    async def run(self) -> None:
        """Post queued Events until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            event = await self._queue.get()
            await loop.run_in_executor(self._executor, self._post, event)
