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
* kopf handles only the finalizer and deletion (``on.delete``, whose progress
  lives in annotations under our own prefix, never in ``status``, which is the
  database's projection and has a schema). Creation and the one mutable field
  (``ttlSecondsAfterFinished``; the CRD's CEL rules refuse other changes) come
  through ``on.event`` to :mod:`~mwa_staging_operator.intake`, which asks the
  database how far a job has got instead of keeping kopf's last-handled
  configuration in the object: no annotation write per job, and no deep copy of
  the object on every watch event (:class:`NoDiffBase`);
* kopf's own per-handler Events only at WARNING and above: the operator posts
  its own Events for each step, and thousands of jobs should not double the
  API traffic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import kopf

from mwa_staging.db.connect import until_reachable
from mwa_staging.kube import FINALIZER, GROUP, PLURAL, VERSION
from mwa_staging.observability import serve_http, setup_logging
from mwa_staging.settings import load
from mwa_staging_operator import delete
from mwa_staging_operator.context import App, Runtime
from mwa_staging_operator.events import ObjectRef
from mwa_staging_operator.intake import Intake

log = logging.getLogger(__name__)


class NoDiffBase(kopf.DiffBaseStorage):
    """No last-handled configuration: every object's essence is the same empty one.

    So kopf never detects a change (nor writes an annotation for it): what has
    changed is the intake's question, answered from the database.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def _app(memo: Any) -> App:
    runtime: Runtime = memo.runtime
    assert runtime.app is not None, "the operator has not started"
    return runtime.app


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.peering.standalone = True
    settings.scanning.disabled = True
    settings.persistence.finalizer = FINALIZER  # its annotations use GROUP as prefix too
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 600
    settings.watching.client_timeout = 660
    runtime: Runtime = memo.runtime
    app = App(runtime.settings)
    # The database may still be starting: wait (/healthz is not OK meanwhile).
    await until_reachable(app.start, log)
    runtime.intake = Intake(app)
    runtime.app = app


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    if runtime.intake is not None:
        await runtime.intake.stop()
    if runtime.app is not None:
        await runtime.app.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    assert runtime.intake is not None, "the operator has not started"
    await runtime.intake.on_event(event.get("type"), event["object"])


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def on_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await delete.handle_delete(_app(memo), ObjectRef.of(body))


def run() -> None:
    """Console script ``mwa-staging-operator``: settings, logging, /healthz, then kopf."""
    config = load()
    setup_logging(config.log_level, config.log_format)
    if config.log_level.upper() != "DEBUG":
        # kopf says "Handler 'on_event' succeeded" for every watch event (several per job,
        # most of them our own status patches); the steps log what they did themselves.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
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
