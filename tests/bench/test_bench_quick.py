"""``make bench`` still runs: its quick variant completes and prints well-formed figures.

The figures at this size mean nothing (and a test must not time anything), so
this asserts only the shape: one JSON document, every part present, every
figure a finite number where one is expected, and the database run with
production durability as the benchmarks claim.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import pytest

from devstack.build import REPO_DIR

pytestmark = [pytest.mark.stack, pytest.mark.local_only]

#: Figures every part must carry (dotted paths into the JSON document).
FIGURES = [
    "bridge_plaintext.messages_per_s",
    "bridge_plaintext.baseline_messages_per_s",
    "bridge_plaintext.speedup",
    "bridge_sasl_ssl.messages_per_s",
    "operator.many.lag_last_create_to_last_complete_s",
    "operator.many.api_requests_per_job",
    "operator.many.operator_peak_rss_mib",
    "operator.many_reference.lag_last_create_to_last_complete_s",
    "operator.idle.operator_cpu_s_per_min",
    "operator.idle.api_requests_per_min",
    "operator.idle_reference.api_requests_per_min",
    "operator.big_job.create_to_staging_s",
    "operator.big_job.reference_row_by_row_insert_s",
    "operator.restage.status_calls_per_s",
    "operator.restage.pass_duration_s",
    "operator.latency.last_message_to_callback_p99_s",
    "operator.api_share.files_inline.apiserver_cpu_ms_per_patch",
    "operator.api_share.files_from.watch_bytes_per_patch",
    "operator.end_to_end.messages_per_s",
]


def _get(doc: dict[str, Any], dotted: str) -> Any:
    value: Any = doc
    for key in dotted.split("."):
        assert isinstance(value, dict) and key in value, f"{dotted}: missing {key!r}"
        value = value[key]
    return value


def test_quick_bench_completes_with_well_formed_figures() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    doc = json.loads(result.stdout)
    for dotted in FIGURES:
        value = _get(doc, dotted)
        assert isinstance(value, int | float) and math.isfinite(value), f"{dotted} = {value!r}"
        assert value >= 0, f"{dotted} = {value!r}"
    for part in ("bridge_plaintext", "bridge_sasl_ssl", "operator"):
        assert _get(doc, f"{part}.database") == {
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
        }
    assert doc["bridge_sasl_ssl"]["kafka_listener"] == "SASL_SSL/SCRAM-SHA-512"
    assert doc["operator"]["restage"]["status_calls"] == 300  # one query per pending file
    assert doc["headline"]["bridge_plaintext"]["messages_per_s"] > 0
