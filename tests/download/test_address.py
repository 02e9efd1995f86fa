import socket

import pytest

from curate.download.address import AddressRefused, is_public, resolve_allowed


@pytest.mark.parametrize("ip,public", [
    ("8.8.8.8", True), ("2606:4700::1111", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("::1", False), ("fe80::1", False),
    ("fc00::1", False), ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("224.0.0.1", False),
])
def test_is_public(ip, public):
    assert is_public(ip) is public


def stub_resolver(*ips):
    def resolve(host, port, family=0, type=0):
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ips]
    return resolve


def test_refuses_hosts_resolving_only_to_private_addresses():
    with pytest.raises(AddressRefused, match="non-public address 10.0.0.5"):
        resolve_allowed("intranet.test", 80, False, stub_resolver("10.0.0.5"))


def test_keeps_only_public_answers_and_allows_private_on_request():
    assert resolve_allowed("mixed.test", 80, False, stub_resolver("127.0.0.1", "8.8.4.4")) == [
        (socket.AF_INET, ("8.8.4.4", 80))]
    assert len(resolve_allowed("local.test", 80, True, stub_resolver("127.0.0.1"))) == 1
