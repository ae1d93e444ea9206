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

MERGE_PATCH = "application/merge-patch+json"


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

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """Merge-patch the object's status; False when the object no longer exists."""
        try:
            self._api.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"status": status},
                _content_type=MERGE_PATCH,
                _request_timeout=self._timeout,
            )
        except ApiException as exc:
            if exc.status == 404:
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
