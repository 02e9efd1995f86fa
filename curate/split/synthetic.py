"""Synthetic edited videos with known transitions (hard cuts, fades, dissolves) and traps that are not cuts (a flash,
a fast pan, a static shot), and the cut precision/recall of a detector against them: for tests, the benchmark and
the demo's long video."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# A timeline: ("shot", seconds, kind) with kind one of SHOT_KINDS, or (transition, frames) between two shots with
# transition one of "cut" (frames ignored), "fade" (to black and back), "dissolve" (a crossfade).
SHOT_KINDS = ("pan", "object", "flash", "fast_pan", "static")
EDIT = (("shot", 2.5, "pan"), ("cut", 0), ("shot", 3.0, "object"), ("dissolve", 12), ("shot", 2.5, "flash"),
        ("cut", 0), ("shot", 3.0, "fast_pan"), ("fade", 16), ("shot", 2.5, "static"), ("cut", 0),
        ("shot", 2.0, "object"), ("cut", 0), ("shot", 3.5, "pan"), ("dissolve", 20), ("shot", 2.5, "object"))


@dataclass
class EditedVideo:
    """A video's frames and its true transitions: (start, end) frames that belong to no shot (start == end: a
    hard cut before frame `start`)."""

    frames: list[np.ndarray]
    fps: float
    transitions: list[tuple[int, int]] = field(default_factory=list)


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random colour field (low-frequency noise upsampled), distinct per shot."""
    from PIL import Image

    coarse = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    tint = rng.uniform(0.4, 1.0, 3).astype(np.float32)
    return np.clip(base * tint + rng.uniform(0, 60), 0, 255)


def _shot(rng: np.random.Generator, kind: str, count: int, height: int, width: int) -> list[np.ndarray]:
    speed = {"pan": width / 200, "object": width / 400, "flash": width / 200, "fast_pan": width / 12,
             "static": 0.0}[kind]
    wide = _texture(rng, height, width + int(np.ceil(count * speed)) + 1)  # wide enough: a pan never wraps
    colour = rng.integers(0, 256, 3).astype(np.float32)
    frames = []
    for i in range(count):
        x = int(round(i * speed))
        frame = wide[:, x:x + width].copy()
        if kind in ("object", "flash"):
            size = max(4, height // 4)
            cx = int((i * width / (2 * count)) + width / 4) % (width - size)
            cy = int(height / 3 + height / 6 * np.sin(i / 6))
            frame[cy:cy + size, cx:cx + size] = colour
        if kind == "flash" and count // 2 <= i < count // 2 + 2:  # a photographer's flash: two white frames
            frame = np.minimum(frame * 0.2 + 220, 255)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))  # uint8 already: long videos stay small in memory
    return frames


def edited_video(width: int = 96, height: int = 64, fps: float = 24.0, timeline=EDIT, seed: int = 0) -> EditedVideo:
    """The timeline rendered at width x height and fps, with its true transitions."""
    rng = np.random.default_rng(seed)
    shots = [_shot(rng, kind, max(2, int(round(seconds * fps))), height, width)
             for what, seconds, kind in (t for t in timeline if t[0] == "shot")]
    out: list[np.ndarray] = list(shots[0])
    transitions = []
    links = [t for t in timeline if t[0] != "shot"]
    for (kind, frames), shot in zip(links, shots[1:]):
        start = len(out)
        if kind == "dissolve":
            take = shot[:frames]
            for i in range(frames):
                alpha = (i + 1) / (frames + 1)
                out[start - frames + i] = out[start - frames + i] * (1 - alpha) + take[i] * alpha
            transitions.append((start - frames, start))
            out.extend(shot[frames:])
            continue
        if kind == "fade":
            half = frames // 2
            tail = len(out) - half
            for i in range(half):
                out[tail + i] = out[tail + i] * (1 - (i + 1) / (half + 1))
            head = [shot[i] * ((i + 1) / (half + 1)) for i in range(half)]
            transitions.append((tail, tail + 2 * half))
            out.extend(head + list(shot[half:]))
            continue
        transitions.append((start, start))
        out.extend(shot)
    frames = [np.ascontiguousarray(np.clip(f, 0, 255).astype(np.uint8)) for f in out]
    return EditedVideo(frames, fps, transitions)


def write(video: EditedVideo, path: str, crf: int = 20) -> None:
    """H.264 with the project's encoder (the demo corpus's)."""
    from curate.media.transcode import write_mp4

    write_mp4(path, video.frames, fps=video.fps, crf=crf)


def match(found: list[tuple[int, int]], truth: list[tuple[int, int]], tolerance: int = 1) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives): a found transition (start, end) matches an unmatched
    true one when they overlap with `tolerance` frames of slack (a cut found at +-1 frame counts)."""
    left = list(truth)
    tp = 0
    for start, end in found:
        hit = next((t for t in left if start - tolerance <= t[1] and end + tolerance >= t[0]), None)
        if hit is not None:
            left.remove(hit)
            tp += 1
    return tp, len(found) - tp, len(left)


def crossings(windows: list[tuple[int, int]], truth: list[tuple[int, int]]) -> int:
    """Clips [start, end) that hold frames from both sides of a true transition."""
    return sum(1 for a, b in windows for ta, tb in truth if a < ta and b > max(tb, ta))
