"""Reading ``spec.filesFrom``: the ConfigMaps holding a big job's paths (format in
``mwa_staging.filelists``).

They are read once, by the create handler, before the files are recorded; the
job never needs them again (the database holds the files from then on). The
gateway creates them right *after* the StagingJob, so that they can carry an
owner reference to it (the garbage collector deletes them with the job), so a
ConfigMap that does not exist yet (or is not labelled as a file list yet) is
waited for, up to ``filelist_wait_seconds`` after the job's creation, before
the job fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from mwa_staging.filelists import LABEL, FileListError, read_all
from mwa_staging.resolve import ResolveError
from mwa_staging.vocabulary import ReturnCode
from mwa_staging_operator.services import Services

#: Pause between two looks for a ConfigMap that does not exist yet.
POLL_SECONDS = 0.1


def names_of(files_from: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ConfigMap names of ``spec.filesFrom``, in order."""
    return [str((entry.get("configMapRef") or {}).get("name", "")) for entry in files_from]


async def load(
    app: Services, namespace: str, files_from: Sequence[Mapping[str, Any]], created: datetime
) -> list[str]:
    """The job's paths, each once; :class:`ResolveError` (code 199 or 101) when unusable.

    A missing ConfigMap is waited for until ``filelist_wait_seconds`` after
    ``created`` (the job's creation).
    """
    waited_since = time.monotonic() - max(0.0, (datetime.now(UTC) - created).total_seconds())
    settings = app.settings
    configmaps: list[dict[str, Any]] = []
    for name in names_of(files_from):
        configmaps.append(await _get(app, namespace, name, waited_since))
    try:
        paths = await asyncio.to_thread(
            read_all,
            configmaps,
            max_bytes=settings.filelist_max_bytes,
            max_paths=settings.filelist_max_paths,
        )
    except FileListError as exc:
        raise ResolveError(ReturnCode.UNEXPECTED, f"spec.filesFrom: {exc}") from None
    if not paths:
        raise ResolveError(ReturnCode.NO_FILES, "the file lists of spec.filesFrom are empty")
    return paths


async def _get(app: Services, namespace: str, name: str, waited_since: float) -> dict[str, Any]:
    """The ConfigMap as a dict; waited for while missing or unlabelled, until the deadline.

    Past the deadline an unlabelled one is returned (and refused by the reader,
    with the reason), a missing one fails the job.
    """
    deadline = waited_since + app.settings.filelist_wait_seconds
    while True:
        try:
            cm = await app.kube(
                app.core.read_namespaced_config_map, name, namespace, _request_timeout=30
            )
        except ApiException as exc:
            if exc.status != 404:
                raise ResolveError(
                    ReturnCode.UNEXPECTED,
                    f"spec.filesFrom: reading ConfigMap {name} failed: HTTP {exc.status}",
                ) from None
            cm = None
        late = time.monotonic() >= deadline
        if cm is not None:
            labels = cm.metadata.labels or {}
            # Not labelled may mean not labelled *yet* (kubectl create, then kubectl label).
            if labels.get(LABEL) == "true" or late:
                return {
                    "metadata": {"name": name, "labels": labels},
                    "data": cm.data or {},
                    "binaryData": cm.binary_data or {},
                }
        elif late:
            raise ResolveError(
                ReturnCode.UNEXPECTED, f"spec.filesFrom: ConfigMap {name} does not exist"
            )
        await asyncio.sleep(POLL_SECONDS)
