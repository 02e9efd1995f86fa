"""Probe media files: ffprobe (a subprocess, so a hostile file cannot take the worker down) and PIL headers."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from fractions import Fraction

from PIL import Image

DEFAULT_MAX_PIXELS = 8192 * 8192  # decompression-bomb guard: larger frames are refused, never decoded


class ProbeError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class MediaInfo:
    width: int
    height: int
    codec: str
    duration: float | None = None
    fps: float | None = None
    num_frames: int = 1


def _rate(text: str | None) -> float | None:
    try:
        value = float(Fraction(text)) if text and text != "0/0" else None
    except (ValueError, ZeroDivisionError):
        return None
    return value or None


def probe_video(path: str, max_pixels: int = DEFAULT_MAX_PIXELS, timeout: float = 60.0,
                decode_check: bool = True) -> MediaInfo:
    """Width, height, fps, frame count, duration and codec of the first video stream. With decode_check the
    first frame is also decoded (by ffmpeg, out of process), so a file with a valid header but broken
    data is caught here rather than in training."""
    cmd = ["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0", "-show_entries",
           "stream=codec_name,width,height,avg_frame_rate,r_frame_rate,nb_frames,nb_read_packets,duration"
           ":format=duration,format_name", "-of", "json", path]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ProbeError("probe_timeout", f"ffprobe took longer than {timeout:.0f}s") from None
    if out.returncode != 0:
        raise ProbeError("corrupt", "ffprobe: " + out.stderr.decode(errors="replace").strip()[:300])
    info = json.loads(out.stdout or b"{}")
    streams = info.get("streams") or []
    if not streams:
        raise ProbeError("no_video_stream", "no video stream in file")
    s, fmt = streams[0], info.get("format") or {}
    width, height = int(s.get("width") or 0), int(s.get("height") or 0)
    if width <= 0 or height <= 0:
        raise ProbeError("corrupt", "video stream has no dimensions")
    if width * height > max_pixels:
        raise ProbeError("pixel_cap", f"{width}x{height} exceeds the {max_pixels}-pixel cap")
    fps = _rate(s.get("avg_frame_rate")) or _rate(s.get("r_frame_rate"))
    frames = int(s.get("nb_read_packets") or s.get("nb_frames") or 0)
    duration = float(s.get("duration") or fmt.get("duration") or 0) or (frames / fps if fps and frames else None)
    if frames <= 0:
        raise ProbeError("corrupt", "video stream has no frames")
    if decode_check:
        check = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", path, "-map", "0:v:0", "-frames:v", "1",
                                "-f", "null", "-"], capture_output=True, timeout=timeout, check=False)
        if check.returncode != 0:
            raise ProbeError("corrupt", "ffmpeg cannot decode: " + check.stderr.decode(errors="replace").strip()[:300])
    return MediaInfo(width=width, height=height, codec=s.get("codec_name") or "unknown", duration=duration,
                     fps=fps, num_frames=frames)


def probe_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> MediaInfo:
    """Header first (size check before any pixel is decoded), then a full decode to catch truncation."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ProbeError("pixel_cap", f"{width}x{height} exceeds the {max_pixels}-pixel cap")
            fmt = (img.format or "unknown").lower()
            img.load()
    except ProbeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ProbeError("pixel_cap", str(exc)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ProbeError("corrupt", f"image does not decode: {exc}") from None
    return MediaInfo(width=width, height=height, codec=fmt)
