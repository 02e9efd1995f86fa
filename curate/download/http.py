"""Streaming HTTP fetch for media: deadline, low-speed limit, byte cap, guarded addresses, checked redirects,
polite retries."""

from __future__ import annotations

import email.utils
import hashlib
import random
import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from curate.download.address import AddressRefused, connection_classes
from curate.sources.sample import url_problem

CHUNK = 1 << 20
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
# A deadline or low-speed abort is retried at most this many times whatever `retries` says: a server that was
# too slow once is likely slow again, and each attempt holds a worker thread for up to a deadline.
SLOW_RETRIES = 1


@dataclass(frozen=True)
class FetchPolicy:
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    deadline: float = 300.0  # whole attempt, so a slow server cannot hold a worker forever
    # curl's CURLOPT_LOW_SPEED_LIMIT/TIME: abort an attempt when fewer than `low_speed_limit` bytes/s arrived
    # over `low_speed_time` seconds (0 disables). A 1 byte/s trickle costs one window, not a deadline.
    low_speed_limit: int = field(default=1024, metadata={
        "help": "Abort a download slower than this many bytes/s over --low-speed-time (retried once).", "min": 0})
    low_speed_time: float = field(default=30.0, metadata={
        "help": "Seconds over which --low-speed-limit is measured (0 disables it).", "min": 0.0})
    max_bytes: int = 512 << 20
    retries: int = 2
    backoff: float = 0.5
    max_backoff: float = 30.0  # a Retry-After longer than this is a failure, not a stall
    max_redirects: int = 5
    allow_private_addresses: bool = False
    user_agent: str = "curate/0.1 (dataset curation; honours Retry-After)"


class FetchError(Exception):
    """`slow`: the attempt was aborted for taking too long (deadline, low speed); retried at most SLOW_RETRIES times."""

    def __init__(self, reason: str, message: str, retryable: bool = False, retry_after: float | None = None,
                 slow: bool = False):
        super().__init__(message)
        self.reason, self.retryable, self.retry_after, self.slow = reason, retryable, retry_after, slow


@dataclass
class Fetched:
    final_url: str
    content_type: str
    size: int
    sha256: str
    attempts: int


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (now if now is not None else time.time()))


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip()[:64].lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml"))


