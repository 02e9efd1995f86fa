"""Re-encode videos with ffmpeg (out of process): cap resolution for raw shards, or resize+crop to a training geometry."""

from __future__ import annotations

import subprocess


class TranscodeError(Exception):
    pass


def _run(cmd: list[str], timeout: float) -> None:
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TranscodeError(f"ffmpeg took longer than {timeout:.0f}s") from None
    if out.returncode != 0:
        raise TranscodeError("ffmpeg: " + out.stderr.decode(errors="replace").strip()[-300:])


def cap_resolution(src: str, dst: str, max_side: int, crf: int = 23, timeout: float = 600.0) -> None:
    """Downscale so the longer side is at most `max_side` (never upscale), H.264, even dimensions, no audio."""
    scale = (f"scale='if(gte(iw,ih),min(iw,{max_side}),-2)':'if(gte(iw,ih),-2,min(ih,{max_side}))'"
             ":flags=area")
    _run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", src, "-an", "-vf", scale, "-c:v", "libx264",
          "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p", "-movflags", "+faststart", dst], timeout)


def resize_center_crop(src: str, dst: str, width: int, height: int, max_frames: int | None = None,
                       crf: int = 18, timeout: float = 600.0) -> None:
    """Scale to cover width x height, then center crop: the training geometry (e.g. 512x320)."""
    vf = f"scale={width}:{height}:force_original_aspect_ratio=increase:flags=area,crop={width}:{height}"
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", src, "-an", "-vf", vf]
    if max_frames:
        cmd += ["-frames:v", str(max_frames)]
    _run(cmd + ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
                "-movflags", "+faststart", dst], timeout)


def image_resize_center_crop(src: str, dst: str, width: int, height: int, quality: int = 95) -> tuple[int, int]:
    """Scale to cover width x height (area filter when shrinking), center crop, write JPEG; returns the size."""
    from PIL import Image

    with Image.open(src) as img:
        img = img.convert("RGB")
        scale = max(width / img.width, height / img.height)
        size = (max(width, round(img.width * scale)), max(height, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC)
        left, top = (size[0] - width) // 2, (size[1] - height) // 2
        img.crop((left, top, left + width, top + height)).save(dst, "JPEG", quality=quality)
    return width, height
