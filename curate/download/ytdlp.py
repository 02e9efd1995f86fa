"""Video pages (YouTube watch URLs and the like) fetched with yt-dlp, the optional `youtube` extra, under our fetch
policy where yt-dlp lets us apply it: public addresses only, byte cap, timeouts, retries."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

from curate.download.address import AddressRefused, resolve_allowed
from curate.download.http import FetchError, FetchPolicy
from curate.shards.reader import VIDEO_EXTENSIONS
from curate.sources.sample import url_problem

# The best stream up to 720p (Panda-70M's own downloads are 360p); video only where offered: the clips are cut
# without audio, and a single stream needs no ffmpeg merge.
FORMAT = "bv*[height<=720]/b[height<=720]/bv*/b"


def is_direct_media(url: str) -> bool:
    """Whether the URL names a media file (its path ends in a video extension) rather than a page about one."""
    path = urlsplit(url).path.lower()
    return any(path.endswith("." + ext) for ext in VIDEO_EXTENSIONS)


def fetch_page_video(url: str, dest_stem: str, policy: FetchPolicy = FetchPolicy(), resolver=None) -> str:
    """Download the video a page shows to `dest_stem`.EXT; returns that path. Raises FetchError: `ytdlp_missing`
    without the extra, `private_address` for a host that is not public (checked before yt-dlp connects; yt-dlp's
    own redirects are not re-checked), `byte_cap`, `ytdlp_error` for anything yt-dlp reports."""
    problem = url_problem(url)
    if problem:
        raise FetchError("invalid_url", problem)
    try:
        import yt_dlp
    except ImportError:
        raise FetchError("ytdlp_missing", "this URL is a video page, not media: install yt-dlp "
                                          "(pip install 'curate[youtube]')") from None
    parts = urlsplit(url)
    try:
        resolve_allowed(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                        policy.allow_private_addresses, resolver or socket.getaddrinfo)
    except AddressRefused as exc:
        raise FetchError("private_address", str(exc)) from None
    except OSError as exc:
        raise FetchError("dns_error", f"cannot resolve host: {exc}") from None
    options = {"format": FORMAT, "outtmpl": f"{dest_stem}.%(ext)s", "noplaylist": True, "quiet": True,
               "no_warnings": True, "noprogress": True, "socket_timeout": policy.read_timeout,
               "retries": policy.retries, "max_filesize": policy.max_bytes, "http_headers": {
                   "User-Agent": policy.user_agent}, "overwrites": True, "cachedir": False}
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(url, download=True)
    except yt_dlp.utils.DownloadError as exc:
        raise FetchError("ytdlp_error", str(exc).removeprefix("ERROR: ")[:500]) from None
    done = [d.get("filepath") for d in (info or {}).get("requested_downloads") or []]
    path = next((p for p in done if p and os.path.isfile(p)), None)
    if path is None:  # yt-dlp skips a file over max_filesize without raising
        raise FetchError("byte_cap", f"no file downloaded (over the {policy.max_bytes}-byte cap, or none offered)")
    return path