def _open(url: str, policy: FetchPolicy, resolver):
    parts = urlsplit(url)
    http_cls, https_cls = connection_classes(policy.allow_private_addresses, resolver)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if parts.scheme == "https":
        conn = https_cls(parts.hostname, port, timeout=policy.connect_timeout, context=ssl.create_default_context())
    else:
        conn = http_cls(parts.hostname, port, timeout=policy.connect_timeout)
    conn.connect()
    conn.sock.settimeout(policy.read_timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn.request("GET", target, headers={"User-Agent": policy.user_agent, "Accept": "*/*",
                                         "Accept-Encoding": "identity"})
    return conn, conn.getresponse()


def _attempt(url: str, dest: str, policy: FetchPolicy, resolver) -> tuple[str, str, int, str]:
    seen = {url}
    for _ in range(policy.max_redirects + 1):
        conn, resp = _open(url, policy, resolver)
        try:
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise FetchError("bad_redirect", f"HTTP {resp.status} without Location")
                nxt = urljoin(url, location)
                problem = url_problem(nxt)
                if problem:
                    raise FetchError("bad_redirect", f"redirect to {nxt!r}: {problem}")
                if nxt in seen:
                    raise FetchError("redirect_loop", f"redirect loop at {nxt}")
                seen.add(nxt)
                url = nxt
                continue
            if resp.status != 200:
                retry_after = parse_retry_after(resp.getheader("Retry-After"))
                raise FetchError(f"http_{resp.status}", f"HTTP {resp.status} {resp.reason}",
                                 retryable=resp.status in RETRYABLE_STATUS, retry_after=retry_after)
            ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if ctype.startswith("text/") or ctype in ("application/json", "application/xhtml+xml"):
                raise FetchError("html_body", f"server sent {ctype}, not media")
            length = resp.getheader("Content-Length")
            if length and length.isdigit() and int(length) > policy.max_bytes:
                raise FetchError("byte_cap", f"Content-Length {length} exceeds the {policy.max_bytes}-byte cap")
            size, digest = _stream(resp, dest, policy)
            if length and length.isdigit() and size != int(length):
                raise FetchError("truncated", f"body ended after {size} of {length} bytes", retryable=True)
            return url, ctype, size, digest
        finally:
            conn.close()
    raise FetchError("too_many_redirects", f"more than {policy.max_redirects} redirects")


class Pace:
    """The deadline and low-speed limit of one attempt: `arrived(n)` after every read raises FetchError (slow)
    once the attempt is past its deadline, or fewer than `low_speed_limit` bytes/s arrived over a window of
    `low_speed_time` seconds. Checked as bytes arrive; a server that sends nothing is the read timeout's case."""

    def __init__(self, policy: FetchPolicy):
        self.policy = policy
        self.started = self.window_start = time.monotonic()
        self.window_bytes = 0

    def arrived(self, n: int) -> None:
        policy, now = self.policy, time.monotonic()
        if now - self.started > policy.deadline:
            raise FetchError("timeout", f"download exceeded the {policy.deadline:.0f}s deadline", retryable=True,
                             slow=True)
        self.window_bytes += n
        elapsed = now - self.window_start
        if policy.low_speed_time > 0 and elapsed >= policy.low_speed_time:
            rate = self.window_bytes / elapsed
            if rate < policy.low_speed_limit:
                raise FetchError("low_speed", f"{rate:.0f} bytes/s over {elapsed:.1f}s, below the "
                                              f"{policy.low_speed_limit} bytes/s limit", retryable=True, slow=True)
            self.window_start, self.window_bytes = now, 0


def _stream(resp, dest: str, policy: FetchPolicy) -> tuple[int, str]:
    pace = Pace(policy)
    digest, size, head = hashlib.sha256(), 0, b""
    with open(dest, "wb") as out:
        while True:
            chunk = resp.read1(CHUNK)
            if not chunk:
                break
            if len(head) < 64:
                head += chunk[:64]
            size += len(chunk)
            if size > policy.max_bytes:
                raise FetchError("byte_cap", f"body exceeds the {policy.max_bytes}-byte cap")
            pace.arrived(len(chunk))
            digest.update(chunk)
            out.write(chunk)
    if size == 0:
        raise FetchError("empty_body", "server sent an empty body")
    if _looks_like_html(head):
        raise FetchError("html_body", "body is an HTML/XML page, not media")
    return size, digest.hexdigest()


def fetch_to_file(url: str, dest: str, policy: FetchPolicy = FetchPolicy(), resolver=None,
                  sleep=time.sleep) -> Fetched:
    """Download `url` into `dest`. Raises FetchError with a short `reason` (the manifest's error_reason).
    Retries timeouts, connection errors, 408/429/5xx with exponential backoff and Retry-After, never 4xx; an
    attempt aborted by the deadline or the low-speed limit is retried at most once (SLOW_RETRIES)."""
    problem = url_problem(url)
    if problem:
        raise FetchError("invalid_url", problem)
    resolver = resolver or socket.getaddrinfo
    slow_failures = 0
    for attempt in range(1, policy.retries + 2):
        try:
            final, ctype, size, digest = _attempt(url, dest, policy, resolver)
            return Fetched(final, ctype, size, digest, attempt)
        except FetchError as exc:
            error = exc
        except AddressRefused as exc:
            raise FetchError("private_address", str(exc)) from None
        except (socket.timeout, TimeoutError):
            error = FetchError("timeout", f"no data within {policy.read_timeout:.0f}s", retryable=True)
        except ssl.SSLError as exc:
            raise FetchError("tls_error", f"TLS failure: {exc}") from None
        except socket.gaierror as exc:
            raise FetchError("dns_error", f"cannot resolve host: {exc}") from None
        except (OSError, ValueError) as exc:  # http.client raises these for resets and malformed responses
            error = FetchError("connection_error", f"{type(exc).__name__}: {exc}", retryable=True)
        slow_failures += error.slow
        if not error.retryable or attempt > policy.retries or slow_failures > SLOW_RETRIES:
            raise error
        wait = min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
        if error.retry_after is not None:
            if error.retry_after > policy.max_backoff:
                raise FetchError(error.reason, f"{error} (Retry-After {error.retry_after:.0f}s exceeds the "
                                               f"{policy.max_backoff:.0f}s limit)")
            wait = max(wait, error.retry_after)
        sleep(wait)
    raise AssertionError("unreachable")
