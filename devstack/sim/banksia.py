"""Banksia: the simulated archive's state, its Kafka publisher and control endpoint.

Usage::

    python -m devstack.sim.banksia --port P --kafka-bootstrap HOST:PORT \\
        --user U --password PW [--token-ttl 300] [--delay-ms 30] [--jitter-ms 20]

One process holds the state so that every Scout node (``devstack.sim.scout_node``)
sees the same archive; the nodes forward Scout calls here. This process serves:

* ``/v1/...`` -- the Scout API (:mod:`devstack.sim.scout_api`), node from the
  ``X-Scout-Node`` header (0 when called directly);
* ``/control/...`` -- the control endpoint (:mod:`devstack.sim.control`);
* ``/healthz``.

A single background task moves due arrivals from the archive's heap to the
Kafka producer in bounded batches, yielding between batches so HTTP stays
responsive while 200,000 arrivals are published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from devstack.sim import _server
from devstack.sim.archive import Archive
from devstack.sim.control import Control
from devstack.sim.publisher import Publisher
from devstack.sim.scout_api import CallLog, Outage, ScoutApi, add_routes

log = logging.getLogger("devstack.sim.banksia")

#: Arrivals completed per turn of the publishing loop before yielding.
BATCH = 5000
#: Longest sleep of the loop: the producer is polled at least this often.
TICK = 0.1


class ArrivalLoop:
    """Completes due arrivals and publishes their messages."""

    def __init__(self, archive: Archive, publisher: Publisher) -> None:
        self.archive = archive
        self.publisher = publisher
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        """Something may be due earlier than the loop thinks: look again now."""
        self._wakeup.set()

    async def run(self) -> None:
        archive = self.archive
        while True:
            try:
                messages = archive.pop_due(limit=BATCH)
                if messages:
                    self.publisher.publish(messages)
                else:
                    self.publisher.service()
            except Exception:
                # A bug here must not silently end all publishing: say it, go on.
                log.exception("publishing loop")
            now = time.monotonic()
            due = archive.next_due()
            if not archive.paused and due is not None and due <= now:
                await asyncio.sleep(0)  # more due: let HTTP in, then go on
                continue
            timeout = TICK
            if not archive.paused and due is not None:
                timeout = min(TICK, due - now)
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)


def make_app(archive: Archive, publisher: Publisher) -> web.Application:
    """The banksia application; starts and stops the publishing loop with itself."""
    app = web.Application(client_max_size=_server.CLIENT_MAX_SIZE)
    calls = CallLog()
    outage = Outage()
    loop = ArrivalLoop(archive, publisher)
    archive.on_schedule = loop.wake
    _server.add_healthz(app)
    add_routes(app, ScoutApi(archive, calls, outage))
    Control(archive, calls, outage, publisher, loop.wake).add_routes(app)

    async def publishing(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(loop.run(), name="arrivals")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # Hand over whatever is due, then give the broker a moment.
        publisher.publish(archive.pop_due(limit=10**9))
        publisher.close(timeout=2.0)

    app.cleanup_ctx.append(publishing)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = _server.base_parser("Simulated Banksia archive: Scout state, Kafka, control.")
    parser.add_argument("--kafka-bootstrap", required=True, help="HOST:PORT, PLAINTEXT")
    parser.add_argument("--user", required=True, help="Scout API account")
    parser.add_argument("--password", required=True, help="Scout API password")
    parser.add_argument("--token-ttl", type=float, default=300.0, help="token lifetime, s")
    parser.add_argument("--delay-ms", type=int, default=30, help="staging delay, ms")
    parser.add_argument("--jitter-ms", type=int, default=20, help="random extra delay, ms")
    args = parser.parse_args(argv)
    logger = _server.setup_logging("banksia", args.log_level)
    archive = Archive(
        args.user,
        args.password,
        token_ttl=args.token_ttl,
        delay_ms=args.delay_ms,
        jitter_ms=args.jitter_ms,
    )
    publisher = Publisher(args.kafka_bootstrap)
    _server.run(make_app(archive, publisher), args.host, args.port, logger)


if __name__ == "__main__":
    main()
