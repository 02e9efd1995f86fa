"""One pass over a video's frames (streamed, bounded memory): a shot detector's per-frame boundary scores and
transitions, and the frame-to-frame motion that flags static clips. Runs in an isolated decoder process.

Detectors: "transnetv2" (the default: a network, 27x48 frames), PySceneDetect's "content" (HSV change between
frames) and "adaptive" (that change against its neighbours'), fed frames the size its own CLI would decode
(downscaled by an integer factor to about 256 px wide). Scores are 0..1: TransNetV2's probability;
PySceneDetect's content_val / 54 (its default threshold 27 maps to 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate.split.shots import Transition, transitions_from_cuts, transitions_from_scores

DETECTORS = ("transnetv2", "content", "adaptive", "source")
# PySceneDetect's own defaults; TransNetV2 at NeMo Curator's 0.4, not its own 0.5: on the synthetic edits of
# scripts/bench_split.py 0.4 misses 1 of 29 transitions (0.5: 3, each leaving a clip across a cut) for 3 extra cuts
DEFAULT_THRESHOLDS = {"transnetv2": 0.4, "content": 27.0, "adaptive": 3.0}
MOTION_SIZE = (27, 48)  # frames the static-clip motion is measured on (TransNetV2's input size)
SCENEDETECT_WIDTH = 256  # PySceneDetect's auto-downscale target width
CONTENT_SCALE = 54.0  # content_val at which a PySceneDetect score is 1.0


@dataclass
class Scan:
    scores: np.ndarray  # float32 [N]: boundary score of each frame, 0..1
    motion: np.ndarray  # float32 [N]: mean |frame i - frame i-1| of MOTION_SIZE RGB frames (0 for frame 0)
    transitions: list[Transition]
    first_pts: float  # presentation time of frame 0, s
    last_pts: float  # of the last frame


_MODEL = {}  # the TransNetV2 network, loaded once per decoder process


def _scenedetect(detector: str, threshold: float):
    from scenedetect import AdaptiveDetector, ContentDetector

    if detector == "content":
        return ContentDetector(threshold=threshold)
    return AdaptiveDetector(adaptive_threshold=threshold)


def _scenedetect_size(height: int, width: int) -> tuple[int, int]:
    factor = max(1, width // SCENEDETECT_WIDTH)
    return height // factor, width // factor


def _frame_size(path: str) -> tuple[int, int]:
    """(height, width) from the container (this runs in the isolated decoder process)."""
    from curate.media.probe import ProbeError, probe_video_unsafe
    from curate.media.video_frames import VideoDecodeError

    try:
        info = probe_video_unsafe(path, decode_check=False)
    except ProbeError as error:
        raise VideoDecodeError(str(error)) from error
    return info.height, info.width


def scan_video(path: str, detector: str, threshold: float | None = None) -> Scan:
    """Stream `path` once through `detector`. VideoDecodeError when the video cannot be read to its end."""
    import cv2

    from curate.media.video_frames import stream_frames

    threshold = DEFAULT_THRESHOLDS[detector] if threshold is None else threshold
    if detector == "transnetv2":
        from curate.split.transnet import TransNetStream, load_model

        if "transnetv2" not in _MODEL:
            _MODEL["transnetv2"] = load_model()
        model, size, cuts = TransNetStream(_MODEL["transnetv2"]), MOTION_SIZE, None
    else:
        from scenedetect import FrameTimecode

        model, size, cuts = _scenedetect(detector, threshold), _scenedetect_size(*_frame_size(path)), []
        content: list[float] = []
    motion: list[float] = []
    previous, first_pts, last_pts = None, 0.0, 0.0
    for index, pts, frame in stream_frames(path, size=size):
        if index == 0:
            first_pts = pts
        last_pts = pts
        small = frame if size == MOTION_SIZE else cv2.resize(frame, MOTION_SIZE[::-1], interpolation=cv2.INTER_AREA)
        small = small.astype(np.int16)
        motion.append(0.0 if previous is None else float(np.abs(small - previous).mean()))
        previous = small
        if cuts is None:
            model.push(frame)
        else:
            timecode = FrameTimecode(index, fps=25.0)  # PySceneDetect counts frames; the rate only names times
            cuts += [c.frame_num for c in model.process_frame(timecode, np.ascontiguousarray(frame[:, :, ::-1]))]
            content.append(float(getattr(model, "_frame_score", None) or 0.0))
    if cuts is None:
        scores = model.finish()
        transitions = transitions_from_scores(scores, threshold)
    else:
        if content:
            cuts += [c.frame_num for c in model.post_process(FrameTimecode(len(content) - 1, fps=25.0))]
        scores = np.clip(np.asarray(content, np.float32) / CONTENT_SCALE, 0, 1)
        transitions = transitions_from_cuts(cuts, scores)
    return Scan(scores, np.asarray(motion, np.float32), transitions, first_pts, last_pts)
