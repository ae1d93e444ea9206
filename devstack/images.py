"""Container images built on this machine, with no registry: ``make image``, the node mode.

Every image the chart runs on the local node is built here and cached as a
``docker save`` archive under ``~/.cache/mwa-staging/images/``, named by a hash of
everything that goes into it, so a warm run builds nothing and a change to a
recipe (or to the project's source, for the project image) rebuilds only what
depends on it:

* ``base``: a minimal Debian bookworm root made by ``debootstrap --variant=minbase``
  from the Debian mirror apt is configured with, imported with ``docker import``;
* ``python``: Debian's python3.11 on the base (the ``PYTHON_IMAGE`` of the
  project's ``Dockerfile``);
* ``project``: the project's own ``Dockerfile``, as a user builds it;
* ``haproxy``, ``postgresql``, ``pause``: stand-ins for the third-party images the
  chart and the kubelet use, built from Debian's packages
  (``devstack/image-recipes/<name>/Dockerfile``; each says how it differs from
  the upstream image).

The builds run on a private Docker engine: Debian's dockerd on its own Debian
containerd, both with their root, state and sockets under
``~/.cache/mwa-staging/engine/`` (no host-wide daemon, no bridge network,
``--network host`` builds), started for the build and stopped after it. A file
lock serialises builders (``make cluster`` and the test suite at once).

Run as ``python -m devstack.images [--project-only]`` (``make image``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from devstack import build, host, procs

RECIPES_DIR = build.DEVSTACK_DIR / "image-recipes"
SUITE = "bookworm"
#: Bump when the way the base root is made changes (the hash covers the rest).
BASE_RECIPE_VERSION = "1"
#: The paths of the project's build context (what .dockerignore lets through).
PROJECT_CONTEXT = (
    "pyproject.toml",
    "README.md",
    "mwa_staging",
    "operator",
    "kafka_bridge",
    "mwa_staging_gateway",
    "devstack",
)
IGNORED_PARTS = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageError(RuntimeError):
    """An image could not be built (the message says which and why)."""


def images_dir() -> Path:
    return build.cache_dir() / "images"


def engine_dir() -> Path:
    return build.cache_dir() / "engine"


def _log(message: str) -> None:
    print(f"[images] {message}", flush=True)


# --------------------------------------------------------------------------- hashing


def _hash_files(digest: hashlib._Hash, root: Path, paths: Iterable[str]) -> None:
    """Feed the names, modes and contents of ``paths`` (files or trees) under ``root``."""
    for rel in sorted(paths):
        top = root / rel
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            parts = set(path.relative_to(root).parts)
            if (
                parts & IGNORED_PARTS
                or path.suffix == ".pyc"
                or any(part.endswith(".egg-info") for part in parts)
            ):
                continue
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(oct(path.stat().st_mode & 0o777).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")


def apt_mirror() -> str:
    """The Debian mirror apt is configured with (deb822 .sources or sources.list)."""
    candidates = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in candidates:
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            match = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", line + " ")
            if match and "security" not in match.group(1):
                return match.group(1)
    raise ImageError("no Debian mirror for bookworm in /etc/apt/sources.list(.d)")


@dataclass(frozen=True)
class Image:
    """One image: its name, tag (an input hash) and cached archive."""

    key: str
    repository: str
    tag: str

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def archive(self) -> Path:
        return images_dir() / f"{self.key}-{self.tag}.tar"

    def cached(self) -> bool:
        return self.archive.is_file()


def _tag(digest: hashlib._Hash) -> str:
    return digest.hexdigest()[:16]


def base_image() -> Image:
    digest = hashlib.sha256(
        json.dumps([BASE_RECIPE_VERSION, SUITE, "minbase", apt_mirror()]).encode()
    )
    return Image("base", "mwa-staging-local/debian", _tag(digest))


EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")


def _extra_cas() -> list[Path]:
    """CA certificates this machine adds to its trust store (a recipe may want them)."""
    return sorted(EXTRA_CA_DIR.rglob("*.crt")) if EXTRA_CA_DIR.is_dir() else []


def recipe_image(name: str, base: Image) -> Image:
    digest = hashlib.sha256(base.tag.encode())
    _hash_files(digest, RECIPES_DIR, [name])
    if name == "python":
        for ca in _extra_cas():
            digest.update(ca.read_bytes())
    return Image(name, f"mwa-staging-local/{name}", _tag(digest))


def project_image(python: Image) -> Image:
    digest = hashlib.sha256(python.tag.encode())
    _hash_files(digest, build.REPO_DIR, ["Dockerfile", ".dockerignore", *PROJECT_CONTEXT])
    return Image("project", "mwa-staging", _tag(digest))


@dataclass(frozen=True)
class ImageSet:
    """Every image of the node mode, by role."""

    base: Image
    python: Image
    project: Image
    haproxy: Image
    postgresql: Image
    pause: Image

    def all(self) -> list[Image]:
        return [self.base, self.python, self.project, self.haproxy, self.postgresql, self.pause]

    def for_node(self) -> list[Image]:
        """What the node's containerd needs (the base and the Python base are only layers)."""
        return [self.project, self.haproxy, self.postgresql, self.pause]


