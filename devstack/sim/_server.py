"""What every simulator process shares: logging, readiness and a clean exit.

The simulators are run by the stack launcher as plain commands, so each one has
to (a) say when it is ready, (b) stop promptly and cleanly on SIGTERM and (c)
keep its logs on stderr where the launcher collects them. Doing that once here
keeps the simulator modules about their contract only.

:func:`run` is used by the ``__main__`` entry points; :func:`start` is the same
start-up without the signal handling, for tests and other programs that run an
app inside their own event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiohttp import web

#: Large enough for any Scout body we want to see (the 4 MB limit of the
#: contract is enforced by the Scout logic itself, with the status it defines).
CLIENT_MAX_SIZE = 64 * 1024 * 1024


def setup_logging(name: str, level: str = "INFO") -> logging.Logger:
    """Log to stderr with a timestamp and the simulator's name."""
    logging.basicConfig(
        stream=sys.stderr,
        level=level,
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )
    # aiohttp's access log would dominate under load; keep warnings only.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return logging.getLogger(f"devstack.sim.{name}")


async def healthz(_request: web.Request) -> web.Response:
    """Readiness probe for the launcher: the process is up and serving."""
    return web.json_response({"ok": True})


def add_healthz(app: web.Application) -> None:
    """Register ``GET /healthz``."""
    app.router.add_get("/healthz", healthz)


def base_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every simulator takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True, help="TCP port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser


async def start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving ``app``; return the runner and the port actually bound."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    return runner, bound


async def _serve(app: web.Application, host: str, port: int, log: logging.Logger) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner, bound = await start(app, host, port)
    log.info("listening on http://%s:%d", host, bound)
    # One line on stdout so a parent that asked for port 0 learns the port.
    print(f"listening on http://{host}:{bound}", flush=True)
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
    log.info("stopped")


def run(app: web.Application, host: str, port: int, log: logging.Logger) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then clean up and return."""
    asyncio.run(_serve(app, host, port, log))
