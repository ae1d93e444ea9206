"""Delivering the callback of finished jobs, from the scheduler.

Guarantee: **at least once**, with a duplicate only if the process dies (or
loses the database) between the client's 200 and the commit that records it.
How: an attempt is claimed in the database *before* the POST (attempt counter
+1, an ``in flight`` row in ``callback_attempts``, and ``callback_next_attempt``
pushed out by a lease longer than the POST timeout); the outcome is committed
right after the answer. A restart therefore finds every undelivered callback
still due (at the latest when its lease expires) and never resends one whose
delivery was committed. Exactly-once is impossible without the client's help
(the payload carries ``job_id`` so a client can deduplicate).

Retries back off exponentially (``callback_backoff_initial_seconds`` doubling,
capped at 10 minutes) until delivered or until ``callback_give_up_seconds``
after the job ended. Across all jobs at most ``callback_rate_per_minute``
POSTs are started in any minute: the scheduler claims only as many as the
limiter allows, so a claimed callback never waits (and its lease never runs
out while it waits).
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime

from kubernetes.client.exceptions import ApiException

from mwa_staging.callback_client import Decision, Delivery, after_failure, payload_for, send
from mwa_staging.callback_policy import CallbackRefused, check_target
from mwa_staging.db import jobs_queries
from mwa_staging.db.rows import JobRow
from mwa_staging.vocabulary import JobState, Reason
from mwa_staging_operator import metrics
from mwa_staging_operator.events import ObjectRef
from mwa_staging_operator.services import Services

log = logging.getLogger(__name__)

#: Seconds beyond the POST timeout before an unrecorded attempt counts as lost.
LEASE_MARGIN_SECONDS = 60.0


class CredentialsError(Exception):
    """The callback's Basic-auth credentials could not be read."""


def lease_seconds(app: Services) -> float:
    return app.settings.callback_timeout_seconds + LEASE_MARGIN_SECONDS


async def credentials(app: Services, job: JobRow) -> tuple[str, str]:
    """(username, password): from ``spec.callback.secretRef`` or the operator's defaults."""
    if not job.callback_secret:
        return app.settings.result_username, app.settings.result_password.get_secret_value()
    try:
        secret = await app.kube(
            app.core.read_namespaced_secret,
            job.callback_secret,
            job.namespace,
            _request_timeout=10,
        )
    except ApiException as exc:
        if exc.status == 404:
            raise CredentialsError(
                f"Secret {job.callback_secret} not found in namespace {job.namespace}"
            ) from None
        raise CredentialsError(
            f"reading Secret {job.callback_secret} failed: HTTP {exc.status}"
        ) from None
    data = secret.data or {}
    try:
        username = base64.b64decode(data["username"]).decode()
        password = base64.b64decode(data["password"]).decode()
    except (KeyError, ValueError):
        raise CredentialsError(
            f"Secret {job.callback_secret} must hold the keys username and password"
        ) from None
    return username, password


async def attempt(app: Services, job: JobRow) -> None:
    """Make the attempt ``job.callback_attempts`` (already claimed) and record its outcome."""
    settings = app.settings
    ref = ObjectRef(job.namespace, job.name, job.uid)
    number = job.callback_attempts
    # The bridge ends jobs; the operator hears of it here, first, and announces it
    # after this attempt: with its outcome when delivered (one Event, not two).
    announce_complete = number == 1 and job.state == JobState.COMPLETE
    refused = False
    try:
        # Every attempt is a hop: the name may resolve elsewhere than at creation.
        await check_target(
            job.notify_url, settings.callback_allowed_hosts, settings.callback_networks()
        )
        username, password = await credentials(app, job)
    except CallbackRefused as exc:
        refused = True
        delivery = Delivery(False, None, f"callback refused: {exc}")
    except CredentialsError as exc:
        delivery = Delivery(False, None, str(exc))
    else:
        delivery = await send(
            app.callback_http,
            job.notify_url,
            payload_for(job),
            username,
            password,
            timeout=settings.callback_timeout_seconds,
        )
    if delivery.delivered:
        await app.db.run(
            lambda cur: jobs_queries.record_callback_result(
                cur, job.id, number, delivered=True, http_status=delivery.http_status, error=None
            )
        )
        metrics.CALLBACKS.labels("delivered").inc()
        if announce_complete:
            app.events.normal(
                ref, Reason.COMPLETE, f"{job.message or 'complete'}; callback delivered"
            )
        else:
            app.events.normal(
                ref, Reason.CALLBACK_DELIVERED, f"callback delivered (attempt {number})"
            )
    else:
        if announce_complete:
            app.events.normal(ref, Reason.COMPLETE, job.message or "")
        decision = after_failure(
            number,
            datetime.now(UTC),
            job.completion_time or datetime.now(UTC),
            initial=settings.callback_backoff_initial_seconds,
            maximum=settings.callback_backoff_max_seconds,
            give_up_seconds=settings.callback_give_up_seconds,
        )
        if refused:  # no later attempt can be allowed: the rules do not change under it
            decision = Decision(True, None)
        await app.db.run(
            lambda cur: jobs_queries.record_callback_result(
                cur,
                job.id,
                number,
                delivered=False,
                http_status=delivery.http_status,
                error=delivery.error,
                give_up=decision.give_up,
                next_attempt=decision.next_attempt,
            )
        )
        if decision.give_up:
            metrics.CALLBACKS.labels("gave_up").inc()
            app.events.warning(
                ref,
                Reason.CALLBACK_GAVE_UP,
                f"gave up after {number} attempts; last: {delivery.error}",
            )
        else:
            metrics.CALLBACKS.labels("failed").inc()
            when = decision.next_attempt.strftime("%H:%M:%SZ") if decision.next_attempt else "?"
            app.events.warning(
                ref,
                Reason.CALLBACK_FAILED,
                f"callback attempt {number} failed: {delivery.error}; next attempt at {when}",
            )
    await app.update_status(job.id)
