"""Serves a video's bytes straight from its shard tar, with HTTP Range requests (browsers seek <video> by them)."""

from __future__ import annotations

import mimetypes
import re

from starlette.responses import Response, StreamingResponse

from curate.eval.study.pairs import Video

CHUNK = 1 << 20
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "mov": "video/quicktime", "mkv": "video/x-matroska"}


class RangeNotSatisfiable(ValueError):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte of a single-range `Range` header, or None to send the whole body
    (no header, a unit other than bytes, or several ranges: RFC 9110 lets a server ignore those).
    RangeNotSatisfiable when the range starts past the end."""
    if not header:
        return None
    found = _RANGE.match(header.strip())
    if not found or found.groups() == ("", ""):
        return None
    first, last = found.groups()
    if first == "":  # suffix range: the last N bytes
        if int(last) == 0:
            raise RangeNotSatisfiable(header)
        return max(size - int(last), 0), size - 1
    first, last = int(first), (int(last) if last else size - 1)
    if first >= size or last < first:
        raise RangeNotSatisfiable(header)
    return first, min(last, size - 1)


def content_type(video: Video) -> str:
    return _TYPES.get(video.ext) or mimetypes.guess_type(f"x.{video.ext}")[0] or "application/octet-stream"


def _read(path: str, offset: int, length: int):
    with open(path, "rb") as f:
        f.seek(offset)
        while length > 0:
            chunk = f.read(min(CHUNK, length))
            if not chunk:
                raise OSError(f"{path}: ended {length} bytes early")
            length -= len(chunk)
            yield chunk


def video_response(video: Video, range_header: str | None, head: bool = False) -> Response:
    """200 with the whole video, 206 with one range, or 416; private caching since URLs are per-presentation."""
    headers = {"accept-ranges": "bytes", "cache-control": "private, max-age=3600"}
    try:
        span = parse_range(range_header, video.size)
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={**headers, "content-range": f"bytes */{video.size}"})
    first, last = span if span else (0, video.size - 1)
    headers["content-length"] = str(last - first + 1)
    if span:
        headers["content-range"] = f"bytes {first}-{last}/{video.size}"
    status = 206 if span else 200
    if head:
        return Response(status_code=status, headers=headers, media_type=content_type(video))
    body = _read(video.tar, video.offset + first, last - first + 1)
    return StreamingResponse(body, status_code=status, headers=headers, media_type=content_type(video))
