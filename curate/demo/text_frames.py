"""Frames with known burned-in text and frames without any: the OCR scorer's test and benchmark set, and the text
drawing (PIL with Debian's fonts-dejavu-core) that gives demo media a watermark."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
WIDTH, HEIGHT = 320, 180
TEXT_KINDS = ("middle_word", "subtitle", "corner_mark")
CLEAN_KINDS = ("gradient", "noise", "texture", "shapes")


def background(seed: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Natural-ish footage: a smooth colour texture with a soft gradient (what text is drawn over)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 200, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    ramp = np.linspace(0.7, 1.1, width, dtype=np.float32)[None, :, None]
    return (smooth * ramp).clip(0, 255).astype(np.uint8)


def draw_text(frame: np.ndarray, text: str, xy: tuple[int, int], size: int, alpha: float = 1.0,
              fill=(255, 255, 255), outline: bool = False) -> np.ndarray:
    """`text` drawn onto a copy of the frame at top-left `xy`, blended with opacity `alpha` (a watermark < 1)."""
    base = Image.fromarray(frame).convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    ink = ImageDraw.Draw(layer)
    font = ImageFont.truetype(FONT, size)
    extra = {"stroke_width": max(1, size // 12), "stroke_fill": (0, 0, 0, round(255 * alpha))} if outline else {}
    ink.text(xy, text, font=font, fill=(*fill, round(255 * alpha)), **extra)
    return np.asarray(Image.alpha_composite(base, layer).convert("RGB"))


def text_frame(kind: str, seed: int) -> np.ndarray:
    """One frame with text of `kind`: a large semi-transparent word in the middle, a subtitle line, a corner mark."""
    frame = background(seed)
    if kind == "middle_word":
        return draw_text(frame, ("STOCK", "SAMPLE", "PREVIEW")[seed % 3], (55, 60), 52, alpha=0.55)
    if kind == "subtitle":
        line = ("I will see you tomorrow", "Where did you go?", "That is not the plan")[seed % 3]
        return draw_text(frame, line, (40, 145), 20, outline=True)
    if kind == "corner_mark":
        return draw_text(frame, ("NEWS 24", "TV5", "LIVE")[seed % 3], (WIDTH - 90, 8), 18, alpha=0.8)
    raise ValueError(kind)


def clean_frame(kind: str, seed: int) -> np.ndarray:
    """One frame without text: a gradient, noise, a smooth texture, or shapes with edges (no glyphs)."""
    rng = np.random.default_rng(100 + seed)
    if kind == "gradient":
        x = np.linspace(0, 1, WIDTH)[None, :, None]
        y = np.linspace(0, 1, HEIGHT)[:, None, None]
        return (255 * np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1)).astype(np.uint8)
    if kind == "noise":
        return rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    if kind == "texture":
        return background(1000 + seed)
    if kind == "shapes":
        frame = background(2000 + seed)
        for _ in range(4):
            centre = tuple(int(v) for v in rng.integers(20, (WIDTH - 20, HEIGHT - 20)))
            cv2.circle(frame, centre, int(rng.integers(10, 35)), tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
        return frame
    raise ValueError(kind)


def overlay_clip(static: bool, frames: int = 3, seed: int = 0) -> np.ndarray:
    """uint8 [frames,H,W,3]: a moving background with a word that stays put (a watermark) or crosses the frame."""
    out = []
    for t in range(frames):
        frame = np.roll(background(seed), 12 * t, axis=1)
        xy = (WIDTH - 110, HEIGHT - 34) if static else (10 + 100 * t, 20 + 50 * t)
        out.append(draw_text(frame, "WATERMARK" if static else "MOVING", xy, 16 if static else 22, alpha=0.8))
    return np.stack(out)
