"""Build (once) and locate the binaries of the development stack.

The stack runs real programs, not mocks: kube-apiserver, kubectl, etcd and helm are
built from their Go modules and Apache Kafka is run from its Maven Central jars,
because those are the registries this machine reaches (no release tarballs).

kubelet, kube-controller-manager and kube-scheduler (the node mode) come from the
same pinned ``k8s.io/kubernetes`` module as kube-apiserver, into a directory of
their own (``k8s-node-<version>``).

There is one place to pin each version: the ``require`` line of the tool module in
``devstack/gotools/<tool>/go.mod`` and the ``kafka.version`` property of
``devstack/kafka/pom.xml``. The cache directory of each build is keyed by that
version (``~/.cache/mwa-staging/bin/k8s-v1.34.4/``...), so changing a pin triggers a
rebuild and nothing else does. Outputs are written to a temporary directory and
renamed into place, so an interrupted build never looks finished.

Run as ``python -m devstack.build`` (``make build``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEVSTACK_DIR = Path(__file__).resolve().parent
REPO_DIR = DEVSTACK_DIR.parent
GOTOOLS_DIR = DEVSTACK_DIR / "gotools"
KAFKA_POM = DEVSTACK_DIR / "kafka" / "pom.xml"


def cache_dir() -> Path:
    """Root of the build cache: outside the repo so fresh clones and worktrees share it."""
    explicit = os.environ.get("MWA_STAGING_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "mwa-staging"


def go_module_version(tool: str, module: str) -> str:
    """The version a tool module's go.mod requires ``module`` at (the single pin)."""
    text = (GOTOOLS_DIR / tool / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if not match:
        raise RuntimeError(f"{module} is not required in devstack/gotools/{tool}/go.mod")
    return match.group(1)


def kafka_version() -> str:
    """The Kafka version pinned in the fetch-only pom."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", KAFKA_POM.read_text())
    if not match:
        raise RuntimeError("kafka.version is not set in devstack/kafka/pom.xml")
    return match.group(1).strip()


def k8s_version() -> str:
    return go_module_version("k8s", "k8s.io/kubernetes")


def etcd_version() -> str:
    return go_module_version("etcd", "go.etcd.io/etcd/server/v3")


def helm_version() -> str:
    return go_module_version("helm", "helm.sh/helm/v3")


def k8s_bin_dir() -> Path:
    """Directory holding kube-apiserver and kubectl (put first on the stack's PATH)."""
    return cache_dir() / "bin" / f"k8s-{k8s_version()}"


def k8s_node_bin_dir() -> Path:
    """kubelet, kube-controller-manager and kube-scheduler (the node mode).

    A directory of its own, not the kube-apiserver one: adding the node build must
    never replace a directory that running stacks use.
    """
    return cache_dir() / "bin" / f"k8s-node-{k8s_version()}"


def etcd_bin_dir() -> Path:
    return cache_dir() / "bin" / f"etcd-{etcd_version()}"


def helm_bin_dir() -> Path:
    return cache_dir() / "bin" / f"helm-{helm_version()}"


def kafka_libs_dir() -> Path:
    return cache_dir() / f"kafka-{kafka_version()}" / "libs"


def kube_apiserver_bin() -> Path:
    return k8s_bin_dir() / "kube-apiserver"


def kubectl_bin() -> Path:
    return k8s_bin_dir() / "kubectl"


def kubelet_bin() -> Path:
    return k8s_node_bin_dir() / "kubelet"


def kube_controller_manager_bin() -> Path:
    return k8s_node_bin_dir() / "kube-controller-manager"


def kube_scheduler_bin() -> Path:
    return k8s_node_bin_dir() / "kube-scheduler"


def etcd_bin() -> Path:
    return etcd_bin_dir() / "etcd"


def helm_bin() -> Path:
    return helm_bin_dir() / "helm"


@dataclass(frozen=True)
class GoBuild:
    """One ``go build`` of a pinned tool module into a version-keyed cache directory."""

    label: str
    tool: str
    packages: tuple[str, ...]
    outputs: tuple[str, ...]
    out_dir: Path
    ldflags: str
    expected_minutes: str
    #: Needed only by stacks with a node (``make cluster``, tests/cluster).
    node: bool = False

    def done(self) -> bool:
        return all((self.out_dir / name).is_file() for name in self.outputs)


def go_builds() -> list[GoBuild]:
    """The Go builds; the version stamps make ``/version`` report the real release."""
    kv = k8s_version()
    major, minor = kv.lstrip("v").split(".")[:2]
    k8s_ldflags = " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={kv}",
            f"-X k8s.io/component-base/version.gitMajor={major}",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
            f"-X k8s.io/client-go/pkg/version.gitVersion={kv}",
            f"-X k8s.io/client-go/pkg/version.gitMajor={major}",
            f"-X k8s.io/client-go/pkg/version.gitMinor={minor}",
        ]
    )
    return [
        GoBuild(
            label="kube-apiserver and kubectl",
            tool="k8s",
            packages=("k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kubectl"),
            outputs=("kube-apiserver", "kubectl"),
            out_dir=k8s_bin_dir(),
            ldflags=k8s_ldflags,
            expected_minutes="about 5",
        ),
        GoBuild(
            label="kubelet, kube-controller-manager and kube-scheduler",
            tool="k8s",
            packages=(
                "k8s.io/kubernetes/cmd/kubelet",
                "k8s.io/kubernetes/cmd/kube-controller-manager",
                "k8s.io/kubernetes/cmd/kube-scheduler",
            ),
            outputs=("kubelet", "kube-controller-manager", "kube-scheduler"),
            out_dir=k8s_node_bin_dir(),
            ldflags=k8s_ldflags,
            expected_minutes="about 5",
            node=True,
        ),
        GoBuild(
            label="etcd",
            tool="etcd",
            packages=("go.etcd.io/etcd/server/v3",),
            outputs=("etcd",),
            out_dir=etcd_bin_dir(),
            ldflags="-s -w",
            expected_minutes="about 1",
        ),
        GoBuild(
            label="helm",
            tool="helm",
            packages=("helm.sh/helm/v3/cmd/helm",),
            outputs=("helm",),
            out_dir=helm_bin_dir(),
            ldflags=f"-s -w -X helm.sh/helm/v3/internal/version.version={helm_version()}",
            expected_minutes="about 2",
        ),
    ]


