"""The short chaos soak (devstack/soak.py) as part of ``make test``: 2 minutes, any seed.

The soak runs on a stack of its own, so it needs no fixture; its last line of
output is the invariants as JSON. A failure shows the seed, the problems and
the command that replays the schedule (``make soak SOAK_MINUTES=2 SOAK_SEED=N``).
``SOAK_SEED`` fixes the seed here too.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.stack, pytest.mark.local_only]

MINUTES = os.environ.get("MWA_SHORT_SOAK_MINUTES", "2")


@pytest.mark.timeout(1500)
def test_short_chaos_soak_loses_nothing() -> None:
    seed = int(os.environ.get("SOAK_SEED") or random.randrange(10**9))
    result = subprocess.run(
        [sys.executable, "-m", "devstack.soak", "--minutes", MINUTES, "--seed", str(seed)],
        capture_output=True,
        text=True,
        timeout=1400,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"seed {seed}: no output\n{result.stderr[-4000:]}"
    first, last = json.loads(lines[0]), json.loads(lines[-1])
    assert first["seed"] == seed
    print(lines[-1])
    assert result.returncode == 0 and last.get("ok"), (
        f"soak failed, seed {seed}: {last.get('problems')}; replay: {first['replay']}\n"
        + result.stderr[-4000:]
    )
    assert last["jobs"] >= 20 and last["faults"] >= 3, last
