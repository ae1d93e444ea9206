"""``make demo``: show a person the whole system working on the local stack.

Applies the manifests in ``examples/`` (with the stack's callback URL filled
in), shows the API server refusing the invalid one, follows the jobs the way a
user would (``kubectl get stagingjobs`` redrawn as they progress), prints the
callbacks the client received, and leaves the stack running.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devstack.stack import Stack

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
NAMESPACE = "demo"
GOOD = ("observation-job.yaml", "files-job.yaml")
INVALID = "invalid-job.yaml"
FINAL_PHASES = {"Complete", "Failed"}
DEMO_DELAY_MS = 1000
DEMO_JITTER_MS = 8000


def _render(path: Path, env: dict[str, str]) -> str:
    """The manifest with ``${NAME}`` placeholders replaced from the stack's env."""
    text = path.read_text(encoding="utf-8")
    for name, value in env.items():
        text = text.replace("${" + name + "}", value)
    return text


def _kubectl(
    stack: Stack, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=stack.env["KUBECONFIG"])
    kubectl = stack.env.get("KUBECTL", "kubectl")
    return subprocess.run(
        [kubectl, *args], input=stdin, text=True, capture_output=True, env=env, check=False
    )


def _phases(stack: Stack) -> dict[str, str]:
    out = _kubectl(stack, "get", "stagingjobs", "-n", NAMESPACE, "-o", "json")
    if out.returncode != 0:
        return {}
    items = json.loads(out.stdout).get("items", [])
    return {i["metadata"]["name"]: i.get("status", {}).get("phase", "") for i in items}


def _set_archive_delay(env: dict[str, str], *, delay_ms: int, jitter_ms: int) -> None:
    """How long the archive simulator takes to bring a file online."""
    body = {"delay_ms": delay_ms, "jitter_ms": jitter_ms}
    httpx.post(f"{env['SIM_CONTROL_URL']}/control/delay", json=body, timeout=10).raise_for_status()


def _register_callback_user(env: dict[str, str]) -> None:
    """Tell the callback receiver to accept the credentials of the example's Secret."""
    base = env["CALLBACK_URL"].rsplit("/callback", 1)[0]
    body = {"user": env["CALLBACK_USERNAME"], "password": env["CALLBACK_PASSWORD"]}
    httpx.post(f"{base}/_control/users", json=body, timeout=10).raise_for_status()


def _log_size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


def _callbacks(log: Path, offset: int) -> list[dict[str, object]]:
    """Callback requests logged after byte ``offset`` of the receiver's log."""
    if not log.exists():
        return []
    with log.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def main(argv: list[str] | None = None) -> int:
    """Run the demo against the stack rooted at ``--root`` (already up)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=REPO / ".stack")
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args(argv)

    stack = Stack(args.root, services=("operator", "kafka-bridge"))
    stack.up()
    env = dict(stack.env)
    env["CALLBACK_USERNAME"] = "portal-" + secrets.token_hex(4)
    env["CALLBACK_PASSWORD"] = secrets.token_hex(16)
    _register_callback_user(env)
    started = time.time()
    callback_log = Path(env["CALLBACK_LOG"])
    log_offset = _log_size(callback_log)

    # Slow the archive down so that progress is visible (restored at the end).
    _set_archive_delay(env, delay_ms=DEMO_DELAY_MS, jitter_ms=DEMO_JITTER_MS)
    print("\n== Creating namespace 'demo' and applying examples/")
    _kubectl(stack, "create", "namespace", NAMESPACE)
    _kubectl(stack, "delete", "stagingjobs", "--all", "-n", NAMESPACE, "--wait=true")
    for name in sorted(p.name for p in EXAMPLES.glob("*secret*.yaml")):
        _kubectl(stack, "apply", "-n", NAMESPACE, "-f", "-", stdin=_render(EXAMPLES / name, env))
    for name in GOOD:
        result = _kubectl(
            stack, "apply", "-n", NAMESPACE, "-f", "-", stdin=_render(EXAMPLES / name, env)
        )
        print(f"$ kubectl apply -f examples/{name}\n{(result.stdout or result.stderr).strip()}")

    print(f"\n== An invalid manifest is refused by the API server: examples/{INVALID}")
    result = _kubectl(
        stack, "apply", "-n", NAMESPACE, "-f", "-", stdin=_render(EXAMPLES / INVALID, env)
    )
    print(f"$ kubectl apply -f examples/{INVALID}\n{(result.stderr or result.stdout).strip()}")

    print("\n== Watching the jobs (kubectl get stagingjobs -n demo)")
    deadline = time.monotonic() + args.timeout
    last = ""
    while time.monotonic() < deadline:
        table = _kubectl(stack, "get", "stagingjobs", "-n", NAMESPACE).stdout.strip()
        if table != last:
            print(f"\n[{time.time() - started:5.1f}s]\n{table}")
            last = table
        phases = _phases(stack)
        if phases and all(p in FINAL_PHASES for p in phases.values()):
            delivered = _callbacks(callback_log, log_offset)
            if len(delivered) >= len(phases):
                break
        time.sleep(0.5)  # pacing the display, not synchronisation
    else:
        print("the jobs did not all finish in time; see .stack/logs/", file=sys.stderr)

    _set_archive_delay(env, delay_ms=30, jitter_ms=20)
    print("\n== Callbacks the client received (CALLBACK_LOG)")
    for entry in _callbacks(callback_log, log_offset):
        print(json.dumps(entry.get("body")), "->", entry.get("status"))

    print(
        "\nThe stack is still running. Try:\n"
        "  source .stack/env && kubectl get stagingjobs -A\n"
        "  kubectl stagingjob files <name> -n demo --state error\n"
        "Stop everything with: make down"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
