"""Benchmark of a 100,000-file POST /staging through the gateway.

``python -m bench.gateway_bench`` (``make bench-gateway``, part of ``make bench``).

Starts a stack with the operator, the bridge and the gateway in a temporary
directory, sends one small unmeasured job first (warm-up), then for each of
``--runs`` runs:

* **gateway**: ``POST /staging`` with ``--files`` paths (a ~5 MB JSON body, as
  the portal sends it); measured from the start of the request to the 202
  (``time_to_202_s``), to the StagingJob's ``status.phase`` showing ``Staging``
  (``time_to_staging_s``: the operator has read the list, recorded every file
  and the job waits for arrivals) and to the callback's arrival at the
  receiver (``time_to_callback_s``, which includes the simulated archive
  staging every file and the bridge recording 100,000 Kafka messages);
* **baseline**: the same list written straight to the Kubernetes API by this
  process, in the same format (gzip ConfigMap + StagingJob with
  ``spec.filesFrom``), measured the same way. ``gateway_over_direct`` is the
  ratio of the two times to ``Staging``: what the gateway adds over a client
  that talks to Kubernetes itself.

Prints one JSON object on stdout (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes.client import CoreV1Api, CustomObjectsApi

from devstack.stack import Stack
from mwa_staging import filelists
from mwa_staging.kube import GROUP, KIND, PLURAL, VERSION, api_client


def _log(text: str) -> None:
    print(f"[gateway-bench] {text}", file=sys.stderr, flush=True)


def paths_for(job_id: int, count: int) -> list[str]:
    return [f"mwa/{job_id}/{job_id}_{i // 24:05d}_ch{i % 24 + 1:03d}.fits" for i in range(count)]


class Watcher:
    """Polls the things a run waits for, with a deadline."""

    def __init__(self, stack: Stack, timeout: float) -> None:
        client = api_client(stack.env["KUBECONFIG"])
        self.custom = CustomObjectsApi(client)
        self.core = CoreV1Api(client)
        self.ns = stack.env["GATEWAY_NAMESPACE"]
        self.callback_log = Path(stack.env["CALLBACK_LOG"])
        self.timeout = timeout

    def _until(self, what: str, check: Any, interval: float) -> float:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if check():
                return time.monotonic()
            time.sleep(interval)
        raise TimeoutError(f"timed out waiting for {what}")

    def phase(self, name: str) -> str | None:
        try:
            obj: Any = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.ns, PLURAL, name
            )
        except Exception:
            return None
        phase = (obj.get("status") or {}).get("phase")
        return None if phase is None else str(phase)

    def staging(self, name: str) -> float:
        return self._until(
            f"{name} Staging", lambda: self.phase(name) in ("Staging", "Complete"), 0.02
        )

    def callback(self, job_id: int, total: int) -> float:
        def arrived() -> bool:
            if not self.callback_log.exists():
                return False
            for line in self.callback_log.read_text().splitlines():
                body = json.loads(line).get("body") or {}
                if body.get("job_id") == job_id and body.get("total_files") == total:
                    return True
            return False

        return self._until(f"callback of {job_id}", arrived, 0.25)


def post(stack: Stack, body: bytes) -> int:
    request = urllib.request.Request(
        stack.env["STAGING_API_URL"] + "/staging",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {stack.env['STAGING_API_TOKEN']}",
        },
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
        return int(response.status)


def gateway_run(stack: Stack, watcher: Watcher, job_id: int, count: int) -> dict[str, float]:
    body = json.dumps(
        {
            "job_id": job_id,
            "notify_url": stack.env["CALLBACK_URL"],
            "files": paths_for(job_id, count),
        }
    ).encode()
    started = time.monotonic()
    status = post(stack, body)
    accepted = time.monotonic()
    if status != 202:
        raise RuntimeError(f"POST /staging answered {status}")
    staging = watcher.staging(f"job-{job_id}")
    done = watcher.callback(job_id, count)
    return {
        "body_bytes": len(body),
        "time_to_202_s": round(accepted - started, 3),
        "time_to_staging_s": round(staging - started, 3),
        "time_to_callback_s": round(done - started, 3),
    }


def direct_run(stack: Stack, watcher: Watcher, job_id: int, count: int) -> dict[str, float]:
    """The same list through the Kubernetes API by the client itself (no gateway)."""
    name = f"direct-{job_id}"
    started = time.monotonic()
    payloads = filelists.configmap_payloads(paths_for(job_id, count))
    names = [f"{name}-files-{i}" for i in range(len(payloads))]
    for cm_name, data in zip(names, payloads, strict=True):
        body: Any = {
            "metadata": {"name": cm_name, "labels": {filelists.LABEL: "true"}},
            "binaryData": data,
        }
        watcher.core.create_namespaced_config_map(watcher.ns, body)
    watcher.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        watcher.ns,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name},
            "spec": {
                "jobId": job_id,
                "callback": {"url": stack.env["CALLBACK_URL"]},
                "filesFrom": [{"configMapRef": {"name": n}} for n in names],
            },
        },
    )
    created = time.monotonic()
    staging = watcher.staging(name)
    done = watcher.callback(job_id, count)
    return {
        "time_to_created_s": round(created - started, 3),
        "time_to_staging_s": round(staging - started, 3),
        "time_to_callback_s": round(done - started, 3),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    stack = Stack(root, services=("operator", "kafka-bridge", "gateway"))
    _log(f"starting a stack in {root}")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            stack.up()  # inside the try: a failed start is torn down too
        watcher = Watcher(stack, args.timeout)
        base = int(time.time()) % 10**6 * 1000
        _log("warm-up: one 100-file job")
        gateway_run(stack, watcher, base, 100)
        gateway, direct = [], []
        for i in range(args.runs):
            _log(f"run {i + 1}/{args.runs}: gateway, {args.files} files")
            gateway.append(gateway_run(stack, watcher, base + 1 + 2 * i, args.files))
            _log(f"run {i + 1}/{args.runs}: direct to the Kubernetes API")
            direct.append(direct_run(stack, watcher, base + 2 + 2 * i, args.files))

        def median(rows: list[dict[str, float]], key: str) -> float:
            return round(statistics.median(r[key] for r in rows), 3)

        return {
            "files": args.files,
            "runs": args.runs,
            "time_to_202_s": median(gateway, "time_to_202_s"),
            "time_to_staging_s": median(gateway, "time_to_staging_s"),
            "time_to_callback_s": median(gateway, "time_to_callback_s"),
            "direct_time_to_staging_s": median(direct, "time_to_staging_s"),
            "gateway_over_direct": round(
                median(gateway, "time_to_staging_s") / median(direct, "time_to_staging_s"), 2
            ),
            "gateway": gateway,
            "direct": direct,
        }
    finally:
        if not args.keep:
            with contextlib.redirect_stdout(sys.stderr):
                stack.down()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--files", type=int, default=100_000, help="paths in the POST")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--root", help="stack directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    return parser


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(run(parser().parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
