"""Timeouts (return code 10) and the cancel of the pending files of a job that ended part way.

The timeout itself is one statement: due jobs move to ``failed`` with code 10,
a message with the counts, the callback due now, and -- if files are still
pending -- ``cancel_due_at`` set in the same transaction. The Scout cancel is
then ordinary delayed work (retried every ``cancel_retry_seconds`` while Scout
fails), so a crash between the two can neither lose the cancel nor delay the
callback. Jobs that end part way otherwise (102 after some stage calls were
accepted, 199 mid-way) get ``cancel_due_at`` the same way and share this cancel.
A pending path that another unfinished live job holds is left alone.
"""

from __future__ import annotations

import logging

from mwa_staging.db import jobs_queries
from mwa_staging.scout import ScoutError
from mwa_staging.vocabulary import Reason
from mwa_staging_operator.events import ObjectRef
from mwa_staging_operator.services import Services

log = logging.getLogger(__name__)


async def time_out_due(app: Services) -> int:
    """Time out every job past its deadline; return how many."""
    total = 0
    while True:
        rows = await app.db.run(
            lambda cur: jobs_queries.claim_deadlines(cur, app.settings.scheduler_batch)
        )
        for job in rows:
            ref = ObjectRef(job.namespace, job.name, job.uid)
            app.events.warning(ref, Reason.DEADLINE_EXCEEDED, job.message or "")
            await app.update_status(job.id)
        total += len(rows)
        if len(rows) < app.settings.scheduler_batch:
            return total


async def cancel_pending(app: Services, claim: jobs_queries.Claim) -> None:
    """Cancel in Scout the requested, still pending paths of an ended job that nobody else needs."""
    ref = ObjectRef(claim.namespace, claim.name, claim.uid)
    paths = await app.db.run(lambda cur: jobs_queries.cancel_candidates(cur, claim.job_pk))
    if paths:
        try:
            await app.scout.cancel(paths, str(claim.job_id), app.settings.kafka_topic)
        except ScoutError as exc:
            log.warning("cancel for job %s failed, will retry: %s", claim.job_id, exc)
            app.events.warning(ref, Reason.CANCEL_FAILED, f"cancelling pending files failed: {exc}")
            return
        cancelled = f"cancelled staging of {len(paths)} pending file(s)"
        app.events.normal(ref, Reason.CANCELLED, cancelled)
    await app.db.run(lambda cur: jobs_queries.clear_cancel(cur, claim.job_pk))