def image_set() -> ImageSet:
    base = base_image()
    python = recipe_image("python", base)
    return ImageSet(
        base=base,
        python=python,
        project=project_image(python),
        haproxy=recipe_image("haproxy", base),
        postgresql=recipe_image("postgresql", base),
        pause=recipe_image("pause", base),
    )


# --------------------------------------------------------------------------- engine


def containerd_config(root: Path, state: Path, socket: Path, extra: str = "") -> str:
    """A containerd 1.6 configuration with its own root, state and sockets."""
    return "\n".join(
        [
            "version = 2",
            f'root = "{root}"',
            f'state = "{state}"',
            "oom_score = 0",
            "[grpc]",
            f'  address = "{socket}"',
            "[ttrpc]",
            f'  address = "{socket}.ttrpc"',
            "[debug]",
            '  level = "warn"',
            "[metrics]",
            '  address = ""',
            extra,
        ]
    )


def docker_bin() -> str:
    """Debian's docker client (matches its dockerd), else any docker on PATH."""
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).exists():
            return candidate
    raise ImageError("no docker client: apt-get install docker.io (make apt)")


def _need(binary: str, package: str) -> str:
    found = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if Path(p).exists()), None
    )
    if not found:
        raise ImageError(f"{binary} is missing: apt-get install {package} (make apt)")
    return found


