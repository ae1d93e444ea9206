"""What the operator's steps need from the process: the interface they are written against.

The steps (``create``, ``callback_delivery``, ``restage``, ``deadline``,
``delete``, and the ``scheduler`` that runs them) take a :class:`Services`
argument instead of the concrete :class:`mwa_staging_operator.context.App`.
So the dependencies point one way -- the App builds the scheduler, the
scheduler runs the steps, every step knows only this interface -- and a unit
test can hand a step a small fake with the same attributes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import httpx
from kubernetes.client import CoreV1Api, CustomObjectsApi

from mwa_staging.kube import StagingJobs
from mwa_staging.scout import ScoutClient
from mwa_staging.settings import Settings
from mwa_staging_operator.db_pool import DatabasePool
from mwa_staging_operator.events import EventRecorder
from mwa_staging_operator.ratelimit import Pacer, SlidingWindowLimiter

T = TypeVar("T")


class Services(Protocol):
    """The operator's clients and shared state, as its steps use them."""

    settings: Settings
    db: DatabasePool
    #: The status writes' own connections (see ``App``).
    status_db: DatabasePool
    jobs: StagingJobs
    custom: CustomObjectsApi
    core: CoreV1Api
    events: EventRecorder
    scout: ScoutClient
    http: httpx.AsyncClient  # the data_files lookup
    #: Bounds the data_files lookups in flight (``resolve.DATA_FILES_CONNECTIONS``).
    data_files_slots: asyncio.Semaphore
    callback_http: httpx.AsyncClient
    limiter: SlidingWindowLimiter
    #: Paces the restage passes' file-status queries (``scout_status_rate_per_second``).
    status_pacer: Pacer
    #: Set when a status write was refused (busy lock, API error): the sweep retries soon.
    projection_busy: bool

    @property
    def wake_event(self) -> asyncio.Event:
        """Set by :meth:`wake`; the scheduler sleeps on it."""
        ...

    def wake(self) -> None:
        """Make the scheduler look at the database now (something changed)."""
        ...

    async def kube(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking Kubernetes client call off the event loop."""
        ...

    async def update_status(self, job_pk: int) -> None:
        """Write the job's status now; on contention or errors leave it to the sweep."""
        ...

    def forget_callback(self, job_pk: int) -> None:
        """The job is being deleted: stop its callback attempt if one is in flight."""
        ...
