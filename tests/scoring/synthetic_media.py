"""Synthetic test media made in-test: textures, a moving square, solid colours, and their H.264 encoding."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def encode_mp4(frames: np.ndarray, fps: int = 8) -> bytes:
    """uint8 [T,H,W,3] RGB frames -> H.264 mp4 bytes (the ffmpeg binary, as the data plane uses)."""
    height, width = frames.shape[1:3]
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "clip.mp4"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
             "-r", str(fps), "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", str(target)],
            input=np.ascontiguousarray(frames, dtype=np.uint8).tobytes(), check=True,
        )
        return target.read_bytes()


def textured_frame(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth random texture (blurred noise): structure that flow and sharpness can see."""
    noise = np.random.default_rng(seed).integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    return cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)


def moving_square(num_frames: int = 16, height: int = 96, width: int = 128, step: int = 4) -> np.ndarray:
    """A textured 32x32 square sliding right by `step` pixels per frame over a flat background."""
    frames = np.full((num_frames, height, width, 3), 40, np.uint8)
    patch = textured_frame(32, 32, seed=7)
    for index in range(num_frames):
        left = 8 + index * step
        frames[index, 30:62, left : left + 32] = patch
    return frames


def solid(colour: str, size: int = 64, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 12, (size, size, 3))
    return np.clip(np.array(COLOURS[colour]) + noise, 0, 255).astype(np.uint8)
