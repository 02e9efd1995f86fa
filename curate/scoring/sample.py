"""The sample a scorer receives: key, modality, decoded frames (or why there are none), caption, sha256."""

from __future__ import annotations

from typing import TypedDict

import numpy as np


class Sample(TypedDict, total=False):
    key: str
    modality: str  # "video" | "image"
    frames: np.ndarray | None  # uint8 [K,H,W,3]; None when decoding failed
    clip_frames: np.ndarray | None  # uint8 [K,h,w,3]: CLIP's first resize of the original frames, when made
    decode_error: str | None  # why frames is None
    caption: str | None
    sha256: str | None
    media: bytes | None  # the encoded file, only for scorers that read the bitstream (needs_media)


class SampleError(ValueError):
    """This one sample cannot be scored; its message becomes the sample's `<scorer>_error` value."""


def frames_of(sample: Sample) -> np.ndarray:
    """The sample's frames, validated, or SampleError saying why there are none."""
    frames = sample.get("frames")
    if frames is None:
        raise SampleError(sample.get("decode_error") or "no decoded frames")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise SampleError(f"frames must be uint8 [K,H,W,3] with K >= 1, got {frames.dtype} {frames.shape}")
    return frames


def clip_frames_of(sample: Sample) -> np.ndarray:
    """The frames CLIP should see: the decoder's CLIP resize of the originals when present (exact open_clip
    inputs above the decode cap; the capped frames may then have been left behind), else the sample's frames."""
    clip = sample.get("clip_frames")
    return frames_of(sample) if clip is None else frames_of({**sample, "frames": clip})
