"""Codec motion vs the Farneback motion score on the same synthetic clips: how well they agree, and what each costs.

Clips of known, varied motion, encoded with libx264 as real footage is: camera pans (directions and speeds
0..8 px/frame), an object moving over a still background, zooms, and static shots with grain (noise that
flow and the encoder may read as motion), at two sizes and two frame rates. Per clip: `codec_motion` (the
encoder's motion vectors) and `motion_score` (Farneback) two ways: as the score stage runs it by default
(K=3 frames, first/middle/last) and on every consecutive pair (its best case). Reported: Pearson and Spearman
correlation of codec_motion with each, Spearman with the true speed, and seconds per clip of each (the ratio).

usage: python scripts/bench_codec_motion.py [--smoke]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from curate.media.video_frames import decode_frames
from curate.scoring.codec_motion import codec_motion
from curate.scoring.frames import DEFAULT_K, DEFAULT_POSITIONS, sample_frames
from curate.scoring.motion_score import motion_score

SIZES = ((128, 96), (320, 192))
FPS = (8, 24)


def pearson(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])


def ranks(values) -> np.ndarray:
    """Ranks with ties given their mean rank (as Spearman's coefficient wants)."""
    values = np.asarray(values, float)
    ranked = np.empty(len(values))
    ranked[np.argsort(values, kind="stable")] = np.arange(len(values), dtype=float)
    for value in np.unique(values):
        ranked[values == value] = ranked[values == value].mean()
    return ranked


def spearman(a, b) -> float:
    return pearson(ranks(a), ranks(b))


def texture(height: int, width: int, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 256, (max(1, height // 6), max(1, width // 6), 3), np.uint8)
    return cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)


def clip_frames(kind: str, speed: float, size: tuple[int, int], frames: int, seed: int) -> np.ndarray:
    """uint8 [T,H,W,3]; `speed` in pixels per frame at 128 px width (scaled with the clip's width)."""
    width, height = size
    step = speed * width / 128
    rng = np.random.default_rng(seed)
    if kind in ("pan_x", "pan_y", "pan_xy"):
        dx, dy = {"pan_x": (1, 0), "pan_y": (0, 1), "pan_xy": (0.7, 0.7)}[kind]
        big = texture(height + int(step * frames) + 2, width + int(step * frames) + 2, seed)
        return np.stack([big[int(round(t * step * dy)):int(round(t * step * dy)) + height,
                             int(round(t * step * dx)):int(round(t * step * dx)) + width] for t in range(frames)])
    if kind == "object":
        back, patch = texture(height, width, seed), texture(height // 3, height // 3, seed + 1)
        out = np.repeat(back[None], frames, 0)
        side = patch.shape[0]
        for t in range(frames):
            left = int(round(t * step)) % max(1, width - side)
            out[t, height // 3:height // 3 + side, left:left + side] = patch
        return out
    if kind == "zoom":
        base = texture(height, width, seed)
        out = []
        for t in range(frames):
            scale = 1 + t * speed / 100
            m = cv2.getRotationMatrix2D((width / 2, height / 2), 0, scale)
            out.append(cv2.warpAffine(base, m, (width, height), borderMode=cv2.BORDER_REFLECT))
        return np.stack(out)
    if kind == "grain":  # a still shot with sensor-like noise of strength `speed`
        base = texture(height, width, seed).astype(np.float32)
        return np.stack([np.clip(base + rng.normal(0, speed * 3, base.shape), 0, 255).astype(np.uint8)
                         for _ in range(frames)])
    raise ValueError(kind)


def encode(frames: np.ndarray, fps: int, path: Path) -> None:
    height, width = frames.shape[1:3]
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
                    "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
                    "-pix_fmt", "yuv420p", str(path)], input=frames.tobytes(), check=True)


def catalogue(smoke: bool) -> list[tuple[str, float, tuple[int, int], int]]:
    speeds = {"pan_x": (0, 0.5, 1, 2, 4, 8), "pan_y": (1, 3, 6), "pan_xy": (2, 5), "object": (1, 3, 6),
              "zoom": (0.5, 1, 2), "grain": (1, 3, 6)}
    if smoke:
        return [("pan_x", s, SIZES[0], FPS[0]) for s in (0, 2, 6)]
    return [(kind, s, size, fps) for kind, values in speeds.items() for s in values for size in SIZES for fps in FPS]


def measure(path: Path) -> dict:
    started = time.perf_counter()
    codec = codec_motion(path.read_bytes())
    codec_s = time.perf_counter() - started
    started = time.perf_counter()
    default = motion_score(sample_frames(str(path), DEFAULT_K, DEFAULT_POSITIONS))
    default_s = time.perf_counter() - started
    started = time.perf_counter()
    every = motion_score(decode_frames(str(path), lambda n: list(range(n))))
    every_s = time.perf_counter() - started
    return {"codec_motion": codec, "farneback_k3": default, "farneback_all": every, "codec_s": codec_s,
            "farneback_k3_s": default_s, "farneback_all_s": every_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="three clips: checks the script runs")
    parser.add_argument("--frames", type=int, default=24)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for i, (kind, speed, size, fps) in enumerate(catalogue(args.smoke)):
            path = Path(folder) / f"{i}.mp4"
            encode(clip_frames(kind, speed, size, args.frames, seed=i), fps, path)
            if i == 0:
                measure(path)  # warm-up: imports and first-call costs are not charged to either side
            rows.append({"kind": kind, "speed": speed, "size": f"{size[0]}x{size[1]}", "fps": fps, **measure(path)})
    codec = np.array([r["codec_motion"] for r in rows], float)
    moving = [r for r in rows if r["kind"] != "grain"]
    summary = {"clips": len(rows)}
    for other in ("farneback_k3", "farneback_all"):
        values = np.array([r[other] for r in rows], float)
        summary[f"pearson_vs_{other}"] = round(pearson(codec, values), 3)
        summary[f"spearman_vs_{other}"] = round(spearman(codec, values), 3)
        summary[f"seconds_per_clip_{other}"] = round(float(np.mean([r[f"{other}_s"] for r in rows])), 4)
    for name in ("codec_motion", "farneback_k3", "farneback_all"):
        pans = [r for r in moving if r["kind"].startswith("pan")]
        summary[f"spearman_{name}_vs_pan_speed"] = round(spearman([r["speed"] for r in pans], [r[name] for r in pans]), 3)
    summary["seconds_per_clip_codec_motion"] = round(float(np.mean([r["codec_s"] for r in rows])), 4)
    summary["farneback_k3_over_codec_time"] = round(summary["seconds_per_clip_farneback_k3"]
                                                    / summary["seconds_per_clip_codec_motion"], 2)
    summary["farneback_all_over_codec_time"] = round(summary["seconds_per_clip_farneback_all"]
                                                     / summary["seconds_per_clip_codec_motion"], 2)
    by_kind = {}
    for kind in sorted({r["kind"] for r in rows}):
        subset = [r for r in rows if r["kind"] == kind]
        by_kind[kind] = {n: round(float(np.mean([r[n] for r in subset])), 2)
                         for n in ("codec_motion", "farneback_k3", "farneback_all")}
    print(json.dumps({"summary": summary, "mean_by_kind": by_kind}, indent=1))


if __name__ == "__main__":
    main()
