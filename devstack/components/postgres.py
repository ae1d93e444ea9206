"""PostgreSQL 15 from Debian's packages, as a throwaway cluster in the stack directory.

``initdb`` makes a cluster under ``root/postgres/data`` (not the system cluster),
listening on its own loopback port with its unix socket under the stack root, and
without fsync (a dev stack does not need durability; it is faster) unless the
stack is ``durable_db`` (the benchmarks: fsync, synchronous commit and full-page
writes on, as in production). A database
``mwa_staging`` owned by the password user ``mwa`` is created once it runs.

PostgreSQL refuses to run as root, and the launcher runs as root in CI. Then the
cluster runs as the ``postgres`` system user that Debian's package creates (the
``user=`` of ``subprocess.Popen``, no wrapper process), its directory is chowned to
it, and the ancestors of the stack root get the search bit (``o+x``, not read) where
they lack it -- pytest's ``/tmp/pytest-of-root`` is 0700 -- so it can reach its data.
As any other user, the cluster simply runs as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg2
from psycopg2 import sql

from devstack import procs
from devstack.components.base import Component

if TYPE_CHECKING:
    from devstack.components.base import StackView as Stack

PG_BIN = Path("/usr/lib/postgresql/15/bin")
DATABASE = "mwa_staging"
DB_USER = "mwa"
SUPERUSER = "postgres"


def _service_user() -> str | None:
    """The user to run the cluster as: ``postgres`` when we are root, else ourselves."""
    return "postgres" if os.geteuid() == 0 else None


def _make_traversable(path: Path) -> None:
    """Give ``other`` the search bit on every ancestor that lacks it."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


class Postgres(Component):
    kind = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: do not wait for clients to leave

    def __init__(self, name: str, deps: tuple[str, ...] = ()) -> None:
        super().__init__(name, deps)
        self.user = _service_user()

    def unavailable(self, stack: Stack) -> str | None:
        if not (PG_BIN / "postgres").exists():
            return f"{PG_BIN}/postgres is missing (apt-get install postgresql-15)"
        return None

    def base(self, stack: Stack) -> Path:
        return stack.root / "postgres"

    def data(self, stack: Stack) -> Path:
        return self.base(stack) / "data"

    def prepare(self, stack: Stack) -> None:
        base = self.base(stack)
        (base / "run").mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            _make_traversable(stack.root)
            for path in [base, base / "run"]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        base.chmod(0o700)
        if (self.data(stack) / "PG_VERSION").exists():
            return
        shutil.rmtree(self.data(stack), ignore_errors=True)
        pwfile = base / "superuser-password"
        pwfile.write_text(stack.secret("postgres-superuser-password") + "\n")
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        try:
            subprocess.run(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.data(stack)),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                cwd=base,
                **procs.drop_privileges(self.user),
                check=True,
                capture_output=True,
                text=True,
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed:\n{exc.stdout}\n{exc.stderr}") from exc
        finally:
            pwfile.unlink(missing_ok=True)

    def argv(self, stack: Stack) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(stack.port("postgres")),
            "unix_socket_directories": str(self.base(stack) / "run"),
            **durability(stack.durable_db),
            "shared_buffers": "64MB",
            "max_connections": "200",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        argv = [str(PG_BIN / "postgres"), "-D", str(self.data(stack))]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def cwd(self, stack: Stack) -> Path:
        return self.base(stack)

    def _connect(self, stack: Stack, dbname: str = "postgres") -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host="127.0.0.1",
            port=stack.port("postgres"),
            user=SUPERUSER,
            password=stack.secret("postgres-superuser-password"),
            dbname=dbname,
            connect_timeout=2,
        )

    def probe(self, stack: Stack) -> bool:
        self._connect(stack).close()
        return True

    def after_ready(self, stack: Stack) -> None:
        conn = self._connect(stack)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                password = stack.secret("postgres-password")
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DB_USER,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(
                    sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(DB_USER), sql.Literal(password)
                    )
                )
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if not cur.fetchone():
                    cur.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(DATABASE), sql.Identifier(DB_USER)
                        )
                    )
        finally:
            conn.close()

    def ports(self, stack: Stack) -> list[int]:
        return [stack.port("postgres")]


def durability(durable: bool) -> dict[str, str]:
    """The durability settings: production's (all on) or the test stack's (all off)."""
    value = "on" if durable else "off"
    return {"fsync": value, "synchronous_commit": value, "full_page_writes": value}


def database_url(stack: Stack) -> str:
    password = stack.secret("postgres-password")
    return f"postgresql://{DB_USER}:{password}@127.0.0.1:{stack.port('postgres')}/{DATABASE}"
