"""Where a callback may go: the allow-list and the address rules, checked on every hop.

A callback URL comes from whoever creates a StagingJob, and the operator POSTs
to it from inside the cluster with Basic-auth credentials: without rules it is
a way to make the operator reach (and send credentials to) anything it can
reach, the cloud's metadata service included. So, for every URL, at creation
(gateway and operator) and again before *each* attempt (a name can resolve
elsewhere by then; redirects are never followed, so an attempt is the only
hop):

* only ``http`` and ``https``, with a host name;
* no credentials in the URL (``https://user:pw@host/``): they would be sent
  to the client in the clear of the URL and logged by every proxy on the way;
* when ``CALLBACK_ALLOWED_HOSTS`` is set, the host must be on it (exact,
  case-insensitive; an entry ``.example.org`` also allows its subdomains).
  An empty list allows every host (the original's behaviour), but the address
  rules below still apply;
* the host, or every address its name resolves to, must not be loopback,
  link-local (which holds the cloud metadata address 169.254.169.254),
  a known metadata address, unspecified or multicast, unless the address lies
  in ``CALLBACK_ALLOWED_NETWORKS`` (CIDRs, e.g. ``127.0.0.0/8`` for a receiver
  on the same machine, as the local test stack has).

A name that does not resolve is not a refusal (DNS can be down for a while):
the attempt fails and is retried like any other.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``resolve(host, port)`` -> the addresses the name stands for (empty: unknown).
Resolver = Callable[[str, int], Awaitable[list[str]]]

#: Cloud metadata services outside the link-local range (Alibaba, Oracle, AWS IPv6).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("100.100.100.200", "192.0.0.192", "fd00:ec2::254")
)
#: Seconds a resolution may take before it counts as "did not resolve".
RESOLVE_TIMEOUT_SECONDS = 5.0


class CallbackRefused(Exception):
    """The callback URL breaks a rule; the message says which, never the URL's secrets."""


def parse_networks(entries: Iterable[str]) -> list[IPNetwork]:
    """The CIDRs of ``CALLBACK_ALLOWED_NETWORKS`` (a bare address is a /32 or /128)."""
    return [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip()]


def forbidden_kind(address: IPAddress) -> str | None:
    """Why an address is not a callback target by default, or None when it may be."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES or str(address) == "169.254.169.254":
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    return None


def _host_on_list(host: str, allowed_hosts: Sequence[str]) -> bool:
    for entry in allowed_hosts:
        entry = entry.strip().lower().rstrip(".")
        if not entry:
            continue
        if entry.startswith("."):
            if host.endswith(entry) or host == entry[1:]:
                return True
        elif host == entry:
            return True
    return False


def _check_address(address: IPAddress, allowed_networks: Sequence[IPNetwork], shown: str) -> None:
    kind = forbidden_kind(address)
    if kind is None or any(address in net for net in allowed_networks):
        return
    raise CallbackRefused(
        f"callback host {shown} is {kind}; such targets need CALLBACK_ALLOWED_NETWORKS"
    )


def check_url(
    url: str, allowed_hosts: Sequence[str], allowed_networks: Sequence[IPNetwork]
) -> tuple[str, int]:
    """The rules that need no DNS; returns (host, port). Raises CallbackRefused."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise CallbackRefused("the callback URL is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise CallbackRefused("the callback URL must be an absolute http or https URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise CallbackRefused(
            "the callback URL must not hold credentials (use spec.callback.secretRef)"
        )
    if allowed_hosts and not _host_on_list(host, allowed_hosts):
        raise CallbackRefused(
            f"callback host {host} is not among the allowed callback hosts (CALLBACK_ALLOWED_HOSTS)"
        )
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        _check_address(literal, allowed_networks, host)
    elif host == "localhost" or host.endswith(".localhost"):
        _check_address(ipaddress.ip_address("127.0.0.1"), allowed_networks, host)
    return host, port


async def system_resolve(host: str, port: int) -> list[str]:
    """Addresses of ``host`` from the system resolver; empty when it does not resolve."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECONDS
        )
    except (OSError, TimeoutError, UnicodeError):
        return []
    return [str(info[4][0]) for info in infos]


async def check_target(
    url: str,
    allowed_hosts: Sequence[str],
    allowed_networks: Sequence[IPNetwork],
    resolve: Resolver = system_resolve,
) -> None:
    """Every rule, the resolved addresses included. Raises CallbackRefused."""
    host, port = check_url(url, allowed_hosts, allowed_networks)
    try:
        ipaddress.ip_address(host.strip("[]"))
        return  # a literal address was checked by check_url
    except ValueError:
        pass
    for text in await resolve(host, port):
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            continue
        _check_address(address, allowed_networks, f"{host} ({address})")
