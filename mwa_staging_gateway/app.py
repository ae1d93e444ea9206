"""The original service's HTTP API (HTTP-API.md), over StagingJobs and the database.

Every path answers with and without a trailing slash. FastAPI, as the original
used, gives the same 422 body for a request that does not validate and serves
``/openapi.json`` and ``/docs``. Handlers are thin: the Kubernetes work is in
``jobs``, the answers' shapes in ``views``, the SQL in
``mwa_staging.db.gateway_queries``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.concurrency import run_in_threadpool

from mwa_staging.callback_policy import CallbackRefused, check_url
from mwa_staging.db import gateway_queries as gq
from mwa_staging.db.connect import until_reachable
from mwa_staging.db.migrate import migrate
from mwa_staging.scout import ScoutError
from mwa_staging.settings import Settings
from mwa_staging_gateway import metrics, views
from mwa_staging_gateway.auth import Guard, Tokens
from mwa_staging_gateway.backend import Backend
from mwa_staging_gateway.cache import CacheWatcher
from mwa_staging_gateway.jobs import Jobs, Refused, Submission, created_time
from mwa_staging_gateway.models import FileStatusRequest, StagingRequest, error_responses

log = logging.getLogger(__name__)

MAX_JOB_ID = 2**63 - 1
#: How often expired failed-job reports are deleted.
REPORT_SWEEP_SECONDS = 3600.0


def error(status: int, message: str) -> JSONResponse:
    """The original's error body."""
    return JSONResponse({"errormsg": message}, status_code=status)


def null(status: int = 200) -> Response:
    """A JSON ``null`` body (202 of POST /staging, 200 of DELETE and /ping)."""
    return Response(b"null", status_code=status, media_type="application/json")


def raw_json(body: Any) -> Response:
    """A JSON answer serialised once (no response-model pass over 100,000 entries)."""
    return Response(json.dumps(body).encode(), media_type="application/json")


def check_submission(req: StagingRequest, settings: Settings) -> Submission:
    """The request's limits and meaning; :class:`Refused` (400) naming what is wrong."""
    if not 1 <= req.job_id <= MAX_JOB_ID:
        raise Refused(400, f"job_id must be between 1 and {MAX_JOB_ID}")
    url = req.notify_url
    if len(url) > settings.gateway_max_url_length:
        raise Refused(
            400, f"notify_url is longer than {settings.gateway_max_url_length} characters"
        )
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:
        raise Refused(400, "notify_url must be an absolute http or https URL")
    try:
        check_url(url, settings.callback_allowed_hosts, settings.callback_networks())
    except CallbackRefused as exc:
        raise Refused(400, f"notify_url: {exc}") from None
    files = req.files
    obs = req.obs
    if not files and (obs is None or obs.obs_id is None):
        raise Refused(400, "No files or obs given: one of them is needed")
    if files:
        check_paths(files, settings)
        return Submission(req.job_id, url, files, None, 0, 0)
    assert obs is not None and obs.obs_id is not None
    if obs.obs_id < 1 or obs.start_time < 0 or obs.duration < 0:
        raise Refused(400, "obs: obs_id must be positive, start_time and duration not negative")
    return Submission(req.job_id, url, [], obs.obs_id, obs.start_time, obs.duration)


def check_paths(files: list[str], settings: Settings) -> None:
    """Count and path limits of a file list (400 naming the first bad path)."""
    if len(files) > settings.gateway_max_files:
        raise Refused(
            400, f"too many files: {len(files)} given, at most {settings.gateway_max_files}"
        )
    longest = settings.gateway_max_path_length
    for i, path in enumerate(files):
        if not path:
            raise Refused(400, f"files[{i}] is empty")
        if len(path) > longest:
            raise Refused(400, f"files[{i}] is longer than {longest} characters")
        if "\x00" in path or "\n" in path or "\r" in path:
            raise Refused(400, f"files[{i}] contains a NUL or line break")