class Engine:
    """A private containerd + dockerd for image builds (started by :meth:`running`)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.dir = directory or engine_dir()
        self.containerd_socket = self.dir / "run" / "containerd.sock"
        self.docker_socket = self.dir / "run" / "docker.sock"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DOCKER_HOST"] = f"unix://{self.docker_socket}"
        env["DOCKER_BUILDKIT"] = "0"
        env.pop("DOCKER_CONTEXT", None)
        return env

    def docker(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([docker_bin(), *args], env=self.env, text=True, check=False, **kwargs)  # type: ignore[call-overload]

    @contextlib.contextmanager
    def running(self) -> Iterator[Engine]:
        containerd = _need("containerd", "containerd")
        dockerd = _need("dockerd", "docker.io")
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                for name in ("containerd", "dockerd"):
                    procs.stop(self.dir, name)  # a builder killed half way
                run = self.dir / "run"
                host.unmount_under(run)
                shutil.rmtree(run, ignore_errors=True)
                run.mkdir(parents=True)
                config = self.dir / "containerd.toml"
                config.write_text(
                    containerd_config(
                        self.dir / "containerd",
                        run / "containerd-state",
                        self.containerd_socket,
                        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
                    )
                )
                procs.start(
                    self.dir,
                    "containerd",
                    [containerd, "--config", str(config)],
                    env=dict(os.environ),
                )
                procs.wait_until(
                    self.containerd_socket.exists,
                    timeout=30,
                    what="build containerd",
                    alive=lambda: procs.find(self.dir, "containerd") is not None,
                )
                procs.start(
                    self.dir,
                    "dockerd",
                    [
                        dockerd,
                        f"--data-root={self.dir / 'docker'}",
                        f"--exec-root={run / 'docker-exec'}",
                        f"--pidfile={run / 'docker.pid'}",
                        f"--host=unix://{self.docker_socket}",
                        f"--containerd={self.containerd_socket}",
                        "--storage-driver=overlay2",
                        "--iptables=false",
                        "--ip6tables=false",
                        "--ip-forward=false",
                        "--ip-masq=false",
                        "--bridge=none",
                        "--userland-proxy=false",
                        "--oom-score-adjust=0",
                        "--log-level=warn",
                        f"--config-file={self._daemon_json()}",
                    ],
                    env=dict(os.environ),
                )
                procs.wait_until(
                    lambda: self.docker("version", capture_output=True).returncode == 0,
                    timeout=60,
                    what="build dockerd",
                    alive=lambda: procs.find(self.dir, "dockerd") is not None,
                )
                yield self
            except procs.ProcessError as exc:
                logs = "\n".join(
                    procs.tail(procs.log_file(self.dir, n), 15) for n in ("containerd", "dockerd")
                )
                raise ImageError(f"the build engine did not start: {exc}\n{logs}") from exc
            finally:
                procs.stop(self.dir, "dockerd", timeout=30)
                procs.stop(self.dir, "containerd", timeout=30)
                # dockerd leaves its netns/default bind mount behind.
                host.unmount_under(self.dir / "run")
                shutil.rmtree(self.dir / "run", ignore_errors=True)
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _daemon_json(self) -> Path:
        path = self.dir / "daemon.json"
        path.write_text(json.dumps({"features": {"buildkit": False}}) + "\n")
        return path

    def has(self, image: Image) -> bool:
        return self.docker("image", "inspect", image.ref, capture_output=True).returncode == 0

    def load(self, image: Image) -> None:
        """Make a cached archive available to this engine (a layer of the next build)."""
        if not self.has(image):
            result = self.docker("load", "-q", "-i", str(image.archive), capture_output=True)
            if result.returncode != 0:
                raise ImageError(f"docker load {image.archive} failed: {result.stderr}")

    def save(self, image: Image) -> None:
        images_dir().mkdir(parents=True, exist_ok=True)
        tmp = image.archive.with_suffix(".tmp")
        result = self.docker("save", "-o", str(tmp), image.ref, capture_output=True)
        if result.returncode != 0:
            raise ImageError(f"docker save {image.ref} failed: {result.stderr}")
        tmp.rename(image.archive)

    def size(self, image: Image) -> int:
        result = self.docker(
            "image", "inspect", "--format", "{{.Size}}", image.ref, capture_output=True
        )
        return int(result.stdout.strip() or 0)


# --------------------------------------------------------------------------- builds


def _debootstrap(engine: Engine, image: Image) -> None:
    debootstrap = _need("debootstrap", "debootstrap")
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=build.cache_dir()))
    rootfs = work / "rootfs"
    try:
        result = subprocess.run(
            [debootstrap, "--variant=minbase", SUITE, str(rootfs), apt_mirror()],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            log = rootfs / "debootstrap" / "debootstrap.log"
            detail = log.read_text()[-2000:] if log.exists() else result.stderr[-2000:]
            raise ImageError(f"debootstrap failed:\n{detail}")
        # Smaller and reproducible enough: no apt lists, caches or logs of the build.
        for sub in ("var/lib/apt/lists", "var/cache/apt", "var/log"):
            for child in (rootfs / sub).glob("*"):
                if child.is_file():
                    child.unlink()
        tar = subprocess.Popen(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
        )
        imported = subprocess.run(
            [
                docker_bin(),
                "import",
                "--change",
                f"ENV PATH={IMAGE_PATH}",
                "--change",
                'CMD ["/bin/bash"]',
                "-",
                image.ref,
            ],
            stdin=tar.stdout,
            env=engine.env,
            capture_output=True,
            text=True,
            check=False,
        )
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise ImageError(f"docker import of the base root failed: {imported.stderr}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _docker_build(
    engine: Engine, image: Image, context: Path, dockerfile: Path, args: dict[str, str]
) -> None:
    cmd = ["build", "--network", "host", "--pull=false", "-t", image.ref, "-f", str(dockerfile)]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    log = images_dir() / f"{image.key}-{image.tag}.log"
    images_dir().mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        result = engine.docker(*cmd, str(context), stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise ImageError(f"docker build of {image.ref} failed:\n{procs.tail(log, 40)}")


def ensure(images: ImageSet | None = None, *, only: Iterable[str] | None = None) -> ImageSet:
    """Build and cache whatever image is missing; quick (no engine) when all are cached."""
    images = images or image_set()
    wanted = set(only) if only is not None else {i.key for i in images.all()}
    deps = {"python": {"base"}, "project": {"python", "base"}}
    for key in list(wanted):
        wanted |= deps.get(key, {"base"} if key != "base" else set())
    todo = [i for i in images.all() if i.key in wanted and not i.cached()]
    if not todo:
        return images
    _log("building " + ", ".join(i.ref for i in todo) + " (first run or changed recipe)")
    with Engine().running() as engine:
        for image in images.all():
            if image not in todo:
                continue
            start = time.monotonic()
            if image.key == "base":
                _debootstrap(engine, image)
            else:
                for dep in deps.get(image.key, {"base"}):
                    dep_image = getattr(images, dep)
                    if not engine.has(dep_image):
                        engine.load(dep_image)
                base_args = {"BASE_IMAGE": images.base.ref}
                if image.key == "project":
                    _docker_build(
                        engine,
                        image,
                        build.REPO_DIR,
                        build.REPO_DIR / "Dockerfile",
                        {"PYTHON_IMAGE": images.python.ref},
                    )
                else:
                    with tempfile.TemporaryDirectory(dir=build.cache_dir()) as tmp:
                        context = Path(tmp) / "context"
                        shutil.copytree(RECIPES_DIR / image.key, context)
                        (context / "extra-ca").mkdir()
                        if image.key == "python":
                            for ca in _extra_cas():
                                shutil.copy(ca, context / "extra-ca" / ca.name)
                        _docker_build(engine, image, context, context / "Dockerfile", base_args)
            engine.save(image)
            elapsed = time.monotonic() - start
            size = engine.size(image) / 1e6
            _log(f"built {image.ref} in {elapsed:.0f} s, {size:.0f} MB")
            _record(image, elapsed, size)
        _forget_old(engine, images)
    _prune_archives(images)
    return images


#: Archives kept per image (other worktrees may use older sources at the same time).
KEEP_ARCHIVES = 3


def _prune_archives(images: ImageSet) -> None:
    """Keep the newest few archives of each image (each project build adds ~0.5 GB)."""
    for image in images.all():
        old = sorted(
            images_dir().glob(f"{image.key}-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True
        )
        for path in old[KEEP_ARCHIVES:]:
            if path != image.archive:
                path.unlink(missing_ok=True)
                path.with_suffix(".log").unlink(missing_ok=True)


def _forget_old(engine: Engine, images: ImageSet) -> None:
    """Drop the engine's other tags of our repositories (their archives are the cache)."""
    current = {i.ref for i in images.all()}
    listed = engine.docker(
        "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", capture_output=True
    )
    repositories = {i.repository for i in images.all()}
    stale = [
        ref
        for ref in listed.stdout.split()
        if ref.rsplit(":", 1)[0] in repositories and ref not in current
    ]
    if stale:
        engine.docker("image", "rm", *stale, capture_output=True)
    engine.docker("image", "prune", "-f", capture_output=True)


def _record(image: Image, seconds: float, megabytes: float) -> None:
    """Append the build's figures to images/builds.jsonl (the README quotes them)."""
    line = {
        "image": image.ref,
        "seconds": round(seconds, 1),
        "megabytes": round(megabytes, 1),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with (images_dir() / "builds.jsonl").open("a") as handle:
        handle.write(json.dumps(line) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.images", description=__doc__)
    parser.add_argument(
        "--project-only", action="store_true", help="only the project image and its bases"
    )
    args = parser.parse_args(argv)
    try:
        images = ensure(only=["project"] if args.project_only else None)
    except ImageError as exc:
        print(f"[images] failed: {exc}", file=sys.stderr)
        return 1
    for image in images.all():
        _log(f"{image.key:10} {image.ref:45} {image.archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
