"""Fixtures of the cluster suite: a stack with a node, and the chart installed on it.

``cluster`` is one stack with a node (containerd, kubelet, controller-manager,
scheduler) for the whole package, on a clean API server (no CRD applied: the
first release installs it). It is stopped when the package's tests are done, and
the teardown fails if a process, port, mount, cgroup or container log link is
left behind, or if the host's kernel settings differ from before.

``release`` is the chart installed as a user would: ``helm upgrade --install``
of release ``mwa-staging`` into namespace ``mwa-staging`` with the node values
(charts/mwa-staging/ci/node-values.yaml plus devstack.cluster's), waiting until
every pod is Ready. The operator gets the test-sized retries of FAST_ENV.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from devstack import cluster as node_cluster
from devstack import host
from devstack.components.node import import_images
from devstack.images import ImageSet
from devstack.stack import Stack
from tests.e2e.target import FAST_ENV, is_external
from tests.helpers import running_stack

RELEASE = "mwa-staging"
NAMESPACE = "mwa-staging"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cluster/" in str(item.fspath):
            item.add_marker(pytest.mark.local_only)
            if is_external():
                item.add_marker(pytest.mark.skip(reason="the node is local (MWA_E2E_EXTERNAL=1)"))


@pytest.fixture(scope="package")
def cluster(request: pytest.FixtureRequest) -> Iterator[Stack]:
    if not host.is_root():
        pytest.fail("the cluster suite runs as root (containers, mounts, cgroups)", pytrace=False)
    sysctls = {name: host.read_sysctl(name) for name in host.KUBELET_SYSCTLS}
    with running_stack(request, "cluster", node=True, apply_crds=False) as stack:
        yield stack
    after = {name: host.read_sysctl(name) for name in host.KUBELET_SYSCTLS}
    assert after == sysctls, "the host's kernel settings were not restored"


@dataclass
class Release:
    """An installed node release and what its installation measured."""

    stack: Stack
    name: str
    namespace: str
    ready_seconds: float
    #: The images of the session (built once, whatever the working tree does meanwhile).
    images: ImageSet

    def values(self) -> dict[str, Any]:
        return node_cluster.release_values(
            self.stack, self.name, operator_env=FAST_ENV, pinned=self.images
        )

    def install(self, values: dict[str, Any] | None = None) -> None:
        result = node_cluster.install(
            self.stack,
            self.name,
            self.namespace,
            values=values or self.values(),
            pinned=self.images,
        )
        assert result.returncode == 0, result.stderr


@pytest.fixture(scope="package")
def release(cluster: Stack) -> Release:
    images = import_images(cluster)  # built and imported before the clock starts
    values = node_cluster.release_values(cluster, RELEASE, operator_env=FAST_ENV, pinned=images)
    start = time.monotonic()
    result = node_cluster.install(
        cluster, RELEASE, NAMESPACE, values=values, wait=False, pinned=images
    )
    assert result.returncode == 0, result.stderr
    node_cluster.wait_pods_ready(cluster, NAMESPACE, timeout=300)
    seconds = time.monotonic() - start
    print(f"\n[figure] helm upgrade --install -> every pod Ready: {seconds:.1f} s")
    return Release(cluster, RELEASE, NAMESPACE, seconds, images)
