"""One Scout API node: a thin forwarder to the banksia state service.

Usage::

    python -m devstack.sim.scout_node --port P --node-id N --state-url http://127.0.0.1:B

Production runs six Scout nodes behind HAProxy, all views of one archive. Here
each node process keeps no state: it passes every Scout request to banksia
with its node id in the ``X-Scout-Node`` header and relays the answer. So all
nodes share one archive, the control endpoint can tell which node served a
call, and killing one node process leaves the others working -- which is what
HAProxy's health checks and ``option redispatch`` are there to handle.

HAProxy's health check (``GET /v1/fscache`` without a token) is answered 401
right here, without a round trip: it only asks whether this process is alive.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from devstack.sim import _server
from devstack.sim.scout_api import FSCACHE, NODE_HEADER

log = logging.getLogger("devstack.sim.scout_node")

#: Request headers passed on to banksia (the rest are hop-by-hop or irrelevant).
_FORWARDED = ("Authorization", "Content-Type", "Accept")
#: Longer than HAProxy's 30 s server timeout, so HAProxy decides first.
_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=5)

_SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)


def make_app(node_id: int, state_url: str) -> web.Application:
    """A node application forwarding ``/v1/...`` to ``state_url``."""
    app = web.Application(client_max_size=_server.CLIENT_MAX_SIZE)
    base = state_url.rstrip("/")

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=200, keepalive_timeout=30)
        app[_SESSION] = aiohttp.ClientSession(connector=connector, timeout=_TIMEOUT)
        yield
        await app[_SESSION].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        if request.path == FSCACHE and "Authorization" not in request.headers:
            return web.json_response({"error": "unauthorized"}, status=401)
        headers = {h: request.headers[h] for h in _FORWARDED if h in request.headers}
        headers[NODE_HEADER] = str(node_id)
        body = await request.read()
        try:
            async with app[_SESSION].request(
                request.method,
                base + request.rel_url.path_qs,
                data=body or None,
                headers=headers,
            ) as answer:
                content_type = answer.headers.get("Content-Type", "application/json")
                if answer.content_length is not None:
                    payload = await answer.read()
                    return web.Response(
                        body=payload, status=answer.status, headers={"Content-Type": content_type}
                    )
                # A streamed answer (the hostile modes) is relayed as it comes, never held.
                relay = web.StreamResponse(
                    status=answer.status, headers={"Content-Type": content_type}
                )
                await relay.prepare(request)
                try:
                    async for chunk in answer.content.iter_any():
                        await relay.write(chunk)
                except (aiohttp.ClientError, TimeoutError, ConnectionError):
                    pass
                return relay
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("banksia unreachable: %r", exc)
            return web.json_response({"error": f"state service unreachable: {exc!r}"}, status=502)

    _server.add_healthz(app)
    app.router.add_route("*", "/v1/{tail:.*}", forward)
    app.cleanup_ctx.append(session_ctx)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = _server.base_parser("Simulated Scout API node (forwards to banksia).")
    parser.add_argument("--node-id", type=int, required=True, help="this node's number")
    parser.add_argument("--state-url", required=True, help="banksia's base URL")
    args = parser.parse_args(argv)
    logger = _server.setup_logging(f"scout-{args.node_id}", args.log_level)
    _server.run(make_app(args.node_id, args.state_url), args.host, args.port, logger)


if __name__ == "__main__":
    main()
