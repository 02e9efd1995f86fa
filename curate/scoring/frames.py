"""Frames for scoring: a video's sampled frames or an image as one frame, optionally crash-isolated; resize, grey."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np

from curate.media.geometry import fit_within_size
from curate.media.isolated import IsolatedFailure, IsolatedWorker
from curate.media.video_frames import VideoDecodeError, decode_frames

POSITIONS = ("first,middle,last", "uniform")
DEFAULT_K = 3
DEFAULT_POSITIONS = "first,middle,last"
# Largest side worth decoding for the scorers: quality measures at <= 512 px, motion at 128 px, CLIP at
# 224-336 px on the shorter side. Downscaling right after decoding keeps frames small in transit.
DECODE_MAX_SIDE = 512

VideoInput = bytes | str | Path


class FrameDecodeError(ValueError):
    """A sample's media could not be turned into frames (corrupt file, decoder crash, timeout)."""


def frame_indices(num_frames: int, k: int = DEFAULT_K, positions: str = DEFAULT_POSITIONS) -> list[int]:
    """Sorted distinct frame indices to sample; fewer than k when the video is shorter than k frames."""
    if num_frames < 1:
        raise FrameDecodeError("video has no frames")
    if positions == "first,middle,last":
        picked = [0, (num_frames - 1) // 2, num_frames - 1]
    elif positions == "uniform":
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        picked = np.linspace(0, num_frames - 1, k).round().astype(int).tolist()
    else:
        raise ValueError(f"unknown frame positions {positions!r}; expected one of {POSITIONS}")
    return sorted(set(picked))


def sample_frames(video: VideoInput, k: int = DEFAULT_K, positions: str = DEFAULT_POSITIONS) -> np.ndarray:
    """Decode the sampled frames of a video (bytes or path) into uint8 [K,H,W,3] RGB, through the one decoder
    (decord, PyAV where decord fails). Raises FrameDecodeError where neither decodes; decord can also abort the
    whole process on some corrupt inputs: callers that must survive that use decode_isolated / IsolatedDecoder."""
    try:
        return decode_frames(video, lambda count: frame_indices(count, k, positions))
    except VideoDecodeError as error:
        raise FrameDecodeError(f"the video could not be decoded: {error}") from error


def load_image(image: bytes | str | Path) -> np.ndarray:
    """Decode an image into uint8 [1,H,W,3] RGB (an image is a one-frame clip for the scorers)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as picture:
            rgb = np.asarray(picture.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise FrameDecodeError(f"image could not be decoded: {error}") from error
    return rgb[None]


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [K,H,W] or [K,H,W,C] frames resized to height x width: area averaging when shrinking (no
    aliasing), bilinear when enlarging (area would repeat pixels in blocks)."""
    import cv2

    if frames.shape[1:3] == (height, width):
        return frames
    shrinking = height * width < frames.shape[1] * frames.shape[2]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.stack([cv2.resize(frame, (width, height), interpolation=interpolation) for frame in frames])


def fit_within(frames: np.ndarray, max_side: int) -> np.ndarray:
    """Frames downscaled (aspect kept, never up) so that the longer side is at most max_side."""
    return resize_frames(frames, *fit_within_size(*frames.shape[1:3], max_side))


def to_grey(frames: np.ndarray) -> np.ndarray:
    """uint8 [K,H,W,3] RGB -> uint8 [K,H,W] luma (ITU-R BT.601 weights, as OpenCV's RGB2GRAY)."""
    import cv2

    return np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames])


# torchvision's InterpolationMode values -> the PIL filter its Resize uses on a PIL image
PIL_FILTERS = {"nearest": 0, "nearest-exact": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


def clip_first_resize(frames: np.ndarray, size: int, interpolation: str = "bicubic") -> np.ndarray:
    """open_clip's first eval step (torchvision Resize(size) on PIL: shorter side = size) on full-resolution
    frames. Done where the frames are decoded, so CLIP sees exactly what open_clip's transform makes of the
    original, whatever cap the other scorers' frames get; the rest of the transform (Resize again is a no-op,
    CenterCrop, Normalize) runs in the embedder.

    Torchvision's steps written with PIL alone (the longer side truncated, a frame already at size left as it is,
    the same filter; tests/scoring/test_clip_reference.py checks equality with open_clip's transform): importing
    torchvision would load torch into the decoder's child, 5-15 CPU s for every score task on the dev machine."""
    from PIL import Image

    if interpolation not in PIL_FILTERS:
        raise ValueError(f"CLIP interpolation {interpolation!r}; choose from {', '.join(PIL_FILTERS)}")
    resized = []
    for frame in frames:
        height, width = frame.shape[:2]
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size, int(size * long / short)
        new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
        if (new_height, new_width) == (height, width):
            resized.append(frame)
        else:
            resized.append(np.asarray(Image.fromarray(frame).resize((new_width, new_height), PIL_FILTERS[interpolation])))
    return np.stack(resized)


def decode_media(
    media: bytes | str | Path,
    modality: str,
    k: int = DEFAULT_K,
    positions: str = DEFAULT_POSITIONS,
    max_side: int | None = None,
    clip_resize: tuple[int, str] | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Frames of one sample: sampled video frames or the image as a single frame, optionally downscaled.
    With `clip_resize` (size, interpolation) also CLIP's first resize of the original frames: (frames, clip)."""
    if modality == "video":
        frames = sample_frames(media, k, positions)
    elif modality == "image":
        frames = load_image(media)
    else:
        raise FrameDecodeError(f"unknown modality {modality!r}")
    capped = fit_within(frames, max_side) if max_side else frames
    if clip_resize is None:
        return capped
    return capped, clip_first_resize(frames, *clip_resize)


DecodeFn = Callable[..., np.ndarray | tuple[np.ndarray, np.ndarray]]


class IsolatedDecoder:
    """Decodes in a long-lived child (curate.media.isolated); a crash, abort or timeout there becomes
    FrameDecodeError here, and the next request starts a fresh child, so one poisonous file costs one
    sample, not the worker."""

    def __init__(self, timeout_s: float = 60.0, decode: DecodeFn = decode_media):
        self._worker = IsolatedWorker(decode, timeout_s)

    def __enter__(self) -> "IsolatedDecoder":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def decode(
        self,
        media: bytes | str | Path,
        modality: str = "video",
        k: int = DEFAULT_K,
        positions: str = DEFAULT_POSITIONS,
        max_side: int | None = None,
        clip_resize: tuple[int, str] | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        try:
            if clip_resize is None:
                return self._worker.call(media, modality, k, positions, max_side)
            return self._worker.call(media, modality, k, positions, max_side, clip_resize)
        except IsolatedFailure as error:
            raise FrameDecodeError(f"decoding {error} on this sample") from None
        except FrameDecodeError:
            raise
        except Exception as error:  # any Python-level failure of one sample is that sample's error
            raise FrameDecodeError(f"{type(error).__name__}: {error}") from None

    def close(self) -> None:
        self._worker.close()


def decode_isolated(
    media: bytes | str | Path,
    modality: str = "video",
    k: int = DEFAULT_K,
    positions: str = DEFAULT_POSITIONS,
    max_side: int | None = None,
    timeout_s: float = 60.0,
) -> np.ndarray:
    """Decode one sample in a fresh child process (one-shot; batch callers keep an IsolatedDecoder)."""
    with IsolatedDecoder(timeout_s) as decoder:
        return decoder.decode(media, modality, k, positions, max_side)
