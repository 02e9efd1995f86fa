"""Motion: mean Farneback optical-flow magnitude between consecutive sampled frames (weight-free)."""

from __future__ import annotations

import cv2
import numpy as np

from curate.media.geometry import longer_side_size
from curate.scoring.frames import resize_frames, to_grey
from curate.scoring.registry import CPU, ScorerSpec
from curate.scoring.sample import Sample, SampleError, frames_of

NAME = "motion"
VERSION = "2"  # 2: frames under FLOW_SIDE are enlarged to it (v1 measured them at their own size)
MOTION_SCORE = "motion_score"
MOTION_SCORE_ERROR = "motion_score_error"
FLOW_SIDE = 128  # flow is measured on grey frames resized (down or up) so their longer side is this many pixels


def flow_frames(frames: np.ndarray, side: int = FLOW_SIDE) -> np.ndarray:
    """uint8 [K,h,w] grey frames with the longer side exactly `side`: every input size is measured at one
    scale, so displacements are in the same units (a 64 px clip is enlarged, a 512 px one shrunk)."""
    greys = to_grey(frames)
    return resize_frames(greys, *longer_side_size(*greys.shape[1:3], side))


def motion_score(frames: np.ndarray) -> float | None:
    """Mean flow magnitude in pixels of a FLOW_SIDE-pixel frame, averaged over consecutive frame pairs.

    None for fewer than two frames (images). The value grows with the time between sampled frames,
    so compare scores computed with the same frame sampling.
    """
    if len(frames) < 2:
        return None
    greys = flow_frames(frames)
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


SPEC = ScorerSpec(NAME, MotionScorer.columns, CPU, lambda context: MotionScorer())
