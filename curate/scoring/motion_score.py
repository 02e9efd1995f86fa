"""Motion: mean Farneback optical-flow magnitude between consecutive sampled frames (weight-free)."""

from __future__ import annotations

import cv2
import numpy as np

from curate.scoring.sample import Sample, SampleError, frames_of

NAME = "motion"
VERSION = "1"
MOTION_SCORE = "motion_score"
MOTION_SCORE_ERROR = "motion_score_error"
FLOW_SIDE = 128  # flow is measured on grey frames whose longer side is this many pixels


def grey_downscaled(frame: np.ndarray, longer_side: int = FLOW_SIDE) -> np.ndarray:
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    height, width = grey.shape
    scale = longer_side / max(height, width)
    if scale >= 1.0:
        return grey
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def motion_score(frames: np.ndarray) -> float | None:
    """Mean flow magnitude in pixels of a FLOW_SIDE-pixel frame, averaged over consecutive frame pairs.

    None for fewer than two frames (images). The value grows with the time between sampled frames,
    so compare scores computed with the same frame sampling.
    """
    if len(frames) < 2:
        return None
    greys = [grey_downscaled(frame) for frame in frames]
    magnitudes = []
    for previous, current in zip(greys, greys[1:]):
        flow = cv2.calcOpticalFlowFarneback(previous, current, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        magnitudes.append(float(np.linalg.norm(flow, axis=-1).mean()))
    return float(np.mean(magnitudes))


class MotionScorer:
    """Weight-free, CPU-only scorer for the motion column."""

    name = NAME
    columns = (MOTION_SCORE, MOTION_SCORE_ERROR)

    def check_weights(self) -> None:
        """Weight-free: nothing to resolve."""

    def setup(self) -> None:
        cv2.setNumThreads(1)  # scorers run one per CPU in the engine's pool

    def provenance(self) -> dict:
        return {"scorer": NAME, "version": VERSION, "model": f"opencv-farneback-{cv2.__version__}@{FLOW_SIDE}px"}

    def score_batch(self, samples: list[Sample]) -> list[dict]:
        rows = []
        for sample in samples:
            try:
                rows.append({MOTION_SCORE: motion_score(frames_of(sample)), MOTION_SCORE_ERROR: None})
            except (SampleError, cv2.error) as error:
                rows.append({MOTION_SCORE: None, MOTION_SCORE_ERROR: str(error)})
        return rows
