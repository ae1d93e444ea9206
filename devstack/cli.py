"""Command line of the development stack: ``python -m devstack up|down|status|env``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from devstack.build import REPO_DIR
from devstack.stack import SERVICE_KINDS, Stack, StackError


def _services(value: str) -> list[str]:
    return [s for s in (part.strip() for part in value.split(",")) if s]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "status", "env"))
    parser.add_argument("--root", type=Path, default=REPO_DIR / ".stack", help="stack directory")
    parser.add_argument("--scout-nodes", type=int, default=3, help="Scout simulator nodes (1-6)")
    parser.add_argument(
        "--services",
        type=_services,
        default=[],
        help=f"comma-separated subset of {','.join(SERVICE_KINDS)} to run from the working tree",
    )
    parser.add_argument(
        "--node",
        action="store_true",
        help="up: with a node (containerd, kubelet, controller-manager, scheduler)",
    )
    args = parser.parse_args(argv)
    services = args.services
    if args.command != "up" and not services:
        # down and status see every service that may have been started by an earlier up.
        services = list(SERVICE_KINDS)
    # Without --node, down/status/env follow the mode the root was brought up in.
    node = True if args.node else None
    stack = Stack(args.root, scout_nodes=args.scout_nodes, services=services, node=node)

    if args.command == "up":
        try:
            stack.up()
        except StackError as exc:
            print(f"devstack: {exc}", file=sys.stderr)
            print(
                f"devstack: logs are in {stack.root / 'logs'}; stop with `make down`",
                file=sys.stderr,
            )
            return 1
        _print_summary(stack)
    elif args.command == "down":
        stack.down()
        left = stack.leftovers()
        if left:
            print(f"devstack: still running after down: {', '.join(left)}", file=sys.stderr)
            return 1
        print(f"devstack: stopped the stack in {stack.root}")
    elif args.command == "status":
        running = 0
        for name, pid, ports in stack.status():
            state = f"running pid {pid}" if pid else "stopped"
            running += bool(pid)
            port_text = ",".join(str(p) for p in ports)
            print(f"{name:18} {state:20} {port_text}")
        return 0 if running else 3
    elif args.command == "env":
        path = stack.root / "env"
        if not path.exists():
            print(f"devstack: no {path}: run `make up` first", file=sys.stderr)
            return 1
        sys.stdout.write(path.read_text())
    return 0


def _hide_password(value: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host``."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", value)


def _print_summary(stack: Stack) -> None:
    env = stack.env
    skipped = stack.skipped
    print()
    print(f"Stack up in {stack.root}")
    for key in (
        "KUBECONFIG",
        "DATABASE_URL",
        "KAFKA_BOOTSTRAP",
        "KAFKA_SASL_BOOTSTRAP",
        "SCOUT_URL",
        "SIM_CONTROL_URL",
        "DATA_FILES_URL",
        "CALLBACK_URL",
        "STAGING_API_URL",
    ):
        # Passwords stay in the env file (mode 600), not on the terminal.
        print(f"  {key:22} {_hide_password(env[key])}")
    for name in stack.services:
        port = env[
            {"operator": "OPERATOR_HTTP_PORT", "gateway": "GATEWAY_PORT"}.get(
                name, "BRIDGE_HTTP_PORT"
            )
        ]
        state = f"skipped ({skipped[name]})" if name in skipped else f"http://127.0.0.1:{port}"
        print(f"  {name:22} {state}")
    for name, reason in skipped.items():
        if name not in stack.services:
            print(f"  skipped {name}: {reason}")
    print(f"  logs                   {stack.root / 'logs'}")
    print()
    print(f'Use it:  source {stack.root / "env"}  (then kubectl, helm, psql "$DATABASE_URL")')


if __name__ == "__main__":
    sys.exit(main())
