"""Deleting a StagingJob (the finalizer) and deleting it after its TTL.

On delete, the job first stops being live and loses any pending callback (a
deleted job sends none; an attempt in flight is cancelled by the caller), then
the pending paths of an *unfinished* job that no other unfinished live job
holds are cancelled in Scout, then the rows go (files and attempts cascade).
A Scout failure does not block the deletion: the finalizer must not hold the
object hostage to an archive outage, so it is reported as a Warning and the
pending requests simply complete unused.

TTL: the scheduler claims jobs whose ``delete_at`` passed and deletes their
StagingJob with a uid precondition (never a newer object of the same name); the
finalizer above then removes the rows. If the object is already gone, the rows
are removed here.
"""

from __future__ import annotations

import logging

from kubernetes.client import V1DeleteOptions, V1Preconditions
from kubernetes.client.exceptions import ApiException

from mwa_staging.db import jobs_queries, status_queries
from mwa_staging.kube import GROUP, PLURAL, VERSION
from mwa_staging.scout import ScoutError
from mwa_staging.vocabulary import UNFINISHED_STATES, Reason
from mwa_staging_operator.events import ObjectRef
from mwa_staging_operator.services import Services

log = logging.getLogger(__name__)


async def handle_delete(app: Services, ref: ObjectRef) -> None:
    """The finalizer's work for one StagingJob (idempotent)."""
    job = await app.db.run(lambda cur: status_queries.get_job_by_uid(cur, ref.uid))
    if job is None:
        return
    # Retire first, then stop an attempt in flight: once retire_job committed no
    # pass can claim the callback any more, while an attempt claimed before it
    # has had its task started by then (the claim and the start happen in one
    # step of the scheduler) and is cancelled here. The other order left a gap
    # in which a pass could claim, and send, the callback of a deleted job.
    before = await app.db.run(lambda cur: jobs_queries.retire_job(cur, job.id))
    app.forget_callback(job.id)
    if before is not None and before.live and before.state in UNFINISHED_STATES:
        paths = await app.db.run(lambda cur: jobs_queries.cancel_candidates(cur, job.id))
        if paths:
            try:
                await app.scout.cancel(paths, str(job.job_id), app.settings.kafka_topic)
                log.info("cancelled %d pending path(s) of deleted job %s", len(paths), job.job_id)
            except ScoutError as exc:
                log.warning("cancel for deleted job %s failed: %s", job.job_id, exc)
                failed = f"cancelling pending files failed: {exc}"
                app.events.warning(ref, Reason.CANCEL_FAILED, failed)
    await app.db.run(lambda cur: jobs_queries.delete_job(cur, job.id))


async def delete_expired(app: Services, claim: jobs_queries.Claim) -> None:
    """Delete the StagingJob whose TTL after finishing has passed."""
    options = V1DeleteOptions(preconditions=V1Preconditions(uid=claim.uid))
    try:
        await app.kube(
            app.custom.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            claim.namespace,
            PLURAL,
            claim.name,
            body=options,
            _request_timeout=10,
        )
        log.info("deleted StagingJob %s/%s (ttlSecondsAfterFinished)", claim.namespace, claim.name)
    except ApiException as exc:
        if exc.status in (404, 409):  # gone, or the name now belongs to another object
            await app.db.run(lambda cur: jobs_queries.delete_job(cur, claim.job_pk))
        else:
            log.warning(
                "deleting StagingJob %s/%s failed: HTTP %s (will retry)",
                claim.namespace,
                claim.name,
                exc.status,
            )


async def handle_ttl_change(
    app: Services, ref: ObjectRef, ttl: int | None, generation: int
) -> None:
    """spec.ttlSecondsAfterFinished changed (the one mutable field): reschedule the deletion."""
    job_pk = await app.db.run(lambda cur: jobs_queries.set_ttl(cur, ref.uid, ttl, generation))
    if job_pk is not None:
        await app.update_status(job_pk)
        app.wake()
