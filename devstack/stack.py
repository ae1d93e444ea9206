"""The development stack: real kube-apiserver, etcd, Kafka, PostgreSQL and HAProxy,
the simulators, and (on request) the operator and the Kafka bridge.

One implementation serves ``make up``/``make down`` (root ``.stack/``), the pytest
fixtures (a root under pytest's temporary directory) and later ``make demo`` and
``make bench``. Everything a stack owns lives under its root:

* ``ports.json`` -- every port, picked free at the first ``up`` and reused after, so
  nothing is fixed and several stacks run side by side;
* ``secrets.json`` -- credentials generated per stack (mode 0600);
* ``pki/`` -- its throwaway CA and certificates; ``kubeconfig``;
* ``pids/<name>.pid``, ``logs/<name>.log`` -- one per process;
* ``env`` -- ``export NAME=value`` lines for a shell (``source .stack/env``).

``up`` is idempotent: it starts what is not running and waits until everything is
ready. Components are brought up in parallel threads as soon as their dependencies
are ready (the JVM of Kafka and the API server start side by side), which is what
keeps a cached ``make up`` well under a minute on two cores.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from devstack import build, procs
from devstack.components import node as node_component
from devstack.components.apiserver import KubeApiserver
from devstack.components.base import Component
from devstack.components.etcd import Etcd
from devstack.components.haproxy import Haproxy
from devstack.components.kafka import Kafka
from devstack.components.node import Containerd, ControllerManager, Kubelet, Scheduler
from devstack.components.postgres import Postgres, database_url
from devstack.components.services import Gateway, KafkaBridge, Operator, Service
from devstack.components.sims import Banksia, Callback, DataFiles, ScoutNode
from devstack.pki import PKI

SERVICE_KINDS = ("operator", "kafka-bridge", "gateway")
SPAWNABLE_KINDS = ("operator", "kafka-bridge", "gateway", "scout", "data-files", "callback")

KAFKA_USER = "mwa-staging"
SCOUT_API_USER = "mwa-scout"
RESULT_USERNAME = "asvo"
DEFAULT_TOPIC = "mwa-staging"
#: The namespace the stack's HTTP gateway creates its StagingJobs in.
GATEWAY_NAMESPACE = "mwa-asvo"
#: The chart release a stack with a node runs (``make cluster``, tests/cluster).
NODE_RELEASE = "mwa-staging"


def release_port_key(release: str, component: str) -> str:
    """The ports.json key of a node release's component (its pods bind it on the host)."""
    return f"{release}/{component}"


SCOUT_PATHS = {
    "SCOUT_LOGIN_URL": "/v1/security/login",
    "SCOUT_QUERY_URL": "/v1/file",
    "SCOUT_STAGE_URL": "/v1/request/batchstage",
    "SCOUT_CANCEL_URL": "/v1/request/cancelbatchstage",
    "SCOUT_CACHESTATE_URL": "/v1/fscache",
}

INFRA = ("kube-apiserver", "postgres", "kafka", "haproxy", "data-files", "callback")


class StackError(RuntimeError):
    """The stack could not be brought up (the message says which part and why)."""


class _DependencyFailed(Exception):
    pass


def _password() -> str:
    return secrets.token_hex(16)


