"""Generates the demo corpus: small videos of moving shapes and images in varied quality, plus broken files."""

from __future__ import annotations

import os
import struct
import zlib

import cv2
import numpy as np

from curate.media.transcode import write_mp4

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40),
          "white": (240, 240, 240), "purple": (150, 60, 190)}
BACKGROUNDS = {"teal": (20, 110, 110), "grey": (110, 110, 110), "navy": (20, 25, 70), "olive": (90, 100, 40)}
SHAPES = ("circle", "square")
QUALITIES = ("sharp", "blurred", "noisy", "static", "letterboxed")
WATERMARKED = 10, 0  # every 10th video from the first (sharp ones) carries a stock-footage watermark (OCR drops it)
WATERMARK = "STOCK"


def texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth random texture in [0.6, 1.4]: like natural footage it gives optical flow something to track."""
    coarse = rng.random((height // 8 + 2, width // 8 + 2)).astype(np.float32)
    return 0.6 + 0.8 * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def draw(shape: str, color, background, width: int, height: int, cx: float, cy: float, size: int,
         shade: np.ndarray | None = None) -> np.ndarray:
    frame = np.empty((height, width, 3), np.uint8)
    if shade is None:
        frame[:] = background
    else:
        frame[:] = (np.asarray(background, np.float32)[None, None, :] * shade[..., None]).clip(0, 255)
    c = tuple(int(v) for v in color)
    if shape == "circle":
        cv2.circle(frame, (int(cx), int(cy)), size, c, -1, lineType=cv2.LINE_AA)
    else:
        cv2.rectangle(frame, (int(cx - size), int(cy - size)), (int(cx + size), int(cy + size)), c, -1)
    return frame


def degrade(frame: np.ndarray, quality: str, rng: np.random.Generator) -> np.ndarray:
    if quality == "blurred":
        return cv2.GaussianBlur(frame, (0, 0), 3.0)
    if quality == "noisy":
        noise = rng.normal(0, 40, frame.shape)
        return np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if quality == "letterboxed":
        out = frame.copy()
        bar = frame.shape[0] // 5
        out[:bar] = 0
        out[-bar:] = 0
        return out
    return frame


def watermark(frame: np.ndarray) -> np.ndarray:
    """The stock-footage overlay: a large semi-transparent word across the middle, the same in every frame."""
    from curate.demo.text_frames import draw_text

    height, width = frame.shape[:2]
    size = height // 4
    return draw_text(frame, WATERMARK, (width // 2 - int(1.6 * size), height // 2), size, alpha=0.6)


def video_frames(shape, color, background, quality, rng, width=160, height=96, frames=24,
                 watermarked: bool = False) -> list[np.ndarray]:
    """A shape crossing a textured background while the camera pans (both still for `static`), optionally under a
    watermark."""
    size = height // 6
    pan = 2 if quality != "static" else 0
    shade = texture(rng, width + pan * frames, height)
    x0, y0 = rng.uniform(size, width / 3), rng.uniform(size, height - size)
    dx, dy = rng.uniform(2.0, 4.0), rng.uniform(-1.0, 1.0)
    out = []
    for t in range(frames):
        moving = quality != "static"
        cx = x0 + (dx * t if moving else 0)
        cy = min(max(y0 + (dy * t if moving else 0), size), height - size)
        view = shade[:, pan * t: pan * t + width]
        frame = degrade(draw(shape, color, background, width, height, cx, cy, size, view), quality, rng)
        out.append(watermark(frame) if watermarked else frame)
    return out


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: the decompression-bomb guard must refuse it unread."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def long_video(root: str) -> str:
    """root/long/edited.mp4: the demo's long edited video (curate.split.synthetic.EDIT at 12 fps, 160x96: 19 s,
    eight shots), which the demo splits into single-shot clips."""
    from curate.split import synthetic

    folder = os.path.join(root, "long")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "edited.mp4")
    synthetic.write(synthetic.edited_video(160, 96, 12.0), path)
    return path


def generate(root: str, videos: int = 30, images: int = 18, seed: int = 0) -> list[dict]:
    """Write media into root/media and return entries {name, modality, caption, quality}. The broken
    entries (names starting with broken_) are served by the demo server as failures of each kind."""
    rng = np.random.default_rng(seed)
    media = os.path.join(root, "media")
    os.makedirs(media, exist_ok=True)
    entries = []
    names_c, names_b = list(COLORS), list(BACKGROUNDS)
    for i in range(videos):
        shape, quality = SHAPES[i % 2], QUALITIES[i % len(QUALITIES)]
        color, bg = names_c[i % len(names_c)], names_b[(i // 2) % len(names_b)]
        marked = i % WATERMARKED[0] == WATERMARKED[1]
        frames = video_frames(shape, COLORS[color], BACKGROUNDS[bg], quality, rng, watermarked=marked)
        name = f"video_{i:03d}.mp4"
        write_mp4(os.path.join(media, name), frames)
        motion = "resting" if quality == "static" else "moving"
        entries.append({"name": name, "modality": "video", "quality": quality, "watermark": marked,
                        "caption": f"a {color} {shape} {motion} on a {bg} background"})
    for i in range(images):
        shape, quality = SHAPES[i % 2], ("sharp", "blurred", "noisy")[i % 3]
        color, bg = names_c[(i + 1) % len(names_c)], names_b[i % len(names_b)]
        frame = degrade(draw(shape, COLORS[color], BACKGROUNDS[bg], 128, 128, rng.uniform(40, 88),
                             rng.uniform(40, 88), 24), quality, rng)
        name = f"image_{i:03d}.jpg"
        cv2.imwrite(os.path.join(media, name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        entries.append({"name": name, "modality": "image", "quality": quality,
                        "caption": f"a {color} {shape} on a {bg} background"})
    with open(os.path.join(media, "broken_corrupt.mp4"), "wb") as f:
        f.write(b"\x00\x00\x00\x18ftypmp42" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with open(os.path.join(media, "broken_truncated.mp4"), "wb") as f:
        f.write(open(os.path.join(media, "video_000.mp4"), "rb").read()[:700])
    with open(os.path.join(media, "broken_oversize.mp4"), "wb") as f:
        f.write(rng.integers(0, 256, 3 << 20, dtype=np.uint8).tobytes())
    with open(os.path.join(media, "broken_huge.png"), "wb") as f:
        f.write(huge_png_header(40000, 40000))
    with open(os.path.join(media, "broken_empty.mp4"), "wb"):
        pass
    broken = [("broken_missing.mp4", "video", "a page that is gone (404)"),
              ("broken_corrupt.mp4", "video", "random bytes behind an mp4 name"),
              ("broken_truncated.mp4", "video", "the first 700 bytes of a video"),
              ("broken_oversize.mp4", "video", "a body larger than the byte cap"),
              ("broken_empty.mp4", "video", "an empty body"),
              ("html/broken_page.mp4", "video", "an HTML error page served as 200"),
              ("broken_huge.png", "image", "a PNG claiming 40000x40000 pixels"),
              ("broken_missing.jpg", "image", "an image that is gone (404)")]
    entries += [{"name": n, "modality": m, "quality": "broken", "caption": c} for n, m, c in broken]
    return entries
