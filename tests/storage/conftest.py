"""Object-storage tests: the S3 server fixtures live in tests/conftest.py (the cluster tests use them too). The
Makefile runs these tests inside a loopback-only network namespace; `loopback_only` refuses any other address in
this process either way."""

from __future__ import annotations

import ipaddress
import socket

import pytest


def _loopback(host) -> bool:
    if host in ("localhost", None, ""):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Any connection or name lookup for an address other than loopback fails the test loudly."""
    real_getaddrinfo, real_connect, real_connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex

    def getaddrinfo(host, *args, **kwargs):
        if not _loopback(host):
            raise AssertionError(f"a test looked up {host!r}: only 127.0.0.1 may be reached")
        return real_getaddrinfo(host, *args, **kwargs)

    def check(address):
        if isinstance(address, tuple) and not _loopback(address[0]):
            raise AssertionError(f"a test connected to {address!r}: only 127.0.0.1 may be reached")

    def connect(self, address):
        check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
