"""schemathesis against the gateway's own OpenAPI document: no 5xx, nothing undocumented.

A gateway instance of its own (``gateway-fuzz``) serves a namespace of its own,
so the StagingJobs the generated requests create (and the DELETEs they send)
touch nothing else; they are deleted afterwards. Every operation gets
``MAX_EXAMPLES`` generated requests (valid and invalid), with the token; each
answer must not be a 5xx, must have a status code, content type and body the
document declares. Bounded: about a minute on this machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from devstack.stack import Stack
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.stack

MAX_EXAMPLES = int(os.environ.get("MWA_SCHEMATHESIS_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_gateway(stack: Stack) -> Iterator[str]:
    namespace = f"fuzz-{os.urandom(3).hex()}"
    stack.kubectl("create", "namespace", namespace)
    port = free_port()
    env = {"GATEWAY_PORT": str(port), "GATEWAY_NAMESPACE": namespace}
    stack.spawn("gateway-fuzz", "gateway", {**env, "GATEWAY_CONFIRM_SECONDS": "0.5"})
    base = f"http://127.0.0.1:{port}"
    try:
        yield base
    finally:
        stack.stop("gateway-fuzz")
        stack.kubectl("delete", "stagingjobs", "--all", "-n", namespace, "--wait=true",
                      "--timeout=120s", check=False)  # fmt: skip
        stack.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def gateway_schema(fuzz_gateway: str) -> schemathesis.BaseSchema:
    wait_for(
        lambda: httpx.get(f"{fuzz_gateway}/ping", timeout=5).status_code == 200,
        timeout=30,
        message="the fuzzing gateway answering",
    )
    return schemathesis.openapi.from_url(f"{fuzz_gateway}/openapi.json")


def test_gateway_answers_only_documented_shapes(
    gateway_schema: schemathesis.BaseSchema, fuzz_gateway: str, stack: Stack
) -> None:
    """Each operation, valid then invalid inputs (schemathesis' pytest plugin is not used:
    it does not run under this pytest)."""
    headers = {"Authorization": f"Bearer {stack.env['STAGING_API_TOKEN']}"}
    operations = [result.ok() for result in gateway_schema.get_all_operations()]
    assert len(operations) >= 8, [op.label for op in operations]
    ran: dict[str, int] = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)

            @given(case=strategy)
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def run(case: schemathesis.Case) -> None:
                ran[operation.label] = ran.get(operation.label, 0) + 1  # noqa: B023 (run now)
                case.call_and_validate(
                    base_url=fuzz_gateway, headers=headers, checks=CHECKS, timeout=30
                )

            try:
                run()
            except Unsatisfiable:
                # An operation without inputs has no invalid request to make.
                assert mode == GenerationMode.NEGATIVE, operation.label
    print(f"schemathesis: {sum(ran.values())} requests over {len(ran)} operations")
