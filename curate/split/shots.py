"""From a detector's per-frame transition scores to clip windows: transitions, shots, trimming, length limits,
long shots cut into windows, gradual transitions, static clips. Pure functions of arrays (no decoding)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRADUAL = ("trim", "drop")  # what happens at a gradual transition (ClipSettings.gradual)
GRADUAL_FRAMES = 3  # a transition marked on at least this many frames is gradual (fade, dissolve); a cut has 1-2


@dataclass(frozen=True)
class Transition:
    """Frames [start, end) belong to no shot (end == start: a hard cut between frames start-1 and start)."""

    start: int
    end: int
    score: float  # the detector's highest boundary score on it, 0..1

    @property
    def gradual(self) -> bool:
        return self.end - self.start >= GRADUAL_FRAMES


@dataclass(frozen=True)
class ClipSettings:
    min_seconds: float = 2.0
    max_seconds: float = 60.0
    trim_frames: int = 1  # dropped at each end of a shot: detectors place a cut to +-1 frame
    gradual: str = "trim"  # "trim": the transition's frames are left out; "drop": shots beside it are dropped too
    static_threshold: float = 0.5  # median |frame difference| (0-255, 48x27 frames) below which a clip is static
    drop_static: bool = False


@dataclass(frozen=True)
class Window:
    """A clip: frames [start, end) of its parent."""

    start: int
    end: int
    boundary_confidence: float | None  # the weaker of its two cut scores (None: no detected cut on either side)
    inside_score: float  # the highest boundary score among its own frames (near the threshold: a possible miss)
    motion: float  # median over its frames of the mean |difference| between consecutive small frames
    static: bool


def transitions_from_scores(scores: np.ndarray, threshold: float) -> list[Transition]:
    """Runs of frames scoring above `threshold` (TransNetV2's reading of its per-frame predictions)."""
    above = np.concatenate([[False], scores > threshold, [False]])
    edges = np.flatnonzero(above[1:] != above[:-1])
    return [Transition(int(a), int(b), float(scores[a:b].max())) for a, b in zip(edges[::2], edges[1::2])]


def transitions_from_cuts(cuts: list[int], scores: np.ndarray) -> list[Transition]:
    """Hard cuts at the given first frames of new shots (PySceneDetect's output), scored from `scores`."""
    return [Transition(c, c, float(scores[c])) for c in sorted(set(cuts)) if 0 < c < len(scores)]


Shot = tuple[int, int, float | None, float | None]  # start, end, score of the cut before, of the cut after


def shots(transitions: list[Transition], count: int, gradual: str = "trim") -> list[Shot]:
    """(start, end, score of the cut before, score of the cut after) of every shot between the transitions;
    with gradual="drop" the shots on either side of a gradual transition are left out."""
    out, start, before, drop_next = [], 0, None, False
    for t in sorted(transitions, key=lambda t: t.start):
        drop = drop_next or (gradual == "drop" and t.gradual)
        if t.start > start and not drop:
            out.append((start, t.start, before, t.score))
        start, before, drop_next = max(start, t.end), t.score, gradual == "drop" and t.gradual
    if count > start and not drop_next:
        out.append((start, count, before, None))
    return out


def _pieces(start: int, end: int, longest: int) -> list[tuple[int, int]]:
    """[start, end) cut into the fewest equal pieces of at most `longest` frames."""
    n = -(-(end - start) // longest)
    bounds = [start + round(i * (end - start) / n) for i in range(n + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def clip_windows(transitions: list[Transition], scores: np.ndarray, motion: np.ndarray, fps: float,
                 settings: ClipSettings) -> tuple[list[Window], dict[str, int]]:
    """The clips of one video and how many shots were dropped, by reason. `scores[i]`: boundary score of frame
    i; `motion[i]`: mean |frame i - frame i-1| (motion[0] = 0)."""
    count = len(scores)
    shortest = max(1, int(np.ceil(settings.min_seconds * fps - 1e-9)))
    longest = max(shortest, int(np.floor(settings.max_seconds * fps + 1e-9)))
    dropped = {"short": 0, "static": 0}
    out = []
    for start, end, before, after in shots(transitions, count, settings.gradual):
        start, end = start + settings.trim_frames, end - settings.trim_frames
        if end - start < shortest:
            dropped["short"] += 1
            continue
        cuts = [s for s in (before, after) if s is not None]
        for a, b in _pieces(start, end, longest):
            # motion between frames of this clip only (motion[a] compares frame a with a-1, outside); the median,
            # so that a few frames of a fade left at an end do not make a static shot look moving
            moving = float(np.median(motion[a + 1:b])) if b - a > 1 else 0.0
            static = moving < settings.static_threshold
            if static and settings.drop_static:
                dropped["static"] += 1
                continue
            out.append(Window(a, b, min(cuts) if cuts else None, float(scores[a:b].max()), moving, static))
    return out, dropped
