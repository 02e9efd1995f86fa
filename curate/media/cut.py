"""Cut one clip out of a video by frame index with ffmpeg (out of process): frame-exact re-encode, or keyframe copy.

Frame indices map to time as index / fps (a constant-frame-rate source; for a variable-rate one the clip is the
span of those times). "exact" seeks on the input to half a frame before `start_frame` (ffmpeg decodes from the
keyframe before and drops every frame earlier than that time, so the first frame kept is `start_frame`), keeps
`end_frame - start_frame` frames with their own timestamps (no frame duplicated or dropped) and re-encodes them
with libx264. "keyframe" copies the packets without decoding: the clip starts at the keyframe at or before
`start_frame` (up to a GOP early: a few seconds on web video) and ends near `end_frame`; fast, not exact.
"""

from __future__ import annotations

from curate.media.geometry import ffmpeg_fit_within
from curate.media.transcode import run_ffmpeg

MODES = ("exact", "keyframe")
EVEN = "crop=trunc(iw/2)*2:trunc(ih/2)*2"  # H.264 4:2:0 needs even sizes: an odd source loses its last row/column


def cut_clip(src: str, start_frame: int, end_frame: int, dst: str, *, fps: float, mode: str = "exact",
             max_side: int | None = None, crf: int = 18, timeout: float = 600.0) -> None:
    """Write frames [start_frame, end_frame) of `src` (end exclusive) to the MP4 `dst`, no audio; the source
    resolution is kept unless `max_side` caps the longer side (exact mode only: a copy cannot scale).
    Raises ValueError on a bad window or mode, TranscodeError when ffmpeg fails."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not (0 <= start_frame < end_frame) or fps <= 0:
        raise ValueError(f"bad window [{start_frame}, {end_frame}) at {fps} fps")
    count = end_frame - start_frame
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y"]
    if mode == "keyframe":
        run_ffmpeg(cmd + ["-ss", f"{start_frame / fps:.6f}", "-i", src, "-t", f"{count / fps:.6f}", "-an",
                          "-c:v", "copy", "-avoid_negative_ts", "make_zero", "-movflags", "+faststart", dst], timeout)
        return
    if start_frame:
        cmd += ["-ss", f"{(start_frame - 0.5) / fps:.6f}"]
    scale = ffmpeg_fit_within(max_side) if max_side else EVEN
    run_ffmpeg(cmd + ["-i", src, "-an", "-vf", scale, "-frames:v", str(count), "-fps_mode", "passthrough",
                      "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
                      "-movflags", "+faststart", dst], timeout)
