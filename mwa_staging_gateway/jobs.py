"""Creating and deleting StagingJobs for the HTTP API (the gateway does no staging itself).

``POST /staging`` becomes a StagingJob named ``job-<job_id>`` in the gateway's
namespace; the operator does the rest, exactly as for a job made with kubectl.
Why the steps are what they are:

* **Duplicate job ids are refused synchronously (403) and leave nothing behind.**
  The original refused an id while its job existed (until its callback was
  delivered); here that is the ``live`` flag of the job's row. Three checks
  together make the answer exact: the database is asked first (a live job with
  that id, whoever made it); the object name derived from the id makes two
  concurrent POSTs collide in the API server, which lets only one create it;
  and after creating, the gateway waits (``gateway_confirm_seconds``) for the
  operator to record the job, because a kubectl job with the same id created
  a moment earlier is only seen then: if the operator refused ours as a
  duplicate, the gateway deletes it and answers 403.
* **An id whose job has finished may be used again** (as in the original): the
  finished job's object is deleted first (uid precondition), then the new one
  is created under the same name.
* **Big lists** (more than ``gateway_inline_files`` paths) go into gzip-compressed
  ConfigMaps named by ``spec.filesFrom`` (format: ``mwa_staging.filelists``),
  created right after the job with an owner reference to it, so the garbage
  collector deletes them with the job; the StagingJob itself stays small, and
  so do its status patches.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes.client import V1DeleteOptions, V1Preconditions
from kubernetes.client.exceptions import ApiException

from mwa_staging import filelists
from mwa_staging.db import gateway_queries as gq
from mwa_staging.db.rows import JobRow
from mwa_staging.kube import FINALIZER, GROUP, KIND, PLURAL, VERSION
from mwa_staging.vocabulary import Reason
from mwa_staging_gateway.backend import Backend

log = logging.getLogger(__name__)

MANAGED_BY = "mwa-staging-gateway"
JOB_ID_LABEL = "staging.mwatelescope.org/job-id"
POLL_SECONDS = 0.05
#: How long a DELETE (or the replacement of a finished job) waits for the object to go.
GONE_SECONDS = 15.0


def job_name(job_id: int) -> str:
    """The StagingJob name of an HTTP job (a DNS label: job ids are positive)."""
    return f"job-{job_id}"


@dataclass(frozen=True)
class Submission:
    """What POST /staging asks for, validated."""

    job_id: int
    notify_url: str
    files: Sequence[str]
    obs_id: int | None
    start_time: int
    duration: int


class Refused(Exception):
    """The request cannot be done: answer ``status`` with ``message`` as errormsg."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def duplicate(job_id: int) -> Refused:
    return Refused(403, f"Can't create job {job_id}, because it already exists.")


