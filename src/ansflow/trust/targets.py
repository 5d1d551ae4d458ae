"""Where the service connects for a pipeline (``notify``'s channels, commit statuses):
by default anywhere; with ``ANSFLOW_NOTIFY_DENY_PRIVATE=1`` never to a private, loopback,
link-local or otherwise non-public address (a pipeline's author must not reach the
service's own network through it).

The host is resolved once, every address it resolves to is checked (one private address
refuses the host: a name that answers both is how DNS rebinding starts), and the
connection is then made to the checked address itself, with the host name kept for the
HTTP ``Host`` header and for TLS (SNI and certificate checks). Redirects are never followed
(a 3xx answer is a failed delivery), so a redirect cannot lead to a refused address either.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(Exception):
    """The target resolves to an address the deployment does not allow."""


def _kind(address: Address) -> str | None:
    """Why ``address`` is refused, or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind, test in (("loopback", address.is_loopback), ("link-local", address.is_link_local),
                       ("private", address.is_private), ("multicast", address.is_multicast),
                       ("unspecified", address.is_unspecified)):
        if test:
            return kind
    return None if address.is_global else "non-public"


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def _addresses(host: str, port: int) -> list[Address]:
    if (literal := _literal(host)) is not None:
        return [literal]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[Address] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in found:
            found.append(address)
    return found


@dataclass(frozen=True, slots=True)
class Guard:
    """The connection policy (``deny_private`` from the settings)."""

    deny_private: bool = False

    async def address(self, host: str, port: int) -> str:
        """The address to connect to for ``host``: ``host`` itself when everything is
        allowed, else its one checked address. Raises ``TargetRefused`` for a refused
        address and ``OSError`` (``socket.gaierror``) when the name does not resolve."""
        if not self.deny_private:
            return host
        addresses = await _addresses(host, port)
        for address in addresses:
            kind = _kind(address)
            if kind is not None:
                shown = (host.strip("[]") if _literal(host) is not None
                         else f"{host} resolves to {address}, which")
                raise TargetRefused(f"{shown} is a {kind} address; refused because "
                                    "ANSFLOW_NOTIFY_DENY_PRIVATE is set")
        if not addresses:
            raise socket.gaierror(f"{host} resolves to no address")
        return str(addresses[0])

    async def pin(self, url: httpx.URL, headers: Mapping[str, str]
                  ) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
        """The request to make for ``url``: to the checked address itself, with the host
        name kept for ``Host`` and TLS (URL, headers, httpx extensions). Raises as
        ``address`` does."""
        pinned_headers, extensions = dict(headers), dict[str, Any]()
        address = await self.address(url.host, url.port or (443 if url.scheme == "https"
                                                            else 80))
        if address == url.host:
            return url, pinned_headers, extensions
        pinned_headers["Host"] = url.netloc.decode("ascii")
        extensions["sni_hostname"] = url.host
        return url.copy_with(host=address), pinned_headers, extensions
