"""The vote log: one JSON line per vote, appended, flushed and fsynced before the vote is acknowledged."""

from __future__ import annotations

import json
import os
import threading

CHOICES = ("left", "right", "tie")


def read_votes(path: str) -> list[dict]:
    """Every complete vote in the log; a last line cut short by a crash (no newline, not JSON) is skipped."""
    if not os.path.exists(path):
        return []
    votes = []
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                votes.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn line that a later append terminated
    return votes


class VoteLog:
    """Append-only, shared by the server's threads. Opened with O_APPEND so each vote is one write at the end."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        created = not os.path.exists(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()
        if created:  # the new name must survive a crash too
            dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        elif os.path.getsize(path):
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a torn last line: end it so the next vote starts on its own line
                    self._write(b"\n")

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)

    def append(self, vote: dict) -> None:
        if vote.get("choice") not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, not {vote.get('choice')!r}")
        line = json.dumps(vote, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n"
        with self._lock:
            self._write(line)

    def close(self) -> None:
        os.close(self._fd)
