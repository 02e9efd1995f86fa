"""Run a decoder function in a long-lived 'spawn' child process: a crash, abort or hang on a hostile file
costs that one call, and the next call starts a fresh child."""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable


class IsolatedFailure(Exception):
    """The call failed in the child: `kind` is "error" (an exception there), "timeout" or "crashed"."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _serve(conn, fn: Callable) -> None:
    while True:
        try:
            args = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", fn(*args)))
        except Exception as exc:  # noqa: BLE001 - any Python-level failure goes back as this call's error
            conn.send(("error", exc))


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "no exit code"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class IsolatedWorker:
    """`call(*args)` runs `fn(*args)` in the child and returns its result; `fn` must be importable."""

    def __init__(self, fn: Callable, timeout: float = 60.0):
        self.fn, self.timeout = fn, timeout
        self._context = multiprocessing.get_context("spawn")
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        self._conn, child = self._context.Pipe()
        self._proc = self._context.Process(target=_serve, args=(child, self.fn), daemon=True)
        self._proc.start()
        child.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(timeout=5)
            self._proc = None

    def __enter__(self) -> IsolatedWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def kill_child(self) -> None:
        """Kill the current child (as a crash would); the next call starts a new one."""
        if self._proc is not None:
            self._proc.kill()

    def call(self, *args):
        if self._proc is None or not self._proc.is_alive():
            self._start()
        try:
            self._conn.send(args)
            if not self._conn.poll(self.timeout):
                self.close()
                raise IsolatedFailure("timeout", f"timed out after {self.timeout:g}s (child killed)")
            status, payload = self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(timeout=5)
            reason = describe_exit(self._proc.exitcode)
            self.close()
            raise IsolatedFailure("crashed", f"decoder process crashed ({reason})") from None
        if status == "error":
            raise payload
        return payload