def _go() -> str:
    found = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if not found:
        raise RuntimeError(
            "the Go toolchain is needed to build the stack's binaries (go not on PATH)"
        )
    return found


def _log(message: str) -> None:
    print(f"[build] {message}", flush=True)


def run_go_build(build: GoBuild) -> None:
    """Build into ``<out>.tmp`` then rename, so a half-built directory is never used."""
    tmp = build.out_dir.with_name(build.out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    env = dict(os.environ, CGO_ENABLED="0")
    output = str(tmp / build.outputs[0]) if len(build.packages) == 1 else str(tmp) + "/"
    cmd = [_go(), "build", "-trimpath", "-ldflags", build.ldflags, "-o", output, *build.packages]
    subprocess.run(cmd, cwd=GOTOOLS_DIR / build.tool, env=env, check=True)
    shutil.rmtree(build.out_dir, ignore_errors=True)
    tmp.rename(build.out_dir)


def kafka_done() -> bool:
    libs = kafka_libs_dir()
    return (libs / f"kafka_2.13-{kafka_version()}.jar").is_file() and any(
        libs.glob("log4j-core-*.jar")
    )


def fetch_kafka() -> None:
    """Copy the broker's runtime jars (and the log4j2 backend) from Maven Central."""
    libs = kafka_libs_dir()
    tmp = libs.with_name(libs.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    mvn = shutil.which("mvn")
    if not mvn:
        raise RuntimeError("Maven (mvn) is needed to fetch the Kafka jars")
    subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(KAFKA_POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ],
        check=True,
    )
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)


def build_all() -> None:
    """Build whatever is missing for the pinned versions; quick when all is cached."""
    for build in go_builds():
        if build.done():
            _log(f"{build.label}: cached in {build.out_dir}")
            continue
        _log(f"building {build.label} (first run, {build.expected_minutes} minutes)...")
        start = time.monotonic()
        run_go_build(build)
        _log(f"built {build.label} in {time.monotonic() - start:.0f} s")
    if kafka_done():
        _log(f"kafka {kafka_version()} jars: cached in {kafka_libs_dir()}")
    else:
        _log(f"fetching the Kafka {kafka_version()} jars from Maven Central (first run)...")
        start = time.monotonic()
        fetch_kafka()
        _log(f"fetched the Kafka jars in {time.monotonic() - start:.0f} s")


def missing(*, node: bool = False) -> list[str]:
    """Names of the builds not yet in the cache (the launcher refuses to start without them).

    ``node``: include the node binaries (a stack with a node needs them).
    """
    names = [b.label for b in go_builds() if not b.done() and (node or not b.node)]
    if not kafka_done():
        names.append(f"kafka {kafka_version()} jars")
    return names


def main() -> int:
    try:
        build_all()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"[build] failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
