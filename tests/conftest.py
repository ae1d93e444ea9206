"""Fixtures shared by all tests.

``stack`` is one real development stack per test session (its own root under
pytest's temporary directory and its own free ports, so ``make test`` runs while
``make up`` is running). Starting it costs about 10 s, so it is shared: tests must
leave it as they found it (restart what they stop or kill).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.stack import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The session's stack, with the operator and the bridge when their code exists.

    It is stopped at the end of the session whatever happens (failure, Ctrl-C), and
    the teardown fails if any process or port of the stack is left behind.
    """
    the_stack = Stack(tmp_path_factory.mktemp("stack"), services=("operator", "kafka-bridge"))
    try:
        the_stack.up()
        yield the_stack
    finally:
        the_stack.down()
    left = the_stack.leftovers()
    assert not left, f"the stack left these behind after down(): {left}"
