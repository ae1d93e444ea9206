"""``kubectl stagingjob files NAME [-n NS] [--state pending|ready|error]``: a job's files.

The per-file view people need ("which files are still missing?") cannot live in
the StagingJob's status (a job may have 100,000 files; an object is capped near
1.5 MiB), so this read-only kubectl plugin reads it from the operator's
database: it resolves NAME to the object's uid through the Kubernetes API (the
database is keyed by uid, so a deleted-and-recreated name is never confused),
then streams the job's files with a server-side cursor.

Configuration: KUBECONFIG (or ``--kubeconfig``) and DATABASE_URL (or the DB*
variables), as for the operator. Output columns: STATE, TIME (of the last
change, UTC), PATH, ERROR.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO, cast

import kubernetes
from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from mwa_staging.db import jobs_queries, status_queries
from mwa_staging.db.connect import connect
from mwa_staging.kube import GROUP, PLURAL, VERSION, api_client
from mwa_staging.settings import Settings
from mwa_staging.status import timestamp
from mwa_staging.vocabulary import FileState

#: How the listing names each file state (``--state`` takes the same words).
FILE_STATE_NAMES = {int(s): s.name.lower() for s in FileState}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kubectl stagingjob",
        description="Read-only views of StagingJobs that do not fit in their status.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    files = sub.add_parser("files", help="list a job's files with their state, time and error")
    files.add_argument("name", help="the StagingJob's name")
    files.add_argument("-n", "--namespace", help="its namespace (default: the context's)")
    files.add_argument(
        "--state", choices=sorted(FILE_STATE_NAMES.values()), help="only files in this state"
    )
    files.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG)")
    files.add_argument("--no-headers", action="store_true", help="do not print the header line")
    return parser.parse_args(argv)


def current_namespace(kubeconfig: str | None) -> str:
    """The namespace of the kubeconfig's current context, else ``default``."""
    try:
        _, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
    except Exception:
        return "default"
    return str((active or {}).get("context", {}).get("namespace") or "default")


def format_row(path: str, state: int, when: object, error: str | None) -> str:
    state_name = FILE_STATE_NAMES.get(state, str(state))
    stamp = timestamp(when) if when is not None else "-"  # type: ignore[arg-type]
    line = f"{state_name:<8} {stamp or '-':<20} {path}"
    if error:
        line += f"  {error}"
    return line


def list_files(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    kubeconfig = args.kubeconfig or settings.kubeconfig
    namespace = args.namespace or current_namespace(kubeconfig)
    api = CustomObjectsApi(api_client(kubeconfig))
    try:
        obj = api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, args.name, _request_timeout=10
        )
    except ApiException as exc:
        if exc.status == 404:
            print(
                f'Error: stagingjob "{args.name}" not found in namespace "{namespace}"',
                file=sys.stderr,
            )
            return 1
        print(f"Error: reading stagingjob {args.name}: HTTP {exc.status}", file=sys.stderr)
        return 1
    uid = cast(dict[str, Any], obj)["metadata"]["uid"]
    conn = connect(settings.dsn(), application_name="kubectl-stagingjob")
    try:
        conn.set_session(readonly=True)
        with conn.cursor() as cur:
            job = status_queries.get_job_by_uid(cur, uid)
        if job is None:
            print(
                f"Error: the operator has not recorded stagingjob {args.name} (yet)",
                file=sys.stderr,
            )
            return 1
        state = FileState[args.state.upper()] if args.state else None
        if not args.no_headers:
            out.write(f"{'STATE':<8} {'TIME':<20} PATH  ERROR\n")
        for path, file_state, updated, error in jobs_queries.iter_files(conn, job.id, state):
            out.write(format_row(path, file_state, updated, error) + "\n")
        conn.rollback()
    finally:
        conn.close()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``kubectl-stagingjob``."""
    args = parse_args(argv)
    settings = Settings()
    try:
        code = list_files(args, settings, sys.stdout)
    except BrokenPipeError:  # e.g. piped into head
        code = 0
    sys.exit(code)