class Stack:
    """A development stack rooted at ``root``.

    ``scout_nodes`` Scout simulator nodes (1 to 6) sit behind HAProxy; ``services``
    is a subset of ``{"operator", "kafka-bridge", "gateway"}`` to run from the working tree.
    ``durable_db`` runs PostgreSQL with production durability (fsync, synchronous
    commit, full-page writes); the benchmarks want it, the tests do not need it.
    """

    def __init__(
        self,
        root: Path,
        *,
        scout_nodes: int = 3,
        services: Sequence[str] = (),
        node: bool | None = None,
        apply_crds: bool = True,
        durable_db: bool = False,
    ) -> None:
        if not 1 <= scout_nodes <= 6:
            raise ValueError("scout_nodes must be between 1 and 6")
        unknown = set(services) - set(SERVICE_KINDS)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}; known: {SERVICE_KINDS}")
        self.root = Path(root).resolve()
        self.scout_nodes = scout_nodes
        self.services = tuple(services)
        # node=None: whatever this root was brought up with last (down, status, env).
        if node is None:
            node = bool(self._load_json("mode.json").get("node", False))
        self.node = node
        #: Apply crds/ after the API server starts (as `make up` does); False: a clean cluster.
        self.apply_crds = apply_crds
        self.durable_db = durable_db
        self.pki = PKI(self.root / "pki")
        self._lock = threading.RLock()
        self._ports: dict[str, int] | None = None
        self._secrets: dict[str, str] | None = None
        self._spawned: dict[str, Component] = {}
        self._t0 = time.monotonic()
        self._skipped: dict[str, str] = {}

    # ----------------------------------------------------------------- state files

    def _load_json(self, name: str) -> dict[str, object]:
        path = self.root / name
        if path.exists():
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                return data
        return {}

    def _save_json(self, name: str, data: Mapping[str, object], mode: int = 0o644) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.chmod(mode)
        tmp.replace(path)

    def port_keys(self) -> list[str]:
        keys = ["etcd-client", "etcd-peer", "kube-apiserver", "postgres"]
        keys += ["kafka-plaintext", "kafka-sasl", "kafka-controller", "banksia"]
        keys += self.scout_names()
        keys += ["haproxy", "data-files", "callback", "operator-http", "kafka-bridge-http"]
        keys += ["gateway-http"]
        if self.node:
            keys += ["kubelet", "kubelet-healthz", "kube-controller-manager", "kube-scheduler"]
        return keys

    def _allocate(self, keys: Sequence[str]) -> None:
        """Pick free loopback ports for ``keys`` (held open together, so all differ)."""
        with self._lock:
            ports = self._port_map()
            missing = [k for k in keys if k not in ports]
            if not missing:
                return
            held = []
            try:
                for key in missing:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.bind(("127.0.0.1", 0))
                    held.append(sock)
                    ports[key] = sock.getsockname()[1]
            finally:
                for sock in held:
                    sock.close()
            self._save_json("ports.json", ports)

    def _port_map(self) -> dict[str, int]:
        if self._ports is None:
            self._ports = {k: int(str(v)) for k, v in self._load_json("ports.json").items()}
        return self._ports

    def port(self, key: str) -> int:
        """The port saved under ``key`` in ports.json (allocated on first use)."""
        with self._lock:
            if key not in self._port_map():
                self._allocate([key])
            return self._port_map()[key]

    def secret(self, key: str, factory: Callable[[], str] = _password) -> str:
        """A per-stack generated value from secrets.json (created on first use)."""
        with self._lock:
            if self._secrets is None:
                self._secrets = {k: str(v) for k, v in self._load_json("secrets.json").items()}
            if key not in self._secrets:
                self._secrets[key] = factory()
                self._save_json("secrets.json", self._secrets, mode=0o600)
            return self._secrets[key]

    @property
    def kafka_user(self) -> str:
        return KAFKA_USER

    # ----------------------------------------------------------------- components

    def scout_names(self, *, running_only: bool = False) -> list[str]:
        names = [f"scout-{i}" for i in range(1, self.scout_nodes + 1)]
        if running_only:
            names = [n for n in names if self.is_running(n)]
        return names

    def _components(self) -> dict[str, Component]:
        """Every component of this stack, in an order where dependencies come first."""
        comps: list[Component] = [
            Etcd("etcd"),
            KubeApiserver("kube-apiserver", ("etcd",)),
            Postgres("postgres"),
            Kafka("kafka"),
            Banksia("banksia", ("kafka",)),
        ]
        comps += [ScoutNode(name, ("banksia",)) for name in self.scout_names()]
        comps += [
            Haproxy("haproxy", tuple(self.scout_names())),
            DataFiles("data-files"),
            Callback("callback"),
        ]
        if self.node:
            comps += [
                Containerd("containerd"),
                ControllerManager("kube-controller-manager", ("kube-apiserver",)),
                Scheduler("kube-scheduler", ("kube-apiserver",)),
                Kubelet("kubelet", ("kube-apiserver", "containerd", "kube-controller-manager")),
            ]
        if "operator" in self.services:
            comps.append(Operator("operator", INFRA))
        if "kafka-bridge" in self.services:
            comps.append(KafkaBridge("kafka-bridge", INFRA))
        if "gateway" in self.services:
            comps.append(Gateway("gateway", INFRA))
        result = {c.name: c for c in comps}
        result.update(self._spawned)
        return result

    def component(self, name: str) -> Component:
        try:
            return self._components()[name]
        except KeyError:
            raise KeyError(f"no component {name!r} in this stack") from None

    # ----------------------------------------------------------------- environment

    @property
    def env(self) -> dict[str, str]:
        """Every variable written to ``root/env``."""
        scout_url = f"https://127.0.0.1:{self.port('haproxy')}"
        env = {
            "STACK_ROOT": str(self.root),
            "KUBECONFIG": str(self.root / "kubeconfig"),
            "DATABASE_URL": database_url(self),
            "KAFKA_BOOTSTRAP": f"127.0.0.1:{self.port('kafka-plaintext')}",
            "KAFKA_SASL_BOOTSTRAP": f"127.0.0.1:{self.port('kafka-sasl')}",
            "KAFKA_CA": str(self.pki.ca.cert),
            "KAFKA_USER": KAFKA_USER,
            "KAFKA_PASSWORD": self.secret("kafka-password"),
            "KAFKA_TOPIC": self.secret(
                "kafka-topic", lambda: os.environ.get("KAFKA_TOPIC", DEFAULT_TOPIC)
            ),
            "SCOUT_URL": scout_url,
        }
        env.update({name: scout_url + path for name, path in SCOUT_PATHS.items()})
        env.update(
            {
                "SCOUT_CA_FILE": str(self.pki.ca.cert),
                "SCOUT_API_USER": SCOUT_API_USER,
                "SCOUT_API_PASSWORD": self.secret("scout-api-password"),
                "SIM_CONTROL_URL": f"http://127.0.0.1:{self.port('banksia')}",
                "DATA_FILES_URL": f"http://127.0.0.1:{self.port('data-files')}/metadata/data_files",
                "CALLBACK_URL": f"http://127.0.0.1:{self.port('callback')}/callback",
                "CALLBACK_LOG": str(self.root / "callback" / "callback.jsonl"),
                "RESULT_USERNAME": RESULT_USERNAME,
                "RESULT_PASSWORD": self.secret("result-password"),
                "OPERATOR_HTTP_PORT": str(self.port("operator-http")),
                "BRIDGE_HTTP_PORT": str(self.port("kafka-bridge-http")),
                "GATEWAY_PORT": str(self.port("gateway-http")),
                "GATEWAY_NAMESPACE": GATEWAY_NAMESPACE,
                # The HTTP API (the original's), and a bearer token it accepts: the
                # gateway run from the working tree or, on a node, the release's pod.
                "STAGING_API_URL": f"http://127.0.0.1:{self.port(self._api_port_key())}",
                "STAGING_API_TOKEN": self.secret(
                    "gateway-token", lambda: secrets.token_urlsafe(32)
                ),
                **(node_component.node_env(self) if self.node else {}),
                "PATH": os.pathsep.join(
                    [
                        str(build.k8s_bin_dir()),
                        str(build.helm_bin_dir()),
                        os.environ.get("PATH", ""),
                    ]
                ),
            }
        )
        return env

    def _api_port_key(self) -> str:
        """Where STAGING_API_URL points: the host-run gateway unless the node's pod serves."""
        if self.node and "gateway" not in self.services:
            return release_port_key(NODE_RELEASE, "gateway")
        return "gateway-http"

    def env_value(self, name: str) -> str:
        return self.env[name]

    def service_env(self, kind: str) -> dict[str, str]:
        """The variables a service (``operator``, ``kafka-bridge``, ``gateway``) is started with."""
        if kind not in SERVICE_KINDS:
            raise ValueError(f"{kind!r} is not a service kind {SERVICE_KINDS}")
        env = self.env
        names = [
            "DATABASE_URL",
            "KUBECONFIG",
            "KAFKA_TOPIC",
            "KAFKA_USER",
            "KAFKA_PASSWORD",
            "KAFKA_CA",
            "SCOUT_URL",
            "SCOUT_CA_FILE",
            "SCOUT_API_USER",
            "SCOUT_API_PASSWORD",
            "DATA_FILES_URL",
            "RESULT_USERNAME",
            "RESULT_PASSWORD",
            "OPERATOR_HTTP_PORT",
            "BRIDGE_HTTP_PORT",
            "GATEWAY_PORT",
            "GATEWAY_NAMESPACE",
        ]
        result = {name: env[name] for name in names}
        if kind == "gateway":  # the token it accepts; no other process gets it
            result["GATEWAY_TOKENS"] = env["STAGING_API_TOKEN"]
        result.update(
            {
                "KAFKA_SERVER": env["KAFKA_BOOTSTRAP"],
                "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
                "KAFKA_GROUP": "mwa-staging-bridge",
                "LOG_LEVEL": "INFO",
            }
        )
        if kind in ("operator", "gateway"):
            # The callback receiver runs on loopback, which callbacks may only reach
            # when it is allowed explicitly (mwa_staging.callback_policy).
            result["CALLBACK_ALLOWED_NETWORKS"] = "127.0.0.0/8"
        return result

    def write_env(self) -> Path:
        """Write ``root/env``: ``export NAME=value`` lines, PATH prepended to the caller's."""
        lines = ["# written by python -m devstack up; source it: . " + str(self.root / "env")]
        for name, value in self.env.items():
            if name == "PATH":
                # The project's virtualenv too: its kubectl-stagingjob is a kubectl plugin.
                dirs = os.pathsep.join(
                    [
                        str(build.k8s_bin_dir()),
                        str(build.helm_bin_dir()),
                        str(Path(sys.executable).parent),
                    ]
                )
                lines.append(f'export PATH={shlex.quote(dirs)}:"$PATH"')
            else:
                lines.append(f"export {name}={shlex.quote(value)}")
        path = self.root / "env"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    def tls_context(self) -> ssl.SSLContext:
        """A client TLS context trusting the stack CA (HAProxy, Kafka, API server)."""
        return ssl.create_default_context(cafile=str(self.pki.ca.cert))

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the stack's kubectl with its KUBECONFIG; output captured as text."""
        env = dict(os.environ, KUBECONFIG=str(self.root / "kubeconfig"))
        result = subprocess.run(
            [str(build.kubectl_bin()), *args], env=env, capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, result.args, result.stdout, result.stderr
            )
        return result

    def log_path(self, name: str) -> Path:
        return procs.log_file(self.root, name)

    def log(self, message: str) -> None:
        print(f"[devstack {time.monotonic() - self._t0:5.1f}s] {message}", flush=True)

    # ----------------------------------------------------------------- lifecycle

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Serialise ``up``/``down`` of one root across processes (two ``make up``)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def up(self) -> None:
        """Start whatever is not running and wait until everything is ready."""
        self._t0 = time.monotonic()
        missing = build.missing(node=self.node)
        if missing:
            raise StackError(f"not built yet: {', '.join(missing)} (run `make build`)")
        with self._file_lock():
            for sub in ("pids", "logs", "callback"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            was_node = bool(self._load_json("mode.json").get("node", False))
            if self.node != was_node and self.is_running("kube-apiserver"):
                mode = "with" if was_node else "without"
                raise StackError(
                    f"the stack in {self.root} runs {mode} a node: stop it first (make down)"
                )
            self._save_json("mode.json", {"node": self.node})
            self._allocate(self.port_keys())
            self.pki.ensure_ca()
            # Extra instances made by spawn() are started by spawn()/start() only:
            # a test that stopped one on purpose must not see up() revive it.
            comps = [c for c in self._components().values() if c.name not in self._spawned]
            self._skipped = {}
            for comp in comps:
                reason = comp.unavailable(self)
                if reason:
                    self._skipped[comp.name] = reason
                    self.log(f"WARNING: skipping {comp.name}: {reason}")
            self.write_env()
            self._bring_up_all([c for c in comps if c.name not in self._skipped])
            self.write_env()
        self.log(f"stack ready in {time.monotonic() - self._t0:.1f} s; env: {self.root / 'env'}")

    @property
    def skipped(self) -> dict[str, str]:
        """Components the last ``up`` skipped, with the reason."""
        return dict(self._skipped)

    def _bring_up_all(self, comps: Sequence[Component]) -> None:
        futures: dict[str, Future[None]] = {}
        with ThreadPoolExecutor(max_workers=max(1, len(comps))) as pool:
            for comp in comps:
                deps = [futures[d] for d in comp.deps if d in futures]
                futures[comp.name] = pool.submit(self._bring_up, comp, deps)
        errors = []
        for name, future in futures.items():
            exc = future.exception()
            if exc is not None and not isinstance(exc, _DependencyFailed):
                errors.append(f"{name}: {exc}")
        if errors:
            raise StackError("the stack did not come up:\n" + "\n".join(errors))

    def _bring_up(self, comp: Component, deps: Sequence[Future[None]]) -> None:
        for dep in deps:
            if dep.exception() is not None:
                raise _DependencyFailed(comp.name)
        self._start_component(comp)

    def _start_component(self, comp: Component) -> None:
        if procs.find(self.root, comp.name) is None:
            comp.prepare(self)
            procs.start(
                self.root,
                comp.name,
                comp.argv(self),
                env=comp.env(self),
                cwd=comp.cwd(self),
                user=comp.user,
            )
            self.log(f"started {comp.name}")
        try:
            procs.wait_until(
                lambda: comp.probe(self),
                timeout=comp.ready_timeout,
                what=comp.name,
                alive=lambda: procs.find(self.root, comp.name) is not None,
            )
            comp.after_ready(self)
        except Exception as exc:
            log = procs.tail(self.log_path(comp.name))
            raise StackError(
                f"{exc}\n--- last lines of {self.log_path(comp.name)}:\n{log}"
            ) from exc
        self.log(f"{comp.name} ready")

    def _known_names(self) -> list[str]:
        names = list(self._components())
        pid_dir = self.root / "pids"
        if pid_dir.is_dir():
            names += sorted(p.stem for p in pid_dir.glob("*.pid") if p.stem not in names)
        return names

    def down(self) -> None:
        """Stop every process of this stack: services first, etcd last.

        With a node: the pods first (through the CRI, while containerd runs), then the
        kubelet and the control plane, containerd, then the host is put back
        (mounts, cgroups, sysctls; :func:`devstack.components.node.teardown`).
        """
        with self._file_lock():
            names = self._known_names()
            if self.node:
                self._down_node(names)
            last = [n for n in ("kube-apiserver", "etcd") if n in names]
            first = [n for n in names if n not in last and n not in self._infra_names()]
            middle = [n for n in names if n not in last and n not in first]
            for tier in (first, middle, ["kube-apiserver"], ["etcd"]):
                tier = [n for n in tier if n in names]
                with ThreadPoolExecutor(max_workers=max(1, len(tier))) as pool:
                    list(pool.map(self.stop, tier))
            if self.node:
                node_component.teardown(self)

    def _down_node(self, names: list[str]) -> None:
        # The kubelet first, so it restarts nothing; then every pod through the CRI.
        for name in ("kubelet", "kube-controller-manager", "kube-scheduler"):
            if name in names:
                self.stop(name)
        node_component.stop_pods(self)
        if "containerd" in names:
            self.stop("containerd")

    def _infra_names(self) -> set[str]:
        base = {"etcd", "kube-apiserver", "postgres", "kafka", "banksia", "haproxy"}
        base |= {"containerd", "kubelet", "kube-controller-manager", "kube-scheduler"}
        base |= {"data-files", "callback", *self.scout_names()}
        return base

    def stop(self, name: str) -> None:
        """Stop one process and wait until it is gone (graceful signal, then SIGKILL)."""
        comp = self._components().get(name)
        sig = comp.stop_signal if comp else signal.SIGTERM
        timeout = comp.stop_timeout if comp else 20.0
        procs.stop(self.root, name, sig=sig, timeout=timeout)

    def start(self, name: str) -> None:
        """(Re)start one process (if not running) and wait until it is ready."""
        comp = self.component(name)
        reason = comp.unavailable(self)
        if reason:
            raise StackError(f"cannot start {name}: {reason}")
        self._start_component(comp)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one process, as a crash would (no cleanup, no restart)."""
        procs.kill(self.root, name, sig)

    def is_running(self, name: str) -> bool:
        return procs.find(self.root, name) is not None

    def spawn(self, name: str, kind: str, extra_env: Mapping[str, str] | None = None) -> None:
        """Start an extra instance of a kind (e.g. a second bridge) and wait until ready.

        For services, the HTTP port variable gets a fresh port unless ``extra_env`` sets it.
        """
        if name in self._components() and name not in self._spawned:
            raise ValueError(f"{name!r} is already a component of this stack")
        extra = dict(extra_env or {})
        comp: Component
        if kind == "operator":
            comp = Operator(name, extra_env=extra)
        elif kind == "kafka-bridge":
            comp = KafkaBridge(name, extra_env=extra)
        elif kind == "gateway":
            comp = Gateway(name, extra_env=extra)
        elif kind == "scout":
            comp = ScoutNode(name)
        elif kind == "data-files":
            comp = DataFiles(name)
        elif kind == "callback":
            comp = Callback(name)
        else:
            raise ValueError(f"cannot spawn kind {kind!r}; spawnable: {SPAWNABLE_KINDS}")
        if not isinstance(comp, Service):
            comp.extra_env.update(extra)
        self._spawned[name] = comp
        self.start(name)

    # ----------------------------------------------------------------- inspection

    def status(self) -> list[tuple[str, int | None, list[int]]]:
        """(name, pid or None, ports) for every process of the stack."""
        rows = []
        comps = self._components()
        for name in self._known_names():
            proc = procs.find(self.root, name)
            comp = comps.get(name)
            no_pid_file = not procs.pid_file(self.root, name).exists()
            if isinstance(comp, Service) and proc is None and no_pid_file:
                continue  # a service this stack was not asked to run
            ports = comp.ports(self) if comp and self._port_map() else []
            rows.append((name, proc.pid if proc else None, ports))
        return rows

    def leftovers(self) -> list[str]:
        """What still runs or listens after ``down`` (should be empty)."""
        found = [f"process {name}" for name in self._known_names() if self.is_running(name)]
        ports = list(self._port_map().values())
        found += [f"port {port}" for port in sorted(procs.ports_listening(ports))]
        if self.node:
            found += node_component.leftovers(self)
        return found
