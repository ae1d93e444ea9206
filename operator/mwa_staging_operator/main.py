"""The operator's entry point: every kopf decorator and the start-up settings, nothing else.

The handlers are thin: each hands the object to a plain module (``create``,
``delete``...) written against :class:`~mwa_staging_operator.services.Services`,
which unit tests call with a fake App, without a cluster (tests/unit/test_steps.py).
Long-lived delayed work (deadlines, restages, callbacks, TTL) is not done with
per-object kopf timers but by the one scheduler task the start-up handler
launches (see ``scheduler``).

kopf settings, and why:

* standalone (no peering objects) and no cluster scanning: the chart runs one
  replica with least-privilege RBAC (no namespace/CRD watch rights);
* progress and the diff base live in annotations under our own prefix
  (``staging.mwatelescope.org/``), never in ``status`` (which is the database's
  projection and has a schema);
* the diff base leaves out ``spec.files`` and the other immutable fields: a
  10,000-path list is ~400 KB and annotations are capped at 256 KiB in total.
  Only ``ttlSecondsAfterFinished`` may change after creation (the CRD's CEL
  rules refuse the rest), so it is the only spec field worth diffing;
* kopf's own per-handler Events only at WARNING and above: the operator posts
  its own Events for each step, and thousands of jobs should not double the
  API traffic.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from mwa_staging.db.connect import until_reachable
from mwa_staging.kube import GROUP, PLURAL, VERSION
from mwa_staging.observability import serve_http, setup_logging
from mwa_staging.settings import load
from mwa_staging_operator import create, delete
from mwa_staging_operator.context import App, Runtime
from mwa_staging_operator.events import ObjectRef

log = logging.getLogger(__name__)

#: kopf's finalizer; its annotations use the API group (``kube.GROUP``) as their prefix too.
FINALIZER = f"{GROUP}/finalizer"
#: Spec fields left out of kopf's last-handled-configuration (immutable, possibly huge).
DIFFBASE_IGNORED = [
    "spec.files",
    "spec.filesFrom",
    "spec.observation",
    "spec.callback",
    "spec.jobId",
    "spec.activeDeadlineSeconds",
    "spec.restageIntervalSeconds",
]


def _app(memo: Any) -> App:
    runtime: Runtime = memo.runtime
    assert runtime.app is not None, "the operator has not started"
    return runtime.app


def _ref(body: kopf.Body) -> ObjectRef:
    return ObjectRef(
        body.metadata.namespace or "", body.metadata.name or "", body.metadata.uid or ""
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.peering.standalone = True
    settings.scanning.disabled = True
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration", ignored_fields=DIFFBASE_IGNORED
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 600
    settings.watching.client_timeout = 660
    runtime: Runtime = memo.runtime
    app = App(runtime.settings)
    # The database may still be starting: wait (/healthz is not OK meanwhile).
    await until_reachable(app.start, log)
    runtime.app = app


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    if runtime.app is not None:
        await runtime.app.stop()


@kopf.on.create(GROUP, VERSION, PLURAL)
async def on_create(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    try:
        await create.handle_create(_app(memo), body)
    except create.RetryLater as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec.ttlSecondsAfterFinished")
async def on_ttl_change(body: kopf.Body, new: Any, memo: kopf.Memo, **_: Any) -> None:
    generation = int(body.metadata.get("generation") or 1)
    ttl = None if new is None else int(new)
    await delete.handle_ttl_change(_app(memo), _ref(body), ttl, generation)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def on_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await delete.handle_delete(_app(memo), _ref(body))


def run() -> None:
    """Console script ``mwa-staging-operator``: settings, logging, /healthz, then kopf."""
    config = load()
    setup_logging(config.log_level, config.log_format)
    config.warn_insecure()  # TLS verification turned off: said loudly at every start
    runtime = Runtime(config)
    serve_http(config.operator_http_port, runtime.health, config.http_bind_address)
    namespaces = config.watch_namespaces()
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        memo=kopf.Memo(runtime=runtime),
    )
