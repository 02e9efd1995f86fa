"""World metrics: does a video show what a toy-world prompt asks (colour, shape, motion) and how clean is it?

Pure functions on uint8 [T,H,W,3] frames, any resolution. The object is found per frame as the pixels whose
RGB distance from the background (the frame's median colour: the shape covers well under half the frame) is
at least half of the frame's strongest difference (half-maximum, so blur and low contrast do not change the
extent). From that mask:
- colour: hue of the mask's mean colour, nearest palette hue (hue survives low contrast and blur);
- shape: fill ratio of the object in its bounding box (square 1, circle pi/4, triangle 1/2), majority over frames;
- motion: the mask centroid's net displacement first -> last frame; under MIN_NET of the frame side is "still",
  otherwise the dominant axis and its sign (image y grows downwards);
- speed: net displacement per frame, in frame sides; jitter: mean per-frame step minus that (0 for a constant
  straight path; large when the object jumps around frame to frame);
- edge strength: mean of the top EDGE_TOP share of Sobel gradient magnitudes of the grey frame, / 255;
- object contrast: RGB distance between the object's and the background's mean colours, / (255 sqrt 3);
- flicker: standard deviation over frames of the background colour (0-255);
- mark strength: the videos' watermark (world.MARK_BOX, scaled to the frame): median grey level in its box minus
  the median grey level elsewhere, object pixels left out of both, / 255; ~0 for clean frames.
A frame with no clear object (strongest difference < MIN_OBJECT grey levels) has no mask: colour, shape and
motion then count as wrong.
"""

from __future__ import annotations

import colorsys
import math
from collections import Counter

import cv2
import numpy as np

from curate.demo import world

MIN_OBJECT = 12.0  # RGB distance (0-255 units) under which a frame holds no object
MIN_NET = 0.1  # net displacement (frame sides) under which an object is still; the world moves 0.44
EDGE_TOP = 0.1
# Fill-ratio class edges (ideal: triangle 1/2, circle pi/4, square 1). Measured on the world's clean shapes:
# triangle 0.54-0.58 at 32 px but 0.60-0.71 at 16 px (its tip is under a pixel), circle 0.80-0.81, square 1.0.
FILL_EDGES = ((0.75, "triangle"), (0.9, "circle"), (math.inf, "square"))
PALETTE_HUES = {name: colorsys.rgb_to_hsv(*(np.asarray(rgb) / 255.0))[0] for name, rgb in world.COLORS.items()}


def object_mask(frame: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(bool mask [H,W] of the object or None, background colour [3], soft coverage [H,W] in [0, 1]) of one
    frame; coverage is each pixel's difference over the object's peak: the share of it the object covers."""
    pixels = frame.reshape(-1, 3).astype(np.float32)
    background = np.median(pixels, axis=0)
    distance = np.linalg.norm(frame.astype(np.float32) - background, axis=-1)
    peak = float(np.percentile(distance, 99))
    coverage = np.clip(distance / max(peak, 1e-6), 0, 1)
    if peak < MIN_OBJECT:
        return None, background, coverage
    mask = distance >= 0.5 * peak
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return None, background, coverage
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))  # noise specks are not the object
    return labels == largest, background, coverage


def hue_name(rgb: np.ndarray) -> str:
    hue = colorsys.rgb_to_hsv(*(np.clip(rgb, 0, 255) / 255.0))[0]
    return min(PALETTE_HUES, key=lambda name: min(abs(hue - PALETTE_HUES[name]), 1 - abs(hue - PALETTE_HUES[name])))


def shape_name(mask: np.ndarray, coverage: np.ndarray) -> str:
    """Nearest fill ratio: the object's soft area over its soft width x height (a column's width share is its
    largest coverage). Anti-aliased edge pixels count in part, which a 6 px shape at 16 px needs."""
    near = coverage * cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8))
    width, height = near.max(axis=0).sum(), near.max(axis=1).sum()
    fill = near.sum() / max(width * height, 1e-6)
    return next(name for edge, name in FILL_EDGES if fill < edge)


def edge_strength(frame: np.ndarray) -> float:
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    magnitude = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)).ravel()
    top = np.sort(magnitude)[::-1][: max(1, int(magnitude.size * EDGE_TOP))]
    return float(top.mean() / 255.0 / 4.0)  # a Sobel kernel sums 4 x the step it crosses


def mark_strength(frame: np.ndarray, mask: np.ndarray | None) -> float | None:
    """How much brighter the watermark's box is than the background, in [−1, 1]; None when the object covers it."""
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = world.MARK_BOX
    box = np.zeros((height, width), bool)
    box[round(y0 * height / world.SIZE):round(y1 * height / world.SIZE),
        round(x0 * width / world.SIZE):round(x1 * width / world.SIZE)] = True
    free = np.ones_like(box) if mask is None else ~mask
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    inside, outside = grey[box & free], grey[~box & free]
    if inside.size == 0 or outside.size == 0:
        return None
    return float((np.median(inside) - np.median(outside)) / 255.0)  # medians: noise reads ~0, not its skew


