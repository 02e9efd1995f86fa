"""The video fetcher against the loopback media server: every failure has its reason, nothing hangs."""

import os
import socket

import pytest

from curate.download import http
from curate.download.http import SLOW_RETRIES, FetchError, FetchPolicy, fetch_to_file, parse_retry_after

LOCAL = FetchPolicy(allow_private_addresses=True, retries=1, backoff=0.0, read_timeout=2.0, connect_timeout=2.0)


def fetch(server, path, tmp_path, policy=LOCAL, **kw):
    return fetch_to_file(f"{server.base_url}{path}", str(tmp_path / "out"), policy, **kw)


def reason(server, path, tmp_path, policy=LOCAL, **kw):
    with pytest.raises(FetchError) as info:
        fetch(server, path, tmp_path, policy, **kw)
    return info.value.reason


def test_success_has_size_and_digest(media_server, tmp_path):
    got = fetch(media_server, "/video_000.mp4", tmp_path)
    assert got.size == (tmp_path / "out").stat().st_size > 0 and len(got.sha256) == 64 and got.attempts == 1


@pytest.mark.parametrize("code", [403, 404, 410])
def test_permanent_4xx_is_not_retried(media_server, tmp_path, code):
    path = f"/status/{code}"
    before = media_server.hits.get(path, 0)
    assert reason(media_server, path, tmp_path) == f"http_{code}"
    assert media_server.hits[path] - before == 1


@pytest.mark.parametrize("code", [429, 500, 503])
def test_transient_errors_are_retried_with_backoff(media_server, tmp_path, code):
    path = f"/status/{code}"
    sleeps = []
    before = media_server.hits.get(path, 0)
    assert reason(media_server, path, tmp_path, FetchPolicy(allow_private_addresses=True, retries=2, backoff=0.01),
                  sleep=sleeps.append) == f"http_{code}"
    assert media_server.hits[path] - before == 3 and len(sleeps) == 2


def test_retry_then_success(media_server, tmp_path):
    assert fetch(media_server, "/flaky/video_001.mp4", tmp_path, sleep=lambda s: None).attempts == 2


def test_retry_after_is_honoured_and_capped():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None


@pytest.mark.parametrize("path,expected", [
    ("/html/page.mp4", "html_body"), ("/html-as-video/x.mp4", "html_body"), ("/broken_empty.mp4", "empty_body"),
    ("/loop", "redirect_loop"), ("/redirect/9/video_000.mp4", "too_many_redirects"),
])
def test_bad_bodies_and_redirects(media_server, tmp_path, path, expected):
    assert reason(media_server, path, tmp_path) == expected


def test_redirect_chain_within_limit(media_server, tmp_path):
    assert fetch(media_server, "/redirect/3/video_000.mp4", tmp_path).final_url.endswith("/video_000.mp4")


def test_byte_cap(media_server, tmp_path):
    small = FetchPolicy(allow_private_addresses=True, retries=0, max_bytes=1000)
    assert reason(media_server, "/video_000.mp4", tmp_path, small) == "byte_cap"


def test_slow_server_past_deadline(media_server, tmp_path):
    slow = FetchPolicy(allow_private_addresses=True, retries=0, deadline=0.3, read_timeout=2.0)
    assert reason(media_server, "/slow/video_000.mp4", tmp_path, slow) == "timeout"


def test_deadline_is_retried_once_whatever_retries_says(media_server, tmp_path):
    path = "/slow/video_001.mp4"
    before, sleeps = media_server.hits.get(path, 0), []
    slow = FetchPolicy(allow_private_addresses=True, retries=3, deadline=0.3, read_timeout=2.0)
    assert reason(media_server, path, tmp_path, slow, sleep=sleeps.append) == "timeout"
    assert media_server.hits[path] - before == 1 + SLOW_RETRIES == 2 and len(sleeps) == 1


