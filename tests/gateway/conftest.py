"""Fixtures of the gateway tests: the stack's gateway, reached over HTTP only."""

from __future__ import annotations

import pytest

from devstack.stack import Stack
from tests.gateway.client import Api


@pytest.fixture(scope="session")
def api(stack: Stack) -> Api:
    """The stack's gateway with the token of STAGING_API_TOKEN."""
    if "gateway" in stack.skipped:
        pytest.fail(f"the gateway did not start: {stack.skipped['gateway']}")
    env = stack.env
    return Api(env["STAGING_API_URL"], env["STAGING_API_TOKEN"])
