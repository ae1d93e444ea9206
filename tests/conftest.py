"""Fixtures shared by all tests.

``stack`` is one real development stack per test session (its own root under
pytest's temporary directory and its own free ports, so ``make test`` runs while
``make up`` is running). Starting it costs about 10 s, so it is shared: tests must
leave it as they found it (restart what they stop or kill).

``target`` is what the end-to-end tests that need no process control run against
(tests/e2e/target.py): the session's ``stack`` by default, or the cluster the
``MWA_E2E_*`` variables describe when ``MWA_E2E_EXTERNAL=1`` (hack/kind-e2e.sh).
In that external mode every test that takes ``stack`` (or ``bridge_stack``, the
bridge tests' own stack) is ``local_only`` and skipped, and no local stack starts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.stack import Stack
from tests.e2e.target import ExternalTarget, LocalTarget, Target, TargetError, is_external
from tests.helpers import running_stack

#: Fixtures that are (or start) a local stack: a test using one needs process
#: control or the stack's own database and Kafka, so it is marked ``local_only``.
LOCAL_FIXTURES = frozenset({"stack", "bridge_stack"})

LOCAL_ONLY_REASON = (
    "local_only: needs the local stack's processes, database or Kafka;"
    " MWA_E2E_EXTERNAL=1 runs against an external cluster"
)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    external = is_external()
    for item in items:
        if LOCAL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.local_only)
        if external and item.get_closest_marker("local_only") is not None:
            item.add_marker(pytest.mark.skip(reason=LOCAL_ONLY_REASON))


def pytest_report_header(config: pytest.Config) -> str | None:
    if is_external():
        return "e2e target: external cluster (MWA_E2E_EXTERNAL=1); local_only tests are skipped"
    return None


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The session's stack, with the operator and the bridge when their code exists.

    It is stopped at the end of the session whatever happens (failure, Ctrl-C), and
    the teardown fails if any process or port of the stack is left behind.
    """
    if is_external():
        pytest.skip(LOCAL_ONLY_REASON)
    with running_stack(request, "stack", services=("operator", "kafka-bridge", "gateway")) as it:
        yield it


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Target:
    """The system the e2e tests drive: the local ``stack``, or the external cluster."""
    if is_external():
        try:
            return ExternalTarget.from_env()
        except TargetError as exc:
            pytest.fail(str(exc), pytrace=False)
    stack: Stack = request.getfixturevalue("stack")
    return LocalTarget(stack)
