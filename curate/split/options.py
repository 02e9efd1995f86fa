"""The split stage's options (`curate split` flags and a recipe's `split:` keys, from these fields alone)."""

from __future__ import annotations

from dataclasses import dataclass, field

from curate.config import ConfigError, option_help
from curate.media.cut import MODES
from curate.split.detect import DETECTORS
from curate.split.shots import GRADUAL


@dataclass
class SplitSection:
    detector: str = field(default="transnetv2", metadata=option_help(
        "Shot detector: transnetv2 (network, GPU when present), content or adaptive (PySceneDetect), source "
        "(the rows' own `windows`)."))
    threshold: float | None = field(default=None, metadata=option_help(
        "Detector threshold (default: transnetv2 0.4 as NeMo Curator, measured best in scripts/bench_split.py; "
        "content 27 and adaptive 3, PySceneDetect's own)."))
    min_clip: float = field(default=2.0, metadata=option_help("Shots shorter than this many seconds are dropped.", min=0.0))
    max_clip: float = field(default=60.0, metadata=option_help(
        "Shots longer than this many seconds are cut into equal windows no longer than it.", min=0.1))
    trim_frames: int = field(default=1, metadata=option_help("Frames dropped at each end of a shot.", min=0))
    gradual: str = field(default="trim", metadata=option_help(
        "Gradual transitions (fade, dissolve): trim (their frames left out) or drop (the shots beside them too)."))
    static_threshold: float = field(default=0.5, metadata=option_help(
        "Median frame difference (0-255, 48x27 frames) below which a clip is flagged static.", min=0.0))
    drop_static: bool = field(default=False, metadata=option_help("Drop static clips instead of flagging them."))
    cut: str = field(default="exact", metadata=option_help(
        "exact (decode + libx264 re-encode, frame-exact) or keyframe (stream copy: fast, starts at the keyframe "
        "at or before the window)."))
    max_side: int | None = field(default=None, metadata=option_help(
        "Scale clips so the longer side is at most this (default: the source resolution).", min=16))
    crf: int = field(default=18, metadata=option_help("libx264 quality of exact cuts (lower is better).", min=0, max=51))
    video_timeout: float = field(default=7200.0, metadata=option_help(
        "Seconds one video's shot detection may take before it is a failure row.", min=1.0))
    out: str = field(default="clips", metadata=option_help(
        "Recipes: the clips' dataset folder; a relative path is beside the dataset folder."))

    def __post_init__(self):
        for name, allowed in (("detector", DETECTORS), ("cut", MODES), ("gradual", GRADUAL)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"split.{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if self.cut == "keyframe" and self.max_side:
            raise ConfigError("split.max_side needs cut: exact (a stream copy cannot scale)")
        if self.min_clip > self.max_clip:
            raise ConfigError(f"split.min_clip ({self.min_clip}) is longer than split.max_clip ({self.max_clip})")
