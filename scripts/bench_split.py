"""Benchmark `curate split` on synthetic edited videos with known transitions, side by side with PySceneDetect.

One run, the same files for everything:
1. per detector (TransNetV2, PySceneDetect content and adaptive, as curate runs them): cut precision and recall
   at +-1 frame, and clips (default settings) that cross a true transition;
2. video-hours split per CPU core-hour: curate's split work (one streamed decode with the content detector, then
   a frame-exact libx264 cut of every shot, crf 18 veryfast) against PySceneDetect's own CLI
   (`scenedetect -i X detect-content split-video --rate-factor 18`, the same detector and encoder settings);
   CPU time is user + system of this process and its children, so threads and ffmpeg processes count;
3. TransNetV2's CPU throughput (frames per CPU second, video-hours per core-hour) from the same scans.

Usage: python scripts/bench_split.py [--smoke]  (--smoke: one small video, seconds)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from curate.media.cut import cut_clip
from curate.split import synthetic
from curate.split.detect import scan_video
from curate.split.shots import ClipSettings, clip_windows, transitions_from_scores

# (width, height, fps, timeline): several resolutions and frame rates
TWICE = synthetic.EDIT + (("cut", 0),) + synthetic.EDIT
FULL = ((320, 180, 25.0, synthetic.EDIT), (256, 144, 24.0, synthetic.EDIT), (160, 96, 12.0, TWICE))
SMOKE = ((96, 64, 12.0, synthetic.EDIT[:3]),)  # two shots, one cut: 66 frames
DETECTORS = ("transnetv2", "content", "adaptive")
TRANSNET_THRESHOLDS = (0.2, 0.3, 0.4, 0.5)  # 0.5: TransNetV2's own default; 0.4: NeMo Curator's


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def make_videos(root: str, sizes) -> list[tuple[str, synthetic.EditedVideo, float]]:
    out = []
    for i, (width, height, fps, timeline) in enumerate(sizes):
        video = synthetic.edited_video(width, height, fps, timeline, seed=i)
        path = os.path.join(root, f"edited_{width}x{height}_{fps:g}.mp4")
        synthetic.write(video, path)
        out.append((path, video, len(video.frames) / fps))
        video.frames = []  # the truth is kept, the pixels are on disk
    return out


def ours(path: str, fps: float, work: str) -> None:
    """curate split's work on one video, content detector, every shot cut (as split-video does)."""
    scan = scan_video(path, "content")
    windows, _ = clip_windows(scan.transitions, scan.scores, scan.motion, fps,
                              ClipSettings(min_seconds=0.0, max_seconds=1e9, trim_frames=0))
    for n, w in enumerate(windows):
        cut_clip(path, w.start, w.end, os.path.join(work, f"clip_{n}.mp4"), fps=fps, crf=18)


def peer(path: str, work: str) -> None:
    scenedetect = os.path.join(os.path.dirname(sys.executable), "scenedetect")
    subprocess.run([scenedetect, "-q", "-i", path, "-o", work, "detect-content", "split-video", "-q",
                    "--rate-factor", "18", "--preset", "veryfast"], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="one small video: checks the script in seconds")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench_split_")
    try:
        videos = make_videos(root, SMOKE if args.smoke else FULL)
        hours = sum(seconds for _, _, seconds in videos) / 3600
        truth = sum(len(v.transitions) for _, v, _ in videos)
        print(f"{len(videos)} videos, {hours * 3600:.0f} s, {truth} true transitions")
        print("\n| detector (threshold) | found | precision | recall | clips crossing a transition | detector CPU s |")
        print("|---|---:|---:|---:|---:|---:|")
        transnet = (0.0, 0)
        for detector in DETECTORS:
            start = cpu_seconds()
            scans = [(scan_video(path, detector), video) for path, video, _ in videos]
            used = cpu_seconds() - start
            if detector == "transnetv2":
                transnet = (used, sum(len(scan.scores) for scan, _ in scans))
            # TransNetV2's scores do not depend on the threshold: the same scans give each threshold's row
            for threshold in TRANSNET_THRESHOLDS if detector == "transnetv2" else (None,):
                tp = fp = fn = crossing = 0
                for scan, video in scans:
                    found = scan.transitions if threshold is None else transitions_from_scores(scan.scores, threshold)
                    hit, miss_found, missed = synthetic.match([(t.start, t.end) for t in found], video.transitions)
                    tp, fp, fn = tp + hit, fp + miss_found, fn + missed
                    windows, _ = clip_windows(found, scan.scores, scan.motion, video.fps, ClipSettings())
                    crossing += synthetic.crossings([(w.start, w.end) for w in windows], video.transitions)
                name = detector if threshold is None else f"{detector} {threshold:g}"
                print(f"| {name} | {tp + fp} | {tp / max(1, tp + fp):.2f} | {tp / max(1, tp + fn):.2f} | {crossing} "
                      f"| {used:.1f} |")
        timings = {}
        for name, run in (("curate split (content, exact cuts)", lambda p, v, w: ours(p, v.fps, w)),
                          ("scenedetect detect-content split-video", lambda p, v, w: peer(p, w))):
            start, wall = cpu_seconds(), time.perf_counter()
            for n, (path, video, _) in enumerate(videos):
                work = os.path.join(root, f"{len(timings)}_{n}")
                os.makedirs(work)
                run(path, video, work)
            timings[name] = (cpu_seconds() - start, time.perf_counter() - wall)
        base = hours / (list(timings.values())[1][0] / 3600)
        print("\n| tool | CPU s | wall s | video-hours per CPU core-hour | vs scenedetect |")
        print("|---|---:|---:|---:|---:|")
        for name, (cpu, wall) in timings.items():
            rate = hours / (cpu / 3600)
            print(f"| {name} | {cpu:.1f} | {wall:.1f} | {rate:.0f} | {rate / base:.2f}x |")
        used, count = transnet
        print(f"\nTransNetV2 on CPU ({os.cpu_count()} cores): {count / used:.0f} frames per CPU second, "
              f"{hours / (used / 3600):.1f} video-hours per CPU core-hour (detection only)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
