"""``make bench``: every benchmark in one command, one JSON document on stdout.

``python -m bench`` runs, each on its own stack (PostgreSQL with production
durability: fsync, synchronous_commit and full_page_writes on):

* ``bridge_plaintext``, ``bridge_sasl_ssl``: the bridge's burst, paced latency
  and per-message baseline (``bench.bridge_bench``) on the broker's PLAINTEXT
  and SASL_SSL/SCRAM-SHA-512 listeners;
* ``operator``: many jobs, idle cost, the big job and its restage pass, latency
  under load, the API server's share and the end-to-end burst with the operator
  running (``bench.operator_bench``);
* ``gateway``: the 100,000-file POST /staging (``bench.gateway_bench``).

``headline`` gathers the figures the targets are about, each next to its
same-run reference. ``--quick`` runs small numbers of everything but the
gateway on one shared stack (what ``make test`` checks: it completes and prints
well-formed figures; the figures themselves mean little at that size).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

from bench import bridge_bench, gateway_bench, operator_bench
from bench.measure import load_average, log
from devstack.stack import Stack

QUICK_BRIDGE = [
    "--files", "4000", "--jobs", "4", "--paced-files", "2000", "--paced-jobs", "4",
    "--baseline-sample", "1000", "--warmup-jobs", "0", "--timeout", "120",
]  # fmt: skip
QUICK_OPERATOR = [
    "--jobs", "20", "--ref-jobs", "5", "--files", "5", "--waiting", "20", "--ref-waiting", "5",
    "--idle-seconds", "3", "--callback-rate", "600", "--big-files", "2000",
    "--restage-files", "300", "--status-rate", "200", "--load-rate", "1000",
    "--load-seconds", "3", "--probe-jobs", "3", "--share-files", "2000", "--patches", "5",
    "--e2e-jobs", "2", "--e2e-files", "4000", "--timeout", "120",
]  # fmt: skip


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "load_average_at_start": load_average(),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def headline(out: dict[str, Any]) -> dict[str, Any]:
    """The targets' figures, each with its reference (absent parts are left out)."""
    h: dict[str, Any] = {}
    for key in ("bridge_plaintext", "bridge_sasl_ssl"):
        b = out.get(key)
        if b:
            h[key] = {
                "messages_per_s": b["messages_per_s"],
                "baseline_messages_per_s": b["baseline_messages_per_s"],
                "speedup": b["speedup"],
                "target_50000_met": b["messages_per_s"] >= 50_000,
                "target_15x_met": b["speedup"] >= 15,
            }
    op = out.get("operator") or {}
    if "end_to_end" in op:
        e2e = op["end_to_end"]
        h["end_to_end_operator_running_messages_per_s"] = e2e["messages_per_s"]
        if "bridge_plaintext" in h:
            h["end_to_end_over_bridge_only"] = round(
                e2e["messages_per_s"] / h["bridge_plaintext"]["messages_per_s"], 2
            )
    if "many" in op:
        m, r = op["many"], op["many_reference"]
        h["many_jobs"] = {
            "jobs": m["jobs"],
            "lag_last_create_to_last_complete_s": m["lag_last_create_to_last_complete_s"],
            "reference_jobs": r["jobs"],
            "reference_lag_s": r["lag_last_create_to_last_complete_s"],
            "lag_target_met": m["lag_target_met"],
            "operator_peak_rss_mib": m["operator_peak_rss_mib"],
            "api_requests_per_job": m["api_requests_per_job"],
            "reference_api_requests_per_job": r["api_requests_per_job"],
            "callback_rate_respected": m["callback_rate_respected"],
        }
        h["idle"] = {
            k: {
                "jobs_finished": op[k]["jobs_finished"],
                "jobs_waiting": op[k]["jobs_waiting"],
                "operator_cpu_s_per_min": op[k]["operator_cpu_s_per_min"],
                "bridge_cpu_s_per_min": op[k]["bridge_cpu_s_per_min"],
                "api_requests_per_min": op[k]["api_requests_per_min"],
            }
            for k in ("idle_reference", "idle")
        }
    if "big_job" in op:
        b = op["big_job"]
        h["big_job"] = {
            k: b[k]
            for k in ("files", "create_to_staging_s", "staging_target_met",
                      "create_to_complete_s", "reference_row_by_row_insert_s")
        }  # fmt: skip
    if "restage" in op:
        r = op["restage"]
        h["restage"] = {
            k: r[k]
            for k in ("files_pending", "status_calls", "status_calls_per_s",
                      "status_rate_setting_per_s", "rate_bounded_by_setting", "pass_duration_s",
                      "probe_job_create_to_callback_before_s",
                      "probe_job_create_to_callback_during_pass_s")
        }  # fmt: skip
    if "latency" in op:
        lat = op["latency"]
        h["latency_under_load"] = {
            k: lat[k]
            for k in ("load_rate_produced_per_s", "last_message_to_callback_p50_s",
                      "last_message_to_callback_p99_s", "p99_target_met")
        }  # fmt: skip
    if "api_share" in op:
        s = op["api_share"]
        h["api_server_per_status_patch"] = {
            "files": s["files"],
            "spec_files_apiserver_cpu_ms": s["files_inline"]["apiserver_cpu_ms_per_patch"],
            "files_from_apiserver_cpu_ms": s["files_from"]["apiserver_cpu_ms_per_patch"],
            "spec_files_watch_bytes": s["files_inline"]["watch_bytes_per_patch"],
            "files_from_watch_bytes": s["files_from"]["watch_bytes_per_patch"],
        }
    return h


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    parts = set(args.only.split(",")) if args.only else None

    def want(part: str) -> bool:
        return parts is None or part in parts

    if args.quick:
        root = Path(tempfile.mkdtemp(prefix="bench-quick-"))
        stack = Stack(root, services=(), durable_db=True)
        log("bench", f"quick: one stack in {root}")
        with contextlib.redirect_stdout(sys.stderr):
            stack.up()
        try:
            for listener, key in (
                ("PLAINTEXT", "bridge_plaintext"),
                ("SASL_SSL", "bridge_sasl_ssl"),
            ):
                if want(key):
                    with contextlib.redirect_stdout(sys.stderr):
                        if stack.is_running("kafka-bridge"):
                            stack.stop("kafka-bridge")
                        env = bridge_bench.bridge_env(stack, listener)
                        stack.spawn("kafka-bridge", "kafka-bridge", env)
                    bargs = bridge_bench.parser().parse_args(
                        [*QUICK_BRIDGE, "--listener", listener]
                    )
                    out[key] = bridge_bench.run(bargs, stack)
            if want("operator"):
                with contextlib.redirect_stdout(sys.stderr):
                    if stack.is_running("kafka-bridge"):
                        stack.stop("kafka-bridge")
                    stack.spawn("kafka-bridge", "kafka-bridge", {})
                out["operator"] = operator_bench.run(
                    operator_bench.parser().parse_args(QUICK_OPERATOR), stack
                )
        finally:
            with contextlib.redirect_stdout(sys.stderr):
                stack.down()
    else:
        for listener, key in (("PLAINTEXT", "bridge_plaintext"), ("SASL_SSL", "bridge_sasl_ssl")):
            if want(key):
                out[key] = bridge_bench.run(
                    bridge_bench.parser().parse_args(["--listener", listener])
                )
        if want("operator"):
            out["operator"] = operator_bench.run(operator_bench.parser().parse_args([]))
        if want("gateway"):
            out["gateway"] = gateway_bench.run(gateway_bench.parser().parse_args([]))
    out["headline"] = headline(out)
    out["load_average_at_end"] = load_average()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small numbers, one shared stack")
    parser.add_argument(
        "--only",
        help="comma-separated parts: bridge_plaintext,bridge_sasl_ssl,operator,gateway",
    )
    print(json.dumps(run(parser.parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
