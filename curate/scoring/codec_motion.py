"""Codec motion: the mean length of the motion vectors the encoder stored, read while decoding (no optical flow):
a near-free prefilter before the Farneback motion score."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curate.media.isolated import IsolatedFailure, IsolatedWorker
from curate.media.video_frames import VideoDecodeError, motion_vectors
from curate.scoring.motion_score import FLOW_SIDE
from curate.scoring.registry import CPU, ScorerSpec
from curate.scoring.sample import Sample

NAME = "codec_motion"
VERSION = "1"
CODEC_MOTION = "codec_motion"
CODEC_MOTION_ERROR = "codec_motion_error"
MAX_FRAMES = 300  # frames read per clip (10 s at 30 fps): the cost stays bounded on long videos
TIMEOUT_S = 60.0


def codec_motion(video: bytes | str | Path, max_frames: int = MAX_FRAMES) -> float | None:
    """Mean over the inter-coded frames of the block-area-weighted mean motion-vector length, in pixels of a frame
    whose longer side is FLOW_SIDE (motion_score's units). Skipped blocks count as zero vectors; intra-coded
    blocks are not counted. A vector spans the distance to its reference frame, which the encoder chose (usually
    the neighbour, a few frames for B-frames). None when no frame is inter-coded (one frame, an intra-only
    codec such as MJPEG or ProRes)."""
    per_frame = []
    for _, (height, width), vectors in motion_vectors(video, stop=max_frames):
        if vectors is None or not len(vectors):
            continue
        scale = np.maximum(vectors["motion_scale"].astype(np.float64), 1.0)
        length = np.hypot(vectors["motion_x"] / scale, vectors["motion_y"] / scale)
        area = vectors["w"].astype(np.float64) * vectors["h"]
        per_frame.append(float((length * area).sum() / area.sum()) * FLOW_SIDE / max(height, width))
    return float(np.mean(per_frame)) if per_frame else None


class CodecMotionScorer:
    """Weight-free, CPU-only; reads the sample's encoded media (not its decoded frames) in an isolated child, so
    a hostile file costs that sample."""

    name = NAME
    columns = (CODEC_MOTION, CODEC_MOTION_ERROR)
    needs_media = True  # the scoring stage hands this scorer the encoded bytes

    def __init__(self, timeout_s: float = TIMEOUT_S):
        self.timeout_s = timeout_s
        self._worker: IsolatedWorker | None = None

    def check_weights(self) -> None:
        """Weight-free: nothing to resolve."""

    def setup(self) -> None:
        self._worker = IsolatedWorker(codec_motion, self.timeout_s)

    def provenance(self) -> dict:
        import av

        return {"scorer": NAME, "version": VERSION, "model": f"ffmpeg-export_mvs-pyav-{av.__version__}@{FLOW_SIDE}px",
                "max_frames": MAX_FRAMES}

    def _score(self, sample: Sample) -> dict:
        if sample.get("modality") != "video":
            return {CODEC_MOTION: None, CODEC_MOTION_ERROR: None}  # images have no motion, as motion_score
        media = sample.get("media")
        if media is None:
            return {CODEC_MOTION: None, CODEC_MOTION_ERROR: sample.get("decode_error") or "no encoded media"}
        try:
            return {CODEC_MOTION: self._worker.call(media), CODEC_MOTION_ERROR: None}
        except (IsolatedFailure, VideoDecodeError) as error:
            return {CODEC_MOTION: None, CODEC_MOTION_ERROR: str(error)}

    def score_batch(self, samples: list[Sample]) -> list[dict]:
        if self._worker is None:
            self.setup()
        return [self._score(sample) for sample in samples]


SPEC = ScorerSpec(NAME, CodecMotionScorer.columns, CPU, lambda context: CodecMotionScorer())
