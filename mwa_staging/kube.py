"""The Kubernetes API as the shared code uses it: StagingJob coordinates and status patches.

Built on the official ``kubernetes`` client (synchronous: the bridge calls it from
its projector thread, the operator from its worker thread pools). Status is
written with a JSON merge patch of the ``status`` subresource, so spec and
metadata are never touched and a patch of a deleted object is a harmless 404.
"""

from __future__ import annotations

from typing import Any, cast

import kubernetes
from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

GROUP = "staging.mwatelescope.org"
VERSION = "v1alpha1"
PLURAL = "stagingjobs"
KIND = "StagingJob"
#: The operator's finalizer (kopf adds it; a client may set it at creation to save a write).
FINALIZER = f"{GROUP}/finalizer"

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def _without_nulls(value: Any) -> Any:
    """``value`` with every None-valued key removed (what a merge patch's nulls mean)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def api_client(kubeconfig: str | None, *, pool_maxsize: int | None = None) -> ApiClient:
    """A client from a kubeconfig file, or from the pod's service account when None.

    ``pool_maxsize`` sizes urllib3's connection pool: callers that use the client
    from several threads at once set it to their thread count (the default of 4
    would make extra threads open and drop connections).
    """
    if kubeconfig:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(
            config_file=kubeconfig, client_configuration=configuration
        )
    else:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    if pool_maxsize is not None:
        configuration.connection_pool_maxsize = pool_maxsize
    return ApiClient(configuration)


class StagingJobs:
    """StagingJob calls the shared code needs, on one API client."""

    def __init__(self, client: ApiClient, *, timeout_seconds: float = 10.0) -> None:
        self._api = CustomObjectsApi(client)
        self._timeout = timeout_seconds

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], *, uid: str | None = None
    ) -> bool:
        """Write the object's status; False when the object no longer exists.

        With ``uid`` the write is a JSON patch that first tests ``metadata.uid``: a
        job deleted and created again under the same name is another object, and
        the old job's projection must not land on it (a merge patch's metadata is
        ignored on the status subresource, so it cannot guard this). Without
        ``uid`` it is a merge patch.
        """
        if uid is None:
            body: Any = {"status": status}
            content_type = MERGE_PATCH
        else:
            body = [
                {"op": "test", "path": "/metadata/uid", "value": uid},
                {"op": "add", "path": "/status", "value": _without_nulls(status)},
            ]
            content_type = JSON_PATCH
        try:
            self._api.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                body,
                _content_type=content_type,
                _request_timeout=self._timeout,
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            if exc.status == 422 and uid is not None:
                # The uid test failed, or the status was invalid: only the first
                # means "gone", so look before deciding.
                current = self.get(namespace, name)
                if current is None or current.get("metadata", {}).get("uid") != uid:
                    return False
            raise
        return True

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        try:
            obj = self._api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(cast(dict[str, Any], obj))
