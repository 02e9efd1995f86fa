"""Re-encode videos with ffmpeg (out of process): cap resolution for raw shards, or resize+crop to a training geometry."""

from __future__ import annotations

import subprocess

from curate.media.geometry import center_crop_box, cover_size, ffmpeg_cover_crop, ffmpeg_fit_within


class TranscodeError(Exception):
    pass


def run_ffmpeg(cmd: list[str], timeout: float) -> None:
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TranscodeError(f"ffmpeg took longer than {timeout:.0f}s") from None
    if out.returncode != 0:
        raise TranscodeError("ffmpeg: " + out.stderr.decode(errors="replace").strip()[-300:])


def cap_resolution(src: str, dst: str, max_side: int, crf: int = 23, timeout: float = 600.0) -> None:
    """Downscale so the longer side is at most `max_side` (geometry.even_fit_within_size: the even sizes H.264
    4:2:0 needs), H.264, no audio."""
    run_ffmpeg(["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", src, "-an", "-vf", ffmpeg_fit_within(max_side),
          "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p", "-movflags", "+faststart",
          dst], timeout)


def resize_center_crop(src: str, dst: str, width: int, height: int, max_frames: int | None = None,
                       crf: int = 18, timeout: float = 600.0) -> None:
    """Scale to cover width x height, then center crop: the training geometry (e.g. 512x320), with the sizes
    and offsets of geometry.cover_size / center_crop_box (the ones torchvision and the trainer use)."""
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", src, "-an", "-vf", ffmpeg_cover_crop(height, width)]
    if max_frames:
        cmd += ["-frames:v", str(max_frames)]
    run_ffmpeg(cmd + ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
                "-movflags", "+faststart", dst], timeout)


def image_resize_center_crop(src: str, dst: str, width: int, height: int, quality: int = 95) -> tuple[int, int]:
    """Scale to cover width x height (box filter when shrinking, bicubic when enlarging), center crop as
    geometry says, write JPEG; returns the size."""
    from PIL import Image

    with Image.open(src) as img:
        img = img.convert("RGB")
        cover_h, cover_w = cover_size(img.height, img.width, height, width)
        shrinking = cover_w * cover_h < img.width * img.height
        img = img.resize((cover_w, cover_h), Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC)
        top, left = center_crop_box(cover_h, cover_w, height, width)
        img.crop((left, top, left + width, top + height)).save(dst, "JPEG", quality=quality)
    return width, height


def write_mp4(path: str, frames: list, fps: float = 8, crf: int = 20) -> None:
    """uint8 RGB frames [H,W,3] (all one size) -> H.264 yuv420p mp4 at `path` (test media, the demo corpus)."""
    h, w = frames[0].shape[:2]
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps),
           "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p", path]
    subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True, capture_output=True)
