"""Outbound address policy: remote sources may only reach public addresses, checked at connect time."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Callable

Resolver = Callable[..., list]


class AddressRefused(Exception):
    """The host resolved only to loopback, private, link-local or other non-public addresses."""


def is_public(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global and not addr.is_multicast


def resolve_allowed(host: str, port: int, allow_private: bool, resolver: Resolver = socket.getaddrinfo) -> list[tuple]:
    """The (family, sockaddr) pairs we may connect to. Checking the addresses we then connect to (not a
    separate lookup) means a DNS answer cannot change between check and use."""
    infos = resolver(host, port, 0, socket.SOCK_STREAM)
    targets = [(family, sockaddr) for family, _, _, _, sockaddr in infos]
    if allow_private:
        return targets
    allowed = [t for t in targets if is_public(t[1][0])]
    if not allowed:
        shown = ", ".join(sorted({t[1][0] for t in targets})) or "nothing"
        raise AddressRefused(f"{host} resolves to non-public address {shown} (use --allow-private-addresses to permit)")
    return allowed


def _connect(host: str, port: int, timeout: float, allow_private: bool, resolver: Resolver) -> socket.socket:
    last: OSError | None = None
    for family, sockaddr in resolve_allowed(host, port, allow_private, resolver):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError(f"could not connect to {host}:{port}")


class GuardedHTTPConnection(http.client.HTTPConnection):
    allow_private = False
    resolver: Resolver = staticmethod(socket.getaddrinfo)

    def connect(self):
        self.sock = _connect(self.host, self.port, self.timeout, self.allow_private, self.resolver)


class GuardedHTTPSConnection(http.client.HTTPSConnection):
    allow_private = False
    resolver: Resolver = staticmethod(socket.getaddrinfo)

    def connect(self):
        sock = _connect(self.host, self.port, self.timeout, self.allow_private, self.resolver)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def connection_classes(allow_private: bool, resolver: Resolver | None = None):
    """(HTTP, HTTPS) connection classes bound to one policy, for http.client and urllib alike."""
    attrs = {"allow_private": allow_private}
    if resolver is not None:
        attrs["resolver"] = staticmethod(resolver)
    return (type("HTTPConnection", (GuardedHTTPConnection,), attrs),
            type("HTTPSConnection", (GuardedHTTPSConnection,), attrs))


def default_ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()
