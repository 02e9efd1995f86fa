"""A loopback HTTP server for the demo and the tests: serves a folder plus routes that misbehave on purpose."""

from __future__ import annotations

import os
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HTML = b"<!DOCTYPE html><html><body><h1>Video unavailable</h1></body></html>"


class Handler(SimpleHTTPRequestHandler):
    """/status/NNN -> that status (429/503 with Retry-After: 0); /html/* -> an HTML page with 200;
    /redirect/N -> a chain of N redirects to /media; /loop -> a redirect loop; /slow/* -> 256-byte writes 20 times
    a second; /trickle/RATE/* -> RATE bytes a second, one byte at a time (a stalling CDN); /short/* -> Content-Length
    larger than the body; /to-private -> redirect to 10.0.0.1 (never fetched)."""

    server_version = "curate-demo"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: bytes = b"", ctype: str = "application/octet-stream", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server API
        path = urlsplit(self.path).path
        self.server.hits[path] = self.server.hits.get(path, 0) + 1
        parts = path.strip("/").split("/", 1)
        head, rest = parts[0], (parts[1] if len(parts) > 1 else "")
        if head == "status":
            code = int(rest)
            headers = [("Retry-After", "0")] if code in (429, 503) else []
            return self._send(code, b"error", "text/plain", headers)
        if head == "html":
            return self._send(200, HTML, "text/html; charset=utf-8")
        if head == "html-as-video":
            return self._send(200, HTML, "video/mp4")
        if head == "loop":
            return self._send(302, headers=[("Location", "/loop2")])
        if head == "loop2":
            return self._send(302, headers=[("Location", "/loop")])
        if head == "redirect":
            n = int(rest.split("/", 1)[0])
            target = f"/redirect/{n - 1}/{rest.split('/', 1)[1]}" if n > 1 else "/" + rest.split("/", 1)[1]
            return self._send(302, headers=[("Location", target)])
        if head == "to-private":
            return self._send(302, headers=[("Location", "http://10.0.0.1/video.mp4")])
        if head == "flaky":  # fails once per path with 503, then serves the file
            if self.server.hits[path] == 1:
                return self._send(503, b"busy", "text/plain", [("Retry-After", "0")])
            self.path = "/" + rest
            return super().do_GET()
        if head == "trickle":
            rate, _, name = rest.partition("/")
            return self._trickle(name, float(rate))
        if head in ("slow", "short"):
            file = os.path.join(self.server.root, rest)
            data = open(file, "rb").read() if os.path.isfile(file) else b"x" * 10000
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(data) + (1000 if head == "short" else 0)))
            self.end_headers()
            if head == "short":
                self.wfile.write(data)
                return None
            for i in range(0, len(data), 256):
                self.wfile.write(data[i:i + 256])
                self.wfile.flush()
                time.sleep(0.05)
            return None
        return super().do_GET()

    def _trickle(self, name: str, rate: float) -> None:
        file = os.path.join(self.server.root, name)
        data = open(file, "rb").read() if os.path.isfile(file) else b"x" * 10000
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(1 / rate)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
            pass

    def translate_path(self, path):
        rel = urlsplit(path).path.lstrip("/")
        return os.path.join(self.server.root, *[p for p in rel.split("/") if p not in ("", ".", "..")])


class MediaServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: str):
        super().__init__(("127.0.0.1", 0), Handler)
        self.root, self.hits = root, {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def start(root: str) -> MediaServer:
    """Serve `root` on 127.0.0.1 (a free port) from a daemon thread; call .shutdown() to stop."""
    server = MediaServer(root)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
