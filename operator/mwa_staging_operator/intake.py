"""Which StagingJob watch events need work: the operator's own bookkeeping, not kopf's.

kopf's ``on.create``/``on.update`` keep their state in the object itself (a
progress annotation and the last-handled configuration). That is one more write
of every StagingJob, one more watch event for every watcher, and, on every
event (most of them our own status patches), a deep copy of the whole object to
compare with that configuration. With thousands of jobs this was a large part
of the operator's and the API server's work per job (issue 12). The database
already knows how far each job has got, so kopf keeps only the finalizer and
``on.delete``, and every other event comes here:

* an object without the operator's finalizer yet: nothing; kopf adds it in this
  same cycle, and the work starts on the event of that patch. So no job is
  started that could be deleted without ``on.delete`` cancelling it, and the
  finalizer patch never races a status write of ours (a 422 and a retry);
* a uid and generation this process has handled: nothing (a dict lookup);
* an object whose job id another object seen earlier and not recorded yet also
  uses: it waits (up to ``FIRST_SEEN_WAIT`` seconds) for that one to be recorded.
  The first object seen with an id is the one that gets it, however the two were
  made: a StagingJob made with kubectl waits for kopf's finalizer patch, while the
  gateway's come with the finalizer already set and would otherwise overtake it;
* first sight (a new object, or every object listed at start-up):
  :func:`mwa_staging_operator.create.handle_create`, which resumes from the
  row's state and does nothing for a job past its create steps; and if the
  object's generation is newer than the row's, the one mutable field
  (``ttlSecondsAfterFinished``) is stored;
* a newer generation of a handled object: the TTL is stored;
* a database error (:class:`~mwa_staging_operator.create.RetryLater`): tried
  again after its delay with the newest body seen, unless the object is being
  deleted or gone by then.

kopf runs one object's events one after another, so only a retry can overlap an
event of the same object; a uid being worked on is not started twice (the
running work sees the newest body on its retry, or the next event does).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from mwa_staging.kube import FINALIZER
from mwa_staging_operator import create, delete
from mwa_staging_operator.events import ObjectRef
from mwa_staging_operator.services import Services

log = logging.getLogger(__name__)

#: How long an object waits for an earlier one with its job id to be recorded (seconds).
FIRST_SEEN_WAIT = 10.0
#: How often such an object looks again (seconds).
ORDER_POLL = 0.05


class Intake:
    """Routes watch events to the create and TTL steps; one per operator process."""

    def __init__(self, app: Services) -> None:
        self._app = app
        self._handled: dict[str, int] = {}  # uid -> generation handled
        self._running: set[str] = set()
        self._waiting: dict[str, Mapping[str, Any]] = {}  # uid -> newest body, for a retry
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Objects seen but not recorded yet, in the order seen, per (namespace, job id).
        self._unrecorded: dict[tuple[str, Any], list[str]] = {}
        self._seen: dict[str, tuple[float, tuple[str, Any]]] = {}  # uid -> (when, key)

    @property
    def known(self) -> int:
        """Objects this process has handled (a gauge of its memory)."""
        return len(self._handled)

    @property
    def retries_pending(self) -> int:
        """Objects waiting for a retry after a database error."""
        return len(self._timers)

    async def on_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """One watch event (``event_type`` None: listed at start-up)."""
        uid = body["metadata"]["uid"]
        if event_type == "DELETED":
            self.forget(uid)
            return
        if body["metadata"].get("deletionTimestamp"):
            self._cancel_retry(uid)  # on.delete's business now
            self._drop_seen(uid)
            return
        if self._handled.get(uid) == create.generation_of(body):
            return
        if uid not in self._handled:
            self._note_seen(uid, body)
        if FINALIZER not in (body["metadata"].get("finalizers") or ()):
            return
        if uid in self._running:
            self._waiting[uid] = body  # seen by the retry, or by the next event
            return
        if self._earlier_unrecorded(uid, body):
            self._retry_later(uid, body, ORDER_POLL)
            return
        await self._handle(uid, body)

    def forget(self, uid: str) -> None:
        """The object is gone: drop what is kept of it."""
        self._handled.pop(uid, None)
        self._cancel_retry(uid)
        self._drop_seen(uid)

    # -- first seen, first served ----------------------------------------------------

    @staticmethod
    def _id_key(body: Mapping[str, Any]) -> tuple[str, Any]:
        return (body["metadata"].get("namespace", ""), body["spec"].get("jobId"))

    def _note_seen(self, uid: str, body: Mapping[str, Any]) -> None:
        if uid in self._seen:
            return
        key = self._id_key(body)
        self._seen[uid] = (time.monotonic(), key)
        self._unrecorded.setdefault(key, []).append(uid)

    def _earlier_unrecorded(self, uid: str, body: Mapping[str, Any]) -> bool:
        """An object seen before this one, with its job id, is still to be recorded."""
        seen = self._unrecorded.get(self._id_key(body), [])
        if not seen or seen[0] == uid or uid not in seen:
            return False
        now = time.monotonic()
        return any(
            now - self._seen[other][0] < FIRST_SEEN_WAIT for other in seen[: seen.index(uid)]
        )

    def _drop_seen(self, uid: str) -> None:
        entry = self._seen.pop(uid, None)
        if entry is None:
            return
        seen = self._unrecorded[entry[1]]
        seen.remove(uid)
        if not seen:
            del self._unrecorded[entry[1]]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the work ------------------------------------------------------------------

    async def _handle(self, uid: str, body: Mapping[str, Any]) -> None:
        while True:
            self._running.add(uid)
            try:
                delay = await self._work(uid, body)
            finally:
                self._running.discard(uid)
            newer = self._waiting.pop(uid, None)  # arrived while this ran
            if delay is not None:
                self._retry_later(uid, newer or body, delay)
                return
            if (
                newer is None
                or newer["metadata"].get("deletionTimestamp")
                or self._handled.get(uid) == create.generation_of(newer)
            ):
                return
            body = newer

    async def _work(self, uid: str, body: Mapping[str, Any]) -> float | None:
        """Create or resume, or store a TTL change; a retry delay on a database error."""
        generation = create.generation_of(body)
        try:
            recorded = self._handled.get(uid)
            if recorded is None:
                recorded = (await create.handle_create(self._app, body)).generation
            if generation > recorded:
                await delete.handle_ttl_change(
                    self._app, ObjectRef.of(body), create.ttl_of(body), generation
                )
        except create.RetryLater as exc:
            log.warning("StagingJob %s: %s; trying again in %.0f s", uid, exc, exc.delay)
            return exc.delay
        self._handled[uid] = generation
        self._drop_seen(uid)
        return None

    def _retry_later(self, uid: str, body: Mapping[str, Any], delay: float) -> None:
        self._cancel_retry(uid)
        self._waiting[uid] = body
        loop = asyncio.get_running_loop()
        self._timers[uid] = loop.call_later(delay, self._retry_now, uid)

    def _retry_now(self, uid: str) -> None:
        self._timers.pop(uid, None)
        body = self._waiting.pop(uid, None)
        if body is None or uid in self._running:
            if body is not None:  # an event is being handled: try once it is done
                self._retry_later(uid, body, 1.0)
            return
        task = asyncio.create_task(self.on_event("RETRY", body), name=f"intake-retry-{uid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_retry(self, uid: str) -> None:
        self._waiting.pop(uid, None)
        timer = self._timers.pop(uid, None)
        if timer is not None:
            timer.cancel()
