"""The simulated archive: Banksia's files, tokens and staging clock in one object.

This is the one shared state behind every Scout node (docs/contracts.md, Scout API):
a file staged through node 1 is online when asked through node 2 because both
nodes forward to the single :class:`Archive` living in the banksia process.
It knows nothing of HTTP or Kafka; the Scout API layer calls it and the
banksia process moves due arrivals from it to the Kafka publisher.

Scale is part of the contract (a job of 100,000 files, many jobs at once), so
arrivals are one heap ordered by due time rather than a task or timer per
file: staging 10,000 paths is 10,000 ``heappush`` calls and the publisher
drains due entries in bounded batches.

Path markers choose the outcome of staging a path (first match wins):

``MISSING``
    unknown to the archive: file status answers 404, staging is accepted but
    nothing ever happens;
``NEVER``
    known, never comes online, no message;
``ERROR``
    a message with a non-empty ``Error`` and the file stays offline;
``LOST``
    comes online (file status says so) but no message is ever sent;
``DUP``
    comes online and its message is sent twice (combines with ``ERROR``).

Cancelling bumps a per-file epoch, so the heap entries of the cancelled
requests become stale and are skipped when they fall due: O(1) per cancelled
path, no searching in the heap.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import random
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

ERROR_TEXT = "unable to stage file, no valid copies"
#: Time format of the Kafka messages, e.g. ``2022-02-04 03:01:38 +0000 GMT``.
TIME_FORMAT = "%Y-%m-%d %H:%M:%S +0000 GMT"
BLOCK_SIZE = 4096
#: Size of the simulated disk cache reported by ``/v1/fscache``.
CACHE_BYTES = 2_000_000_000_000_000


def format_time(wall: float) -> str:
    """Format a wall-clock time the way Banksia's Kafka messages do."""
    return time.strftime(TIME_FORMAT, time.gmtime(wall))


@dataclass(frozen=True, slots=True)
class Identity:
    """The per-path facts the archive reports; derived from the path only."""

    inode: int
    size: int
    uuid: str


def identity(path: str) -> Identity:
    """Deterministic inode, size and uuid of a path.

    Derived from a hash so that the same path has the same inode in every run
    and in every process (the Kafka message and file status agree) without
    keeping state for paths that were never staged.
    """
    digest = hashlib.blake2b(path.encode(), digest_size=16).digest()
    inode = int.from_bytes(digest[:5], "big") + 1
    size = 1_000_000 + int.from_bytes(digest[5:9], "big") % 300_000_000
    return Identity(inode=inode, size=size, uuid=str(uuid.UUID(bytes=digest)))


def outcome_of(path: str) -> str:
    """The marker that decides what staging ``path`` does, or ``"ok"``."""
    for marker in ("MISSING", "NEVER", "ERROR", "LOST"):
        if marker in path:
            return marker
    return "ok"


@dataclass(slots=True)
class FileState:
    """What the archive remembers about a path somebody asked to stage."""

    path: str
    ident: Identity
    online: bool = False
    online_since: float | None = None
    #: Bumped by a cancel: heap entries carrying an older epoch are stale.
    epoch: int = 0
    #: (key, topic) of the stage requests waiting to complete.
    pending: set[tuple[str, str]] = field(default_factory=set)
    stage_requests: int = 0
    cancels: int = 0
    messages: int = 0
    last_request: float | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """One Kafka notification ready to be produced."""

    topic: str
    key: str
    value: bytes
    path: str


# Heap entry: (due monotonic time, sequence, file, epoch, key, topic, request wall time).
_Entry = tuple[float, int, FileState, int, str, str, float]


