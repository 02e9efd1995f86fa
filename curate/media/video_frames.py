"""Decode chosen frames of a video to RGB: decord (random access), PyAV where decord cannot.

decord 0.6's frame copy fails on some narrow widths (8, 12, 16, 24, 48, 72 px measured here: "Check failed:
from_size == to_size (1536 vs. 768)" for 16x16, its row padding counted as pixels); those videos, and any other
decord failure, are decoded with PyAV instead. Both convert with swscale to rgb24: on the widths decord handles
the two give bit-identical frames.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np

Pick = Callable[[int], list[int]]  # frame count -> sorted distinct frame indices to decode


class VideoDecodeError(ValueError):
    """Neither decord nor PyAV could decode the video."""


def _source(video: bytes | str | Path):
    return io.BytesIO(video) if isinstance(video, bytes) else str(video)


def decode_frames(video: bytes | str | Path, pick: Pick) -> np.ndarray:
    """uint8 [K,H,W,3] RGB: the frames `pick(frame count)` of a video (bytes or a path). Errors `pick` raises
    (e.g. a clip too short) propagate as they are; decode failures are VideoDecodeError."""
    import decord  # imported here so that the isolated decode children are the only processes that need it

    try:
        reader = decord.VideoReader(_source(video), ctx=decord.cpu(0), num_threads=1)
    except (decord.DECORDError, RuntimeError) as error:
        return _pyav_frames(video, pick, f"decord: {error}")
    indices = pick(len(reader))
    try:
        frames = reader.get_batch(indices).asnumpy()
    except (decord.DECORDError, RuntimeError) as error:
        return _pyav_frames(video, lambda _: indices, f"decord: {error}")
    return np.ascontiguousarray(frames, dtype=np.uint8)


def _pyav_frames(video: bytes | str | Path, pick: Pick, why: str) -> np.ndarray:
    """The same frames with PyAV, decoded in order up to the last one wanted. The count is the container's
    (as decord's), else the packets counted in a demux-only pass."""
    import av

    def failed(error) -> VideoDecodeError:
        return VideoDecodeError(f"{why.splitlines()[0][:300]}; PyAV: {error}")

    try:
        container = av.open(_source(video))
    except (av.FFmpegError, OSError) as error:
        raise failed(error) from error
    with container:
        try:
            stream = container.streams.video[0]
            stream.thread_count = 1
            count = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
            if not stream.frames:
                container.seek(0)
        except (av.FFmpegError, IndexError, OSError) as error:
            raise failed(error) from error
        indices = pick(count)  # outside the try: its own errors are the caller's
        wanted, out, seen = set(indices), {}, 0
        try:
            for frame in container.decode(stream):
                if seen in wanted:
                    out[seen] = frame.to_ndarray(format="rgb24")
                    if len(out) == len(wanted):
                        break
                seen += 1
        except (av.FFmpegError, OSError) as error:
            raise failed(error) from error
    if len(out) < len(wanted):
        raise failed(f"the video ends after {seen} of the {count} frames its index lists")
    return np.stack([out[i] for i in indices])
