"""Run a decoder function in a long-lived child process: a crash, abort or hang on a hostile file costs that one
call, and the next call starts a fresh child.

The child is a plain `python -c` that imports only the function's module. multiprocessing's 'spawn' would first
re-run the parent's main module: in a Ray worker that is Ray's worker script, ~1 CPU s of imports per child
(measured: 160 such children, 157 CPU s in one test-suite run)."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import weakref
from collections.abc import Callable

# the child: the parent's sys.path first (the function's module may live anywhere the parent can import from),
# then the function (pickled by reference: unpickling imports its module), then calls until the parent hangs up
_CHILD = """import sys
from multiprocessing.connection import Connection
conn = Connection(int(sys.argv[1]))
sys.path[:] = conn.recv()
from curate.media.isolated import _serve
_serve(conn, conn.recv())
"""


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
        self._proc: subprocess.Popen | None = None
        self._conn = None
        self._reaper: weakref.finalize | None = None

    def _start(self) -> None:
        self._conn, child = multiprocessing.Pipe()
        fd = child.fileno()
        self._proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(fd)], pass_fds=(fd,),
                                      stdin=subprocess.DEVNULL)
        child.close()
        self._reaper = weakref.finalize(self, self._proc.kill)  # never outlive an owner dropped without close()
        self._conn.send(sys.path)
        self._conn.send(self.fn)

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            if self._alive():
                self._proc.kill()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self._reaper.detach()  # one per live child, not one more per restart after a crash
            self._proc = self._reaper = None

    def __enter__(self) -> IsolatedWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def kill_child(self) -> None:
        """Kill the current child (as a crash would); the next call starts a new one."""
        if self._alive():
            self._proc.kill()

    def call(self, *args):
        if not self._alive():
            self.close()
            self._start()
        try:
            self._conn.send(args)
            if not self._conn.poll(self.timeout):
                self.close()
                raise IsolatedFailure("timeout", f"timed out after {self.timeout:g}s (child killed)")
            status, payload = self._conn.recv()
        except (EOFError, OSError):
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            reason = describe_exit(self._proc.returncode)
            self.close()
            raise IsolatedFailure("crashed", f"decoder process crashed ({reason})") from None
        if status == "error":
            raise payload
        return payload