class Archive:
    """Files, tokens and the staging schedule of the simulated Banksia."""

    def __init__(
        self,
        user: str,
        password: str,
        token_ttl: float = 300.0,
        delay_ms: int = 30,
        jitter_ms: int = 20,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.user = user
        self.password = password
        self.token_ttl = token_ttl
        self.delay_ms = delay_ms
        self.jitter_ms = jitter_ms
        self.paused = False
        self._rng = rng or random.Random()
        self._clock = clock
        self._wall = wall
        self._tokens: dict[str, float] = {}
        self._files: dict[str, FileState] = {}
        self._heap: list[_Entry] = []
        self._seq = 0
        self.pending = 0
        self._pending_bytes = 0
        self._online_bytes = 0
        self.online = 0
        self.stage_requests = 0
        self.cancelled = 0
        self.messages = 0
        #: Called after new arrivals were scheduled (wakes the publishing loop).
        self.on_schedule: Callable[[], None] | None = None

    # -- tokens --------------------------------------------------------------

    def login(self, acct: object, password: object) -> str | None:
        """A new token for the right credentials, else None."""
        if acct != self.user or password != self.password:
            return None
        now = self._clock()
        if len(self._tokens) > 1000:
            self._tokens = {t: at for t, at in self._tokens.items() if now - at < self.token_ttl}
        token = secrets.token_urlsafe(24)
        self._tokens[token] = now
        return token

    def token_valid(self, token: str) -> bool:
        """True while ``token`` was issued here less than ``token_ttl`` ago.

        The TTL in force now applies to tokens already issued, so a test can
        expire the tokens a running client holds by lowering it.
        """
        issued = self._tokens.get(token)
        return issued is not None and self._clock() - issued < self.token_ttl

    def expire_tokens(self) -> int:
        """Forget every token (each client must log in again); return how many."""
        count = len(self._tokens)
        self._tokens.clear()
        return count

    # -- staging -------------------------------------------------------------

    def _file(self, path: str) -> FileState:
        state = self._files.get(path)
        if state is None:
            state = FileState(path=path, ident=identity(path))
            self._files[path] = state
        return state

    def stage(self, paths: Iterable[str], key: str, topic: str) -> None:
        """Accept a batch stage request; schedule an arrival per path.

        A path already waiting for the same (key, topic) is not scheduled
        twice; an online path is scheduled again (it gets a new message).
        """
        now = self._clock()
        wall = self._wall()
        delay = self.delay_ms / 1000.0
        jitter = self.jitter_ms / 1000.0
        rand = self._rng.random
        heap = self._heap
        for path in paths:
            self.stage_requests += 1
            outcome = outcome_of(path)
            if outcome == "MISSING":
                continue
            state = self._file(path)
            state.stage_requests += 1
            state.last_request = wall
            if outcome == "NEVER":
                continue
            ident = (key, topic)
            if ident in state.pending:
                continue
            state.pending.add(ident)
            self.pending += 1
            self._pending_bytes += state.ident.size
            self._seq += 1
            due = now + delay + jitter * rand()
            heapq.heappush(heap, (due, self._seq, state, state.epoch, key, topic, wall))
        if self.on_schedule is not None:
            self.on_schedule()

    def cancel(self, paths: Iterable[str]) -> int:
        """Cancel the pending stage requests of ``paths``; return how many."""
        cancelled = 0
        for path in paths:
            state = self._files.get(path)
            if state is None:
                continue
            state.cancels += 1
            if state.pending:
                cancelled += len(state.pending)
                self.pending -= len(state.pending)
                self._pending_bytes -= state.ident.size * len(state.pending)
                state.pending.clear()
                state.epoch += 1
        self.cancelled += cancelled
        return cancelled

    def next_due(self) -> float | None:
        """Monotonic time of the earliest scheduled arrival, if any."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float | None = None, limit: int = 5000) -> list[Message]:
        """Complete at most ``limit`` arrivals due by ``now``; return their messages.

        Nothing completes while paused: the arrivals wait in the heap and all
        happen on resume.
        """
        if self.paused:
            return []
        if now is None:
            now = self._clock()
        heap = self._heap
        messages: list[Message] = []
        wall = self._wall()
        complete = format_time(wall)
        handled = 0
        while heap and heap[0][0] <= now and handled < limit:
            _due, _seq, state, epoch, key, topic, requested = heapq.heappop(heap)
            handled += 1
            if epoch != state.epoch:
                continue  # cancelled
            state.pending.discard((key, topic))
            self.pending -= 1
            self._pending_bytes -= state.ident.size
            outcome = outcome_of(state.path)
            error = ""
            if outcome == "ERROR":
                error = ERROR_TEXT
            elif not state.online:
                state.online = True
                state.online_since = wall
                self.online += 1
                self._online_bytes += state.ident.size
            if outcome == "LOST":
                continue
            value = json.dumps(
                {
                    "Inode": state.ident.inode,
                    "Filename": state.path,
                    "RequestTime": format_time(requested),
                    "CompleteTime": complete,
                    "Error": error,
                },
                separators=(",", ":"),
            ).encode()
            copies = 2 if "DUP" in state.path else 1
            for _ in range(copies):
                messages.append(Message(topic=topic, key=key, value=value, path=state.path))
            state.messages += copies
            self.messages += copies
        return messages

    # -- status --------------------------------------------------------------

    def file_status(self, path: str) -> dict[str, Any] | None:
        """The ``/v1/file`` answer for ``path``; None if the archive has no such file."""
        if "MISSING" in path:
            return None
        state = self._files.get(path)
        ident = state.ident if state is not None else identity(path)
        online = state is not None and state.online
        blocks = max(1, -(-ident.size // BLOCK_SIZE))
        mtime = 1_600_000_000 + ident.inode % 100_000_000
        return {
            "path": path,
            "size": ident.size,
            "inode": ident.inode,
            "uuid": ident.uuid,
            "gen": 1,
            "mode": 33188,
            "uid": 1000,
            "gid": 1000,
            "nlink": 1,
            "mtime": mtime,
            "ctime": mtime,
            "copies": 2,
            "archdone": True,
            "damaged": False,
            "onlineblocks": blocks if online else 0,
            "offlineblocks": 0 if online else blocks,
            "stagepending": bool(state is not None and state.pending),
        }

    def fscache(self) -> dict[str, Any]:
        """The ``/v1/fscache`` answer; sizes as strings of digits, like the real one."""
        avail = max(0, CACHE_BYTES - self._online_bytes - self._pending_bytes)
        return {
            "availdatasz": str(avail),
            "totdatasz": str(CACHE_BYTES),
            "releaseable": str(self._online_bytes),
            "nonreleaseable": "0",
            "pending": str(self._pending_bytes),
            "health": 1,
            "healthstatus": "ok",
        }

    def describe(self, path: str) -> dict[str, Any]:
        """Everything the simulator knows about ``path`` (control endpoint)."""
        state = self._files.get(path)
        outcome = outcome_of(path)
        answer: dict[str, Any] = {
            "path": path,
            "known": outcome != "MISSING",
            "outcome": outcome,
            "duplicate": "DUP" in path,
            "staged": state is not None,
            "online": bool(state and state.online),
        }
        if state is not None:
            answer.update(
                inode=state.ident.inode,
                size=state.ident.size,
                online_since=state.online_since,
                pending=sorted([key, topic] for key, topic in state.pending),
                stage_requests=state.stage_requests,
                cancels=state.cancels,
                messages=state.messages,
                last_request=state.last_request,
            )
        return answer

    def stats(self) -> dict[str, Any]:
        """Counters for the control endpoint."""
        return {
            "staged": len(self._files),
            "stage_requests": self.stage_requests,
            "online": self.online,
            "pending": self.pending,
            "cancelled": self.cancelled,
            "messages": self.messages,
            "paused": self.paused,
            "delay_ms": self.delay_ms,
            "jitter_ms": self.jitter_ms,
            "token_ttl": self.token_ttl,
        }
