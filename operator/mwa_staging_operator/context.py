"""Everything a handler or the scheduler needs, built once at start-up: the ``App``.

Handlers receive it through kopf's ``memo``; the steps receive it as an
argument typed :class:`mwa_staging_operator.services.Services` (which the App
implements), so unit tests can hand them a fake. The App builds the scheduler,
the scheduler runs the steps: none of them imports this module back.

Blocking clients (psycopg2, the official Kubernetes client) run in their own
bounded thread pools so that the event loop, shared by every job, never waits
on I/O.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
from kubernetes.client import CoreV1Api, CustomObjectsApi

from mwa_staging.db.completion import JOB_COMPLETED_CHANNEL
from mwa_staging.db.migrate import migrate
from mwa_staging.kube import StagingJobs, api_client
from mwa_staging.projection import write_status
from mwa_staging.resolve import DATA_FILES_CONNECTIONS, data_files_client
from mwa_staging.scout import ScoutClient
from mwa_staging.settings import Settings
from mwa_staging_operator import metrics
from mwa_staging_operator.db_pool import DatabasePool
from mwa_staging_operator.events import EventRecorder
from mwa_staging_operator.intake import Intake
from mwa_staging_operator.listen import Listener
from mwa_staging_operator.ratelimit import Pacer, SlidingWindowLimiter
from mwa_staging_operator.scheduler import Scheduler

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Threads for the blocking Kubernetes client calls of the steps (Events, Secrets, deletes).
KUBE_THREADS = 8


class App:
    """The operator's clients and shared state (one per process)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = DatabasePool(settings.dsn(), settings.db_pool_size)
        # Status writes hold their job's lock (and so a connection) while the API
        # server answers: a pool of their own, so that API latency under load never
        # takes the connections the steps of other jobs need.
        self.status_db = DatabasePool(
            settings.dsn(),
            settings.status_write_concurrency,
            application_name="mwa-staging-operator-status",
        )
        self.kube_executor = ThreadPoolExecutor(max_workers=KUBE_THREADS, thread_name_prefix="kube")
        # One connection per thread that may call the API server at once.
        client = api_client(
            settings.kubeconfig, pool_maxsize=KUBE_THREADS + settings.status_write_concurrency
        )
        self.jobs = StagingJobs(client)
        self.custom = CustomObjectsApi(client)
        self.core = CoreV1Api(client)
        instance = os.environ.get("HOSTNAME") or socket.gethostname()
        self.events = EventRecorder(self.core, self.kube_executor, instance)
        self.scout = ScoutClient(settings, observe=metrics.observe_scout)
        # The data_files service (the only other plain HTTP client of the operator).
        self.http = data_files_client(settings)
        self.data_files_slots = asyncio.Semaphore(DATA_FILES_CONNECTIONS)
        self.callback_http = httpx.AsyncClient(
            verify=settings.callback_verify(),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=settings.callback_concurrency),
        )
        self.limiter = SlidingWindowLimiter(settings.callback_rate_per_minute, 60.0)
        self.status_pacer = Pacer(settings.scout_status_rate_per_second)
        self._wake = asyncio.Event()
        self.projection_busy = False
        self.listener: Listener | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.scheduler: Scheduler | None = None  # built by start()
        self.scheduler_task: asyncio.Task[Any] | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Migrate the schema, start the listener, the event poster and the scheduler."""
        applied = await self.db.run_conn(migrate)
        if applied:
            log.info("applied migrations %s", applied)
        loop = asyncio.get_running_loop()
        self.listener = Listener(
            self.settings.dsn(),
            JOB_COMPLETED_CHANNEL,
            on_notify=lambda payload: loop.call_soon_threadsafe(self.wake),
        )
        self.listener.start()
        self._tasks.append(asyncio.create_task(self.events.run(), name="event poster"))
        scheduler = self.scheduler = Scheduler(self)
        self.scheduler_task = asyncio.create_task(scheduler.run(), name="scheduler")

    async def stop(self) -> None:
        """Stop background work and close the clients (kopf's cleanup)."""
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.scheduler_task is not None:
            self.scheduler_task.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.listener is not None:
            self.listener.stop()
        await self.scout.aclose()
        await self.http.aclose()
        await self.callback_http.aclose()
        await asyncio.to_thread(self.db.close)
        await asyncio.to_thread(self.status_db.close)
        self.kube_executor.shutdown(wait=False, cancel_futures=True)

    def healthy(self) -> tuple[bool, str]:
        """Liveness: the scheduler runs. A database outage is reported but is not fatal."""
        if self.scheduler_task is None or self.scheduler_task.done():
            return False, "scheduler not running"
        listener = "connected" if self.listener and self.listener.connected else "reconnecting"
        return True, f"ok (database listener {listener})"

    # -- helpers -------------------------------------------------------------------

    def wake(self) -> None:
        """Make the scheduler look at the database now (something changed)."""
        self._wake.set()

    @property
    def wake_event(self) -> asyncio.Event:
        return self._wake

    def forget_callback(self, job_pk: int) -> None:
        """The job is being deleted: stop its callback attempt if one is in flight."""
        if self.scheduler is not None:
            self.scheduler.forget_callback(job_pk)

    async def kube(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking Kubernetes client call in the Kubernetes thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.kube_executor, lambda: fn(*args, **kwargs))

    async def update_status(self, job_pk: int) -> None:
        """Write the job's status now; on contention or errors leave it to the sweep."""
        try:
            outcome = await self.status_db.run_conn(
                lambda conn: write_status(conn, self.jobs, job_pk)
            )
        except Exception as exc:
            log.warning("status projection of job %s failed: %s", job_pk, type(exc).__name__)
            self.projection_busy = True
            self.wake()
            return
        if outcome.busy:
            self.projection_busy = True
            self.wake()


class Runtime:
    """What exists before kopf starts (settings, health) and the App once started."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: App | None = None
        self.intake: Intake | None = None

    def health(self) -> tuple[bool, str]:
        if self.app is None:
            return False, "starting"
        return self.app.healthy()