def build_app(settings: Settings, backend: Backend | None = None) -> Guard:
    """The ASGI application: the API behind the authentication and size guard."""
    the_backend = backend or Backend(settings)
    jobs = Jobs(the_backend)
    watcher = CacheWatcher(
        the_backend.scout,
        interval=settings.fscache_poll_seconds,
        timeout=settings.gateway_scout_timeout_seconds,
    )
    ns = settings.gateway_namespace
    db = the_backend.db

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The database may still be starting: wait (no /healthz answer meanwhile).
        applied = await until_reachable(lambda: run_in_threadpool(db.run_conn, migrate), log)
        if applied:
            log.info("applied migrations %s", applied)
        tasks = [
            asyncio.create_task(watcher.run(), name="fscache"),
            asyncio.create_task(_sweep_reports(), name="report expiry"),
        ]
        log.info("gateway serving namespace %s", ns)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await the_backend.aclose()

    async def _sweep_reports() -> None:
        while True:
            try:
                gone = await run_in_threadpool(
                    db.run, lambda cur: gq.expire_reports(cur, settings.report_expiredays)
                )
                if gone:
                    log.info("deleted %d expired failed-job report(s)", gone)
            except Exception as exc:  # the database away: try at the next sweep
                log.warning("expiring failed-job reports failed: %s", type(exc).__name__)
            await asyncio.sleep(REPORT_SWEEP_SECONDS)

    app = FastAPI(
        title="MWA staging (the original service's API)",
        description="The MWA ASVO staging API, served over StagingJobs by mwa-staging.",
        version="1",
        lifespan=lifespan,
    )

    def route(methods: list[str], path: str, **kwargs: Any) -> Callable[[Any], Any]:
        """Register a handler at ``path`` and ``path/`` (the original served both)."""

        def register(fn: Any) -> Any:
            app.add_api_route(path, fn, methods=methods, **kwargs)
            app.add_api_route(path + "/", fn, methods=methods, include_in_schema=False, **kwargs)
            return fn

        return register

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        return error(exc.status, exc.message)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error(500, f"unexpected error: {type(exc).__name__}")

    @route(
        ["POST"],
        "/staging",
        status_code=202,
        response_model=None,
        responses=error_responses(400, 403, 413),
    )
    async def new_job(req: StagingRequest) -> Response:
        """Create a staging job (a StagingJob); 202 with null once accepted."""
        started = time.monotonic()
        try:
            sub = check_submission(req, settings)
            await run_in_threadpool(jobs.submit, sub)
        except Refused as exc:
            metrics.JOBS.labels("duplicate" if exc.status == 403 else "invalid").inc()
            return error(exc.status, exc.message)
        except Exception:
            metrics.JOBS.labels("error").inc()
            raise
        metrics.JOBS.labels("accepted").inc()
        metrics.SUBMIT_SECONDS.observe(time.monotonic() - started)
        log.info(
            "job %s accepted (%s)",
            req.job_id,
            f"{len(sub.files)} files" if sub.files else f"observation {sub.obs_id}",
        )
        return null(202)

    @route(["GET"], "/staging", response_model=None, responses=error_responses(404))
    async def job_status(job_id: int, include_files: bool = False) -> Response:
        """A job's counts, and each file's [ready, error, readytime] with include_files."""
        row, obj = await run_in_threadpool(jobs.find, job_id)
        if row is None:
            if obj is not None:
                return raw_json(views.unrecorded_status(job_id, created_time(obj)))
            return error(404, f"Job {job_id} not found")
        files = None
        if include_files:
            files = await run_in_threadpool(db.run, lambda cur: gq.job_files(cur, row.id))
        return raw_json(views.job_status(row, files))

    @route(["DELETE"], "/staging", response_model=None, responses=error_responses(404))
    async def delete_job(job_id: int) -> Response:
        """Delete a job: its files no other job holds are cancelled; no callback is sent."""
        if not await run_in_threadpool(jobs.delete, job_id):
            return error(404, f"Job {job_id} not found")
        log.info("job %s deleted", job_id)
        return null(200)

    @route(["GET"], "/get_joblist", response_model=None, responses=error_responses())
    async def job_list() -> Response:
        """Every job of the namespace, by job id."""
        listed = await run_in_threadpool(db.run, lambda cur: gq.job_list(cur, ns))
        return raw_json(views.job_list(listed))

    @route(["GET"], "/get_stats", response_model=None, responses=error_responses())
    async def stats() -> Response:
        """Job and file totals, the Kafka consumer's heartbeat, the archive's cache state."""
        cache_task = asyncio.create_task(watcher.read())

        def counts(cur: Any) -> tuple[gq.Totals, gq.Heartbeat]:
            return gq.totals(cur, ns), gq.heartbeat(cur)

        totals, beat = await run_in_threadpool(db.run, counts)
        return raw_json(views.stats(totals, beat, await cache_task))

    @route(["POST"], "/filestatus", response_model=None, responses=error_responses(400, 404, 413))
    async def file_status(req: FileStatusRequest) -> Response:
        """Whether each file is on the archive's disk (Scout file status, through HAProxy)."""
        check_paths(req.files, settings)
        limit = asyncio.Semaphore(settings.gateway_filestatus_concurrency)
        scout = the_backend.scout

        async def one(path: str) -> bool | None:
            async with limit:
                try:
                    found = await scout.file_status(path)
                except ScoutError:
                    return None
                return None if found is None else found.on_disk

        paths = list(dict.fromkeys(req.files))
        answers = await asyncio.gather(*(one(p) for p in paths))
        for path, answer in zip(paths, answers, strict=True):
            if answer is None:
                return error(404, f"Scout file status failed for {path}")
        return raw_json(dict(zip(paths, answers, strict=True)))

    @route(["GET"], "/get_failed_joblist", response_model=None, responses=error_responses())
    async def failed_job_list() -> Response:
        """Jobs that ended with failed or never-staged files (kept REPORT_EXPIREDAYS days)."""
        found = await run_in_threadpool(
            db.run, lambda cur: gq.reports(cur, ns, settings.report_expiredays)
        )
        return raw_json(views.failed_job_list(found))

    @route(["GET"], "/get_failed_job", response_model=None, responses=error_responses(404))
    async def failed_job(job_id: int) -> Response:
        """The failed or never-staged files of a job's report."""

        def read(cur: Any) -> tuple[gq.Report, list[str]] | None:
            found = gq.report(cur, ns, job_id, settings.report_expiredays)
            return None if found is None else (found, gq.report_paths(cur, found.id))

        result = await run_in_threadpool(db.run, read)
        if result is None:
            return error(404, f"Failed job {job_id} not found")
        return raw_json(views.failed_job(*result))

    @route(["GET"], "/ping", response_model=None)
    async def ping() -> Response:
        """Liveness of the API (no credentials needed)."""
        return null(200)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response(b"ok", media_type="text/plain")

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    tokens: Tokens | None = None
    if settings.gateway_auth == "token":
        tokens = Tokens(settings.gateway_token_list(), settings.gateway_tokens_file)
    return Guard(app, tokens=tokens, max_body=settings.gateway_max_body_bytes)
