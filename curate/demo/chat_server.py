"""A loopback OpenAI-compatible chat server that captions from the pixels it receives (the dominant colour of each
frame): the stand-in for a vision-language endpoint in the tests, the benchmark and demos, with faults on demand.

POST /v1/chat/completions answers "N frames: red, red, blue, blue" for the data-URL images of the request, so
frames of the wrong sample, in the wrong order or of the wrong count show in the answer. Frames that are all
yellow get an empty answer, all purple a refusal. `faults` is consumed one per request, in order: "429" and
"503" (with Retry-After: `retry_after`), "500", "drop" (the connection closes unanswered), "slow" (answers after
`slow_s`), "echo401" (a 401 whose body repeats the Authorization header, as a careless proxy might).
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from curate.demo.corpus import COLORS


def dominant_colour(jpeg: bytes) -> str:
    """The named colour (curate.demo.corpus.COLORS) nearest to the image's mean colour."""
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    mean = bgr.reshape(-1, 3).mean(0)[::-1]
    return min(COLORS, key=lambda name: float(np.sum((np.array(COLORS[name]) - mean) ** 2)))


def describe(images: list[bytes]) -> str:
    return f"{len(images)} frames: " + ", ".join(dominant_colour(image) for image in images)


class ChatHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: dict | str, headers=()) -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 - http.server API
        server: ChatServer = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        fault = server.next_fault()  # also counts the request (received)
        server.authorizations.add(self.headers.get("Authorization"))
        if not self.path.endswith("/chat/completions"):
            return self._send(404, {"error": f"no route {self.path}"})
        if fault in ("429", "503"):
            return self._send(int(fault), {"error": "busy"}, [("Retry-After", str(server.retry_after))])
        if fault == "500":
            return self._send(500, {"error": "internal error"})
        if fault == "echo401":
            return self._send(401, f"bad credentials: {self.headers.get('Authorization')}")
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        if fault == "slow":
            time.sleep(server.slow_s)
        if server.latency_s:
            time.sleep(server.latency_s)
        request = json.loads(body)
        images = [base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                  for message in request["messages"] for part in message["content"]
                  if isinstance(part, dict) and part.get("type") == "image_url"]
        text = describe(images) if server.from_pixels else f"{len(images)} frames"
        message = {"role": "assistant", "content": text}
        colours = set(text.split(": ", 1)[-1].split(", ")) if server.from_pixels else set()
        if colours == {"yellow"}:
            message["content"] = ""
        elif colours == {"purple"}:
            message = {"role": "assistant", "content": None, "refusal": "I cannot describe this."}
        server.answered += 1
        self._send(200, {"id": f"chatcmpl-{server.answered}", "object": "chat.completion", "model": request["model"],
                         "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 20 + 64 * len(images), "completion_tokens": len(text.split()),
                                   "total_tokens": 20 + 64 * len(images) + len(text.split())}})


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, faults=(), latency_s: float = 0.0, retry_after: float = 1, slow_s: float = 2.0,
                 from_pixels: bool = True, port: int = 0):
        super().__init__(("127.0.0.1", port), ChatHandler)
        self.faults, self.latency_s, self.retry_after, self.slow_s = list(faults), latency_s, retry_after, slow_s
        self.from_pixels = from_pixels
        self.authorizations: set = set()
        self.answered = 0
        self.received = 0  # requests that reached the server: a late answer to an abandoned one does not change it
        self._lock = threading.Lock()

    def handle_error(self, request, client_address):
        """A client that gave up (timeout) before the answer: expected here, not worth a traceback."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def next_fault(self) -> str | None:
        with self._lock:
            self.received += 1
            return self.faults.pop(0) if self.faults else None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


def start(**options) -> ChatServer:
    """A ChatServer answering in a background thread; stop it with .shutdown()."""
    server = ChatServer(**options)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