def build_spec(
    sub: Submission, backend: Backend, name: str
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The StagingJob spec, and the ``binaryData`` of the list ConfigMaps it names.

    The ConfigMap names carry a random token: an earlier job of the same name
    may have left its lists behind (until the garbage collector runs).
    """
    settings = backend.settings
    spec: dict[str, Any] = {"jobId": sub.job_id, "callback": {"url": sub.notify_url}}
    if settings.gateway_job_ttl_seconds is not None:
        spec["ttlSecondsAfterFinished"] = settings.gateway_job_ttl_seconds
    payloads: list[dict[str, str]] = []
    if sub.files:
        paths = list(dict.fromkeys(sub.files))
        if len(paths) <= settings.gateway_inline_files:
            spec["files"] = paths
        else:
            payloads = filelists.configmap_payloads(paths)
            token = secrets.token_hex(4)
            spec["filesFrom"] = [
                {"configMapRef": {"name": f"{name}-{token}-files-{i}"}}
                for i in range(len(payloads))
            ]
    else:
        obs: dict[str, Any] = {"obsId": sub.obs_id}
        if sub.start_time and sub.duration:  # the VCS window only when both are non-zero
            obs["startTime"] = sub.start_time
            obs["duration"] = sub.duration
        spec["observation"] = obs
    return spec, payloads


def _wait(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)


class Jobs:
    """StagingJob operations of the gateway's namespace."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.ns = backend.settings.gateway_namespace

    # -- Kubernetes ------------------------------------------------------------------

    def get_object(self, name: str) -> dict[str, Any] | None:
        try:
            obj = self.backend.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.ns, PLURAL, name, _request_timeout=10
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], obj)

    def _delete_object(self, name: str, uid: str) -> None:
        options = V1DeleteOptions(preconditions=V1Preconditions(uid=uid))
        try:
            self.backend.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.ns, PLURAL, name, body=options, _request_timeout=10
            )
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone, or already another object
                raise

    def _gone(self, name: str, uid: str) -> bool:
        obj = self.get_object(name)
        return obj is None or obj["metadata"]["uid"] != uid

    def delete_and_wait(self, name: str, uid: str, seconds: float = GONE_SECONDS) -> bool:
        """Delete the object (this uid only); True once it is gone (the finalizer ran)."""
        self._delete_object(name, uid)
        return _wait(lambda: self._gone(name, uid), seconds)

    def _create_object(self, name: str, spec: dict[str, Any], job_id: int) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {
                "name": name,
                "namespace": self.ns,
                "labels": {
                    "app.kubernetes.io/managed-by": MANAGED_BY,
                    JOB_ID_LABEL: str(job_id),
                },
                # The operator's finalizer from the start: it would add it itself,
                # one more write of the object and one more event to every watcher.
                "finalizers": [FINALIZER],
            },
            "spec": spec,
        }
        obj = self.backend.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, body, _request_timeout=30
        )
        return cast(dict[str, Any], obj)

    def _create_lists(
        self, job: dict[str, Any], names: list[str], payloads: list[dict[str, str]]
    ) -> None:
        meta = job["metadata"]
        owner = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": meta["name"],
            "uid": meta["uid"],
        }
        for name, data in zip(names, payloads, strict=True):
            body: Any = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "namespace": self.ns,
                    "labels": {
                        filelists.LABEL: "true",
                        filelists.JOB_LABEL: meta["name"],
                        "app.kubernetes.io/managed-by": MANAGED_BY,
                    },
                    "ownerReferences": [owner],
                },
                "binaryData": data,
            }
            self.backend.core.create_namespaced_config_map(self.ns, body, _request_timeout=30)

    # -- POST /staging ---------------------------------------------------------------------

    def submit(self, sub: Submission) -> None:
        """Create the job; :class:`Refused` (403 duplicate, 400 invalid) when it cannot be."""
        db = self.backend.db
        if db.run(lambda cur: gq.live_job(cur, self.ns, sub.job_id)) is not None:
            raise duplicate(sub.job_id)
        name = job_name(sub.job_id)
        spec, payloads = build_spec(sub, self.backend, name)
        job = self._create_or_replace(name, spec, sub.job_id)
        uid = job["metadata"]["uid"]
        if payloads:
            names = [entry["configMapRef"]["name"] for entry in spec["filesFrom"]]
            try:
                self._create_lists(job, names, payloads)
            except Exception:
                self.delete_and_wait(name, uid)
                raise
        row = self._confirm(uid)
        if row is not None and row.reason == Reason.DUPLICATE_JOB_ID:
            self.delete_and_wait(name, uid)
            raise duplicate(sub.job_id)

    def _create_or_replace(self, name: str, spec: dict[str, Any], job_id: int) -> dict[str, Any]:
        for attempt in (1, 2):
            try:
                return self._create_object(name, spec, job_id)
            except ApiException as exc:
                if exc.status == 422:
                    raise Refused(400, _invalid_message(exc)) from None
                if exc.status != 409:
                    raise
                if attempt == 2:  # taken again meanwhile, by another POST of this id
                    raise duplicate(job_id) from None
            existing = self.get_object(name)
            if existing is None:
                continue  # deleted meanwhile: try again
            uid = existing["metadata"]["uid"]
            row = self._row_of(uid)
            if row is None or row.live:
                raise duplicate(job_id)  # unrecorded yet, or still holding the id
            # A finished job that used this id before: its story is over, replace it.
            if not self.delete_and_wait(name, uid):
                raise Refused(503, f"job {job_id}'s previous StagingJob is still being deleted")
        raise duplicate(job_id)

    def _row_of(self, uid: str) -> JobRow | None:
        return self.backend.db.run(lambda cur: gq.job_by_uid(cur, uid))

    def _confirm(self, uid: str) -> JobRow | None:
        """The operator's row for the new job, waited for up to gateway_confirm_seconds."""
        found: list[JobRow] = []

        def recorded() -> bool:
            row = self.backend.db.run(lambda cur: gq.job_by_uid(cur, uid))
            if row is not None:
                found.append(row)
            return row is not None

        _wait(recorded, self.backend.settings.gateway_confirm_seconds)
        return found[0] if found else None

    # -- GET / DELETE ----------------------------------------------------------------------

    def find(self, job_id: int) -> tuple[JobRow | None, dict[str, Any] | None]:
        """The job's row, or (None, object) for an object the operator has not recorded yet."""
        row = self.backend.db.run(lambda cur: gq.find_job(cur, self.ns, job_id))
        if row is not None:
            return row, None
        obj = self.get_object(job_name(job_id))
        if obj is None:
            return None, None
        uid = obj["metadata"]["uid"]
        recorded = self.backend.db.run(lambda cur: gq.job_by_uid(cur, uid))
        if recorded is not None:  # a refused duplicate, being deleted
            return None, None
        return None, obj

    def delete(self, job_id: int) -> bool:
        """Delete the job's StagingJob (the finalizer cancels); False when there is none."""
        row, obj = self.find(job_id)
        if row is not None:
            name, uid = row.name, row.uid
        elif obj is not None:
            name, uid = obj["metadata"]["name"], obj["metadata"]["uid"]
        else:
            return False
        if self.get_object(name) is None:
            return False
        if not self.delete_and_wait(name, uid):
            log.warning("StagingJob %s/%s is still being deleted", self.ns, name)
        return True


def created_time(obj: dict[str, Any]) -> datetime:
    stamp = obj.get("metadata", {}).get("creationTimestamp")
    if not stamp:
        return datetime.now(UTC)
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _invalid_message(exc: ApiException) -> str:
    """The API server's validation message (it names the field)."""
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)
