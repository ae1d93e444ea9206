"""HAProxy from Debian's packages in front of the Scout nodes, as production has it.

The configuration is the Helm chart's own (``charts/mwa-staging/files/haproxy.cfg.tpl``,
rendered by :func:`devstack.chart.haproxy_config` with loopback addresses), so the
stack runs exactly what the chart deploys: HTTP mode, TLS on the front with a
certificate of the stack CA, round robin, active health checks, ``retries 3`` with
``option redispatch`` and the timeouts of docs/contracts.md (Scout API).

The real Scout API has no health endpoint, so the check asks ``GET /v1/fscache``
without a token and counts 200 or 401 as alive. Checks every 500 ms and 3 failures
mark a killed node down in about 1.5 s; meanwhile ``retry-on conn-failure
empty-response`` plus ``option redispatch`` resend a request that hit the dead node
to another one, so callers see no error. (Stage and cancel are safe to repeat:
staging a path twice is harmless.)

HAProxy runs in the foreground (``-db``) under the launcher's process control, and
the file is validated with ``haproxy -c`` before every start.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from devstack import chart
from devstack.components import http
from devstack.components.base import Component

if TYPE_CHECKING:
    from devstack.components.base import StackView as Stack

HAPROXY = "/usr/sbin/haproxy"


class Haproxy(Component):
    kind = "haproxy"

    def unavailable(self, stack: Stack) -> str | None:
        if not Path(HAPROXY).exists() and not shutil.which("haproxy"):
            return "haproxy is not installed (apt-get install haproxy)"
        return None

    def binary(self) -> str:
        return HAPROXY if Path(HAPROXY).exists() else (shutil.which("haproxy") or HAPROXY)

    def config_path(self, stack: Stack) -> Path:
        return stack.root / "haproxy" / "haproxy.cfg"

    def prepare(self, stack: Stack) -> None:
        hdir = stack.root / "haproxy"
        hdir.mkdir(exist_ok=True)
        pem = stack.pki.combined_pem(stack.pki.issue("haproxy", common_name="127.0.0.1"))
        nodes = [(name, "127.0.0.1", stack.port(name)) for name in stack.scout_names()]
        config = chart.haproxy_config(
            bind=f"127.0.0.1:{stack.port('haproxy')}",
            monitor_bind=f"127.0.0.1:{stack.port('haproxy-monitor')}",
            nodes=nodes,
            cert_file=str(pem),
            stats_socket=str(hdir / "admin.sock"),
            check_interval="500ms",
        )
        path = self.config_path(stack)
        path.write_text(config)
        result = subprocess.run(
            [self.binary(), "-c", "-q", "-f", str(path)], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(f"haproxy -c refused {path}:\n{result.stdout}{result.stderr}")

    def argv(self, stack: Stack) -> list[str]:
        return [self.binary(), "-db", "-f", str(self.config_path(stack))]

    def probe(self, stack: Stack) -> bool:
        context = stack.tls_context()
        code = http.status(stack.env_value("SCOUT_CACHESTATE_URL"), context=context)
        # 503: no node is up (yet). Without simulators that is all there will ever be.
        return code != 503 or not stack.scout_names(running_only=True)

    def ports(self, stack: Stack) -> list[int]:
        return [stack.port("haproxy"), stack.port("haproxy-monitor")]
