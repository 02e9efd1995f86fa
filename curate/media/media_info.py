"""What a probe finds out about a media file (MediaInfo) and why it can refuse one (ProbeError): the types the
index reader (curate.media.mp4) and the PyAV/PIL probe (curate.media.probe) share."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_PIXELS = 8192 * 8192  # decompression-bomb guard: larger frames are refused, never decoded


class ProbeError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(reason, message)  # both in args, so it pickles back from the probe child
        self.reason, self.message = reason, message

    def __str__(self) -> str:
        return self.message


@dataclass
class MediaInfo:
    width: int
    height: int
    codec: str
    duration: float | None = None
    fps: float | None = None
    num_frames: int = 1
