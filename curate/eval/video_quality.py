"""Weight-free video quality of a folder of clips: temporal flickering, motion, dynamic degree, sharpness, noise.

Dynamic degree follows VBench's rule (Huang et al. 2024, vbench/dynamic_degree.py): per consecutive frame
pair, the mean of the largest 5% optical-flow magnitudes; a pair moves when that exceeds 6.0 px scaled by
the frame's shorter side / 256; a video is dynamic when round(4 * pairs / 16) pairs move. VBench measures
the flow with RAFT at full resolution; here it is the motion scorer's Farneback flow on grey frames 128 px
on the longer side (threshold scaled to that size), so values track VBench's but are not claimed equal.
Sharpness, contrast and noise are the technical-quality scorer's measures.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from curate.eval.metric_stage import ClipMetric, MetricStage, Selection, run_metric
from curate.scoring.motion_score import flow_frames, motion_score
from curate.scoring.technical_quality import contrast, grey_frames, noise_sigma, sharpness

TOP_FRACTION = 0.05  # VBench: mean of the top 5% flow magnitudes of a pair
THRESHOLD_AT_256 = 6.0  # VBench: pixels of flow on a frame whose shorter side is 256
PAIRS_PER_16 = 4  # VBench: moving pairs needed per 16 pairs


def temporal_flickering(frames: np.ndarray) -> float | None:
    """VBench's temporal flickering: (255 - mean |f_t - f_t+1|) / 255 over all pixels, channels and pairs
    (1.0 = no change between frames); None for a single frame."""
    if len(frames) < 2:
        return None
    frames = frames.astype(np.int16)
    return float((255.0 - np.abs(np.diff(frames, axis=0)).mean()) / 255.0)


def pair_motion(frames: np.ndarray) -> tuple[list[float], float]:
    """Per consecutive pair the mean of the top 5% Farneback flow magnitudes, and the VBench threshold at the
    analysed size."""
    greys = flow_frames(frames)
    threshold = THRESHOLD_AT_256 * min(greys.shape[1:3]) / 256.0
    tops = []
    for previous, current in zip(greys, greys[1:]):
        # the motion scorer's Farneback settings (curate/scoring/motion_score.py)
        flow = cv2.calcOpticalFlowFarneback(previous, current, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        magnitude = np.sort(np.linalg.norm(flow, axis=-1).ravel())[::-1]
        tops.append(float(magnitude[: max(1, int(magnitude.size * TOP_FRACTION))].mean()))
    return tops, threshold


def is_dynamic(frames: np.ndarray) -> bool | None:
    """VBench's dynamic/static decision for one clip; None for fewer than two frames."""
    if len(frames) < 2:
        return None
    tops, threshold = pair_motion(frames)
    needed = max(1, round(PAIRS_PER_16 * len(tops) / 16.0))
    return sum(top > threshold for top in tops) >= needed


def clip_quality(frames: np.ndarray) -> dict:
    """All weight-free measures of one clip (uint8 [T,H,W,3])."""
    greys = grey_frames(frames)
    return {
        "temporal_flickering": temporal_flickering(frames),
        "motion_score": motion_score(frames),
        "dynamic": is_dynamic(frames),
        "sharpness": sharpness(greys),
        "contrast": contrast(greys),
        "noise_sigma": noise_sigma(greys),
    }


def summarise(rows: list[dict]) -> dict:
    """Means over clips; dynamic_degree is the share of clips judged dynamic."""
    summary = {"clips": len(rows)}
    for name in ("temporal_flickering", "motion_score", "sharpness", "contrast", "noise_sigma"):
        values = [row[name] for row in rows if row.get(name) is not None]
        summary[name] = float(np.mean(values)) if values else None
    flags = [row["dynamic"] for row in rows if row.get("dynamic") is not None]
    summary["dynamic_degree"] = float(np.mean(flags)) if flags else None
    return summary


PROTOCOL = {
    "temporal_flickering": "VBench: (255 - mean |f_t - f_t+1|) / 255 on RGB uint8 frames",
    "motion_score": "curate motion scorer: mean Farneback flow magnitude, grey frames 128 px longer side",
    "dynamic": f"VBench rule: top {TOP_FRACTION:.0%} flow magnitude > {THRESHOLD_AT_256} px x shorter "
               f"side / 256 in round({PAIRS_PER_16} x pairs / 16) pairs; Farneback at 128 px, not RAFT",
    "sharpness": "variance of the Laplacian, grey frames <= 512 px", "contrast": "RMS contrast",
    "noise_sigma": "Immerkaer 1996 noise standard deviation, grey frames <= 512 px, 0-255 units",
}


@dataclass
class VideoQuality(ClipMetric):
    """The weight-free measures of up to `frames` consecutive frames (every `stride`-th) of each video."""

    name = "video_quality"
    columns = ("temporal_flickering", "motion_score", "dynamic", "sharpness", "contrast", "noise_sigma")
    frames: int = 16
    stride: int = 1

    def settings(self) -> dict:
        return {"frames": self.frames, "stride": self.stride, "start_frame": 0, "measures": PROTOCOL}

    def measurer(self):
        return lambda clips: [clip_quality(clip.frames) for clip in clips]

    def summarise(self, sides: dict[str, Selection]) -> dict:
        (chosen,) = sides.values()
        counts = chosen.counts()
        return {"metric": self.name, **summarise(chosen.rows), "skipped": counts["skipped"],
                "skipped_examples": counts["skipped_examples"],
                "protocol": {"frames": self.frames, "stride": self.stride, "start_frame": 0, **PROTOCOL}}


def video_quality(gen_dir: str, *, frames: int = 16, stride: int = 1, max_clips: int | None = None,
                  workers: int = 2, decode_timeout: float = 60.0, out: str | None = None, force: bool = False,
                  address: str | None = None) -> dict:
    """Weight-free quality of a folder's videos through the metric stage: per-clip rows in GEN_DIR/eval/video_quality/,
    the summary with its protocol and provenance in `out` (default GEN_DIR/eval/video_quality.json), returned with
    the run's counts; a rerun measures nothing again."""
    stage = MetricStage(VideoQuality(frames=frames, stride=stride), {"folder": gen_dir}, max_clips, out, workers,
                        decode_timeout)
    return run_metric(stage, force=force, address=address)