def test_trickle_is_aborted_by_the_low_speed_limit_and_retried_once(media_server, tmp_path):
    """20 bytes/s against a 1000 bytes/s limit over 0.5 s windows: aborted in the first window, tried twice
    although `retries` allows four attempts (the deadline, 300 s, plays no part)."""
    path = "/trickle/20/video_000.mp4"
    before, sleeps = media_server.hits.get(path, 0), []
    policy = FetchPolicy(allow_private_addresses=True, retries=3, backoff=0.0, read_timeout=5.0,
                         low_speed_limit=1000, low_speed_time=0.5)
    with pytest.raises(FetchError) as info:
        fetch(media_server, path, tmp_path, policy, sleep=sleeps.append)
    assert info.value.reason == "low_speed" and "below the 1000 bytes/s limit" in str(info.value)
    assert media_server.hits[path] - before == 2 and len(sleeps) == 1


def test_slow_but_steady_server_passes_the_low_speed_limit(media_server, tmp_path):
    """/slow sends ~5 KB/s: above a 1000 bytes/s limit checked every 0.2 s, so the body arrives whole."""
    policy = FetchPolicy(allow_private_addresses=True, retries=0, low_speed_limit=1000, low_speed_time=0.2)
    got = fetch(media_server, "/slow/video_003.mp4", tmp_path, policy)
    assert got.size == os.path.getsize(os.path.join(media_server.root, "video_003.mp4"))


class _TrickleResponse:
    """One byte per read, each read advancing a fake clock by one second (1 byte/s, without waiting)."""

    def __init__(self, clock):
        self.clock, self.sent = clock, 0

    def read1(self, n):
        self.clock[0] += 1.0
        self.sent += 1
        return b"x"


def test_default_policy_aborts_a_one_byte_per_second_trickle_within_its_window(monkeypatch, tmp_path):
    """With the defaults (1024 bytes/s over 30 s), a 1 byte/s body is given up after 30 s of it, not the
    300 s deadline; with the single retry a trickling URL costs about a minute."""
    clock = [0.0]
    monkeypatch.setattr(http.time, "monotonic", lambda: clock[0])
    resp = _TrickleResponse(clock)
    with pytest.raises(FetchError) as info:
        http._stream(resp, str(tmp_path / "o"), FetchPolicy())
    assert info.value.reason == "low_speed" and info.value.slow and info.value.retryable
    assert resp.sent == FetchPolicy().low_speed_time == 30


def test_low_speed_limit_zero_time_disables_it(monkeypatch, tmp_path):
    clock = [0.0]
    monkeypatch.setattr(http.time, "monotonic", lambda: clock[0])
    with pytest.raises(FetchError) as info:
        http._stream(_TrickleResponse(clock), str(tmp_path / "o"), FetchPolicy(low_speed_time=0, deadline=100))
    assert info.value.reason == "timeout" and clock[0] == 101


def test_truncated_body(media_server, tmp_path):
    assert reason(media_server, "/short/video_000.mp4", tmp_path,
                  FetchPolicy(allow_private_addresses=True, retries=0)) == "truncated"


def test_loopback_refused_by_default(media_server, tmp_path):
    path = "/video_000.mp4"
    before = media_server.hits.get(path, 0)
    assert reason(media_server, path, tmp_path, FetchPolicy()) == "private_address"
    assert media_server.hits.get(path, 0) == before  # refused before connecting


def test_redirect_to_private_address_refused_after_redirect(media_server, tmp_path):
    """The redirect target 10.0.0.1 is checked at connect time and never contacted; the first hop
    (loopback) is allowed through a resolver stub that maps the test host name to 127.0.0.1."""
    port = media_server.server_address[1]

    def resolver(host, port_, family=0, type=0):
        ip = "127.0.0.1" if host == "media.test" else host
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port_))]

    import curate.download.address as address

    original = address.is_public
    address.is_public = lambda ip: ip == "127.0.0.1" or original(ip)
    try:
        with pytest.raises(FetchError) as info:
            fetch_to_file(f"http://media.test:{port}/to-private", str(tmp_path / "o"), FetchPolicy(retries=0),
                          resolver=resolver)
    finally:
        address.is_public = original
    assert info.value.reason == "private_address" and "10.0.0.1" in str(info.value)


@pytest.mark.parametrize("url", ["ftp://h.test/x", "file:///etc/passwd", "http:///nohost"])
def test_non_http_urls(tmp_path, url):
    with pytest.raises(FetchError) as info:
        fetch_to_file(url, str(tmp_path / "o"))
    assert info.value.reason == "invalid_url"
