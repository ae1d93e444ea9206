"""Console script ``mwa-staging-gateway``: settings, logging, then the API under uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn

from mwa_staging.observability import setup_logging
from mwa_staging.settings import Settings, load
from mwa_staging_gateway.auth import Tokens

log = logging.getLogger("mwa_staging_gateway")


def check_auth(settings: Settings) -> str | None:
    """Why the gateway must not start as configured (None: it may).

    Authentication is on unless GATEWAY_AUTH=none says otherwise; then there
    must be a token to accept, or every request would be refused.
    """
    if settings.gateway_auth == "none":
        return None
    tokens = Tokens(settings.gateway_token_list(), settings.gateway_tokens_file)
    if not len(tokens):
        return (
            "GATEWAY_AUTH=token but no token is configured: set GATEWAY_TOKENS or"
            " GATEWAY_TOKENS_FILE (or GATEWAY_AUTH=none to serve without authentication)"
        )
    return None


def run() -> None:
    settings = load()
    setup_logging(settings.log_level, settings.log_format)
    problem = check_auth(settings)
    if problem:
        log.error("%s", problem)
        sys.exit(2)
    if settings.gateway_auth == "none":
        log.warning(
            "authentication is OFF (GATEWAY_AUTH=none): anyone who reaches port %d can create"
            " and delete staging jobs; use this only behind a private network",
            settings.gateway_port,
        )
    from mwa_staging_gateway.app import build_app

    uvicorn.run(
        build_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
    )
