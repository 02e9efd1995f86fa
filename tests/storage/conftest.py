"""A real S3-compatible server (moto's server mode) on 127.0.0.1 for the object-storage tests.

The endpoint and fake credentials are pinned in the environment when this file is imported, before any client
(boto3, s3fs, pyarrow, Ray's workers) exists, so that nothing can fall back to a public AWS host. The Makefile
runs these tests inside a loopback-only network namespace as well; `loopback_only` refuses any other address in
this process either way.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid

import pytest

_probe = socket.socket()
_probe.bind(("127.0.0.1", 0))
PORT = _probe.getsockname()[1]
_probe.close()
ENDPOINT = f"http://127.0.0.1:{PORT}"
os.environ.update(AWS_ENDPOINT_URL=ENDPOINT, AWS_ENDPOINT_URL_S3=ENDPOINT, AWS_ACCESS_KEY_ID="testing",
                  AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
    os.environ.pop(_name, None)


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


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=PORT, verbose=False)
    server.start()
    yield ENDPOINT
    server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh bucket per test; yields its s3:// URL."""
    import boto3

    name = f"t-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"