def direction_of(net: np.ndarray, side: int) -> str:
    if np.linalg.norm(net) / side < MIN_NET:
        return "still"
    if abs(net[0]) >= abs(net[1]):
        return "right" if net[0] > 0 else "left"
    return "down" if net[1] > 0 else "up"


def majority(labels: list[str]) -> str:
    """The most frequent label; a tie goes to the one seen first (max over a set broke ties by string hash, which
    changes per process: the same frames scored differently on a rerun)."""
    return Counter(labels).most_common(1)[0][0]


def measure(frames: np.ndarray, prompt: str) -> dict:
    """One video's world metrics against the prompt's ground truth."""
    color, shape, motion = world.parse_caption(prompt)
    side = max(frames.shape[1:3])
    masks, backgrounds, colours, shapes, centres, contrasts, marks = [], [], [], [], [], [], []
    for frame in frames:
        mask, background, coverage = object_mask(frame)
        backgrounds.append(background)
        masks.append(mask)
        mark = mark_strength(frame, mask)
        marks += [] if mark is None else [mark]
        if mask is None:
            continue
        mean = frame[mask].astype(np.float32).mean(axis=0)
        colours.append(hue_name(mean))
        shapes.append(shape_name(mask, coverage))
        ys, xs = np.nonzero(mask)
        centres.append((xs.mean(), ys.mean()))
        contrasts.append(float(np.linalg.norm(mean - background) / (255 * math.sqrt(3))))
    found = len(centres) == len(frames)
    row = {
        "prompt": prompt, "color": color, "shape": shape, "motion": motion,
        "object_frames": len(centres) / len(frames),
        "color_ok": bool(colours) and majority(colours) == color,
        "shape_ok": bool(shapes) and majority(shapes) == shape,
        "edge_strength": float(np.mean([edge_strength(f) for f in frames])),
        "object_contrast": float(np.mean(contrasts)) if contrasts else 0.0,
        "flicker": float(np.std(np.asarray(backgrounds), axis=0).mean()),
        "mark_strength": float(np.mean(marks)) if marks else None,
        "predicted_motion": None, "motion_ok": False, "speed": None, "jitter": None,
    }
    if found and len(frames) > 1:
        path = np.asarray(centres)
        net = path[-1] - path[0]
        row["speed"] = float(np.linalg.norm(net) / side / (len(frames) - 1))
        row["jitter"] = float(np.linalg.norm(np.diff(path, axis=0), axis=1).mean() / side - row["speed"])
        row["predicted_motion"] = direction_of(net, side)
        row["motion_ok"] = row["predicted_motion"] == motion
    return row


def summarise(rows: list[dict]) -> dict:
    """Means over videos. direction_accuracy counts only prompts that move (chance 0.25 among four directions);
    speed and jitter average the videos whose object was found in every frame."""
    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    moving = [r for r in rows if r["motion"] in world.DIRECTIONS]
    still = [r for r in rows if r["motion"] == "still"]
    return {
        "videos": len(rows),
        "color_accuracy": mean([float(r["color_ok"]) for r in rows]),
        "shape_accuracy": mean([float(r["shape_ok"]) for r in rows]),
        "direction_accuracy": mean([float(r["motion_ok"]) for r in moving]),
        "still_accuracy": mean([float(r["motion_ok"]) for r in still]),
        "speed": mean([r["speed"] for r in rows]),
        "jitter": mean([r["jitter"] for r in rows]),
        "edge_strength": mean([r["edge_strength"] for r in rows]),
        "object_contrast": mean([r["object_contrast"] for r in rows]),
        "flicker": mean([r["flicker"] for r in rows]),
        "mark_strength": mean([r["mark_strength"] for r in rows]),
        "object_found": mean([r["object_frames"] for r in rows]),
    }
