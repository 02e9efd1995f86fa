"""The one video decoder: chosen frames of a video to RGB with decord (random access), PyAV where decord cannot;
and a bounded-memory stream of a long video's frames (PyAV) for stages that walk a whole video.

decord 0.6's frame copy fails on some narrow widths (8, 12, 16, 24, 48, 72 px measured here: "Check failed:
from_size == to_size (1536 vs. 768)" for 16x16, its row padding counted as pixels); those videos, and any other
decord failure, are decoded with PyAV instead. Both convert with swscale to rgb24: on the widths decord handles
the two give bit-identical frames.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Pick = Callable[[int], list[int]]  # frame count -> frame indices to decode, ascending (repeats allowed)


class VideoDecodeError(ValueError):
    """Neither decord nor PyAV could decode the video."""


@contextlib.contextmanager
def _video_stream(video: bytes | str | Path):
    """(container, first video stream) opened with PyAV; VideoDecodeError when neither can be had."""
    import av

    try:
        container = av.open(_source(video))
    except (av.FFmpegError, OSError) as error:
        raise VideoDecodeError(f"PyAV: {error}") from error
    with container:
        try:
            stream = container.streams.video[0]
        except IndexError as error:
            raise VideoDecodeError("PyAV: no video stream") from error
        yield container, stream


def _source(video: bytes | str | Path):
    return io.BytesIO(video) if isinstance(video, bytes) else str(video)


@dataclass
class Decoded:
    frames: np.ndarray  # uint8 [K,H,W,3] RGB
    count: int  # frames in the video (what `pick` was given)
    fps: float  # the stream's average frame rate (0.0 when the container does not say)


def decode(video: bytes | str | Path, pick: Pick) -> Decoded:
    """The frames `pick(frame count)` of a video (bytes or a path), with the count and fps. Errors `pick` raises
    (e.g. a clip too short) propagate as they are; decode failures are VideoDecodeError. decord can abort the
    process on hostile input: callers that must survive that run this in curate.media.isolated."""
    import decord  # imported here so that the isolated decode children are the only processes that need it

    try:
        reader = decord.VideoReader(_source(video), ctx=decord.cpu(0), num_threads=1)
    except (decord.DECORDError, RuntimeError) as error:
        return _pyav_frames(video, pick, f"decord: {error}")
    count = len(reader)
    indices = pick(count)
    try:
        frames = reader.get_batch(indices).asnumpy()
        fps = float(reader.get_avg_fps() or 0.0)
    except (decord.DECORDError, RuntimeError) as error:
        return _pyav_frames(video, lambda _: indices, f"decord: {error}")
    return Decoded(np.ascontiguousarray(frames, dtype=np.uint8), count, fps)


def decode_frames(video: bytes | str | Path, pick: Pick) -> np.ndarray:
    """uint8 [K,H,W,3] RGB: the frames `pick(frame count)` of a video (see decode)."""
    return decode(video, pick).frames


def stream_frames(video: bytes | str | Path, start: int = 0, stop: int | None = None, max_side: int | None = None,
                  size: tuple[int, int] | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """(frame index, presentation time in s, uint8 [H,W,3] RGB) for frames start..stop-1 in order, one frame in
    memory at a time (a two-hour video is never held whole); frames scaled by swscale so the longer side is at
    most `max_side`, or to exactly `size` = (height, width) (bicubic, as ffmpeg's scale filter: e.g. a shot
    detector's 27x48 input). Decode failures are VideoDecodeError (frames already yielded stay valid)."""
    import av

    with _video_stream(video) as (container, stream):
        stream.thread_type = "AUTO"
        base = float(stream.time_base or 0)
        interpolation = "BICUBIC" if size else None
        if size is None and max_side and max(stream.codec_context.width, stream.codec_context.height) > max_side:
            from curate.media.geometry import fit_within_size

            size = fit_within_size(stream.codec_context.height, stream.codec_context.width, max_side)
        index = 0
        try:
            for frame in container.decode(stream):
                if stop is not None and index >= stop:
                    break
                if index >= start:
                    seconds = float(frame.pts * base) if frame.pts is not None else float(frame.time or 0.0)
                    rgb = (frame.to_ndarray(format="rgb24") if size is None else
                           frame.reformat(width=size[1], height=size[0], format="rgb24",
                                           interpolation=interpolation).to_ndarray())
                    yield index, seconds, rgb
                index += 1
        except (av.FFmpegError, OSError) as error:
            raise VideoDecodeError(f"PyAV: {error} (after {index} frames)") from error


def _pyav_frames(video: bytes | str | Path, pick: Pick, why: str) -> Decoded:
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
            fps = float(stream.average_rate or 0.0)
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
    return Decoded(np.stack([out[i] for i in indices]), count, fps)


def motion_vectors(video: bytes | str | Path, stop: int | None = None,
                   ) -> Iterator[tuple[int, tuple[int, int], np.ndarray | None]]:
    """(frame index, (height, width), the motion vectors the encoder stored for that frame) for frames 0..stop-1:
    FFmpeg's export_mvs side data as PyAV's structured array (source, w, h, src_x, src_y, dst_x, dst_y, flags,
    motion_x, motion_y, motion_scale), None for a frame without any (intra-coded). No pixels are converted:
    the cost is the codec's own decode. Decode failures are VideoDecodeError."""
    import av

    with _video_stream(video) as (container, stream):
        stream.codec_context.options = {"flags2": "+export_mvs"}
        index = 0
        try:
            for frame in container.decode(stream):
                if stop is not None and index >= stop:
                    break
                vectors = frame.side_data.get("MOTION_VECTORS")
                yield index, (frame.height, frame.width), None if vectors is None else vectors.to_ndarray()
                index += 1
        except (av.FFmpegError, OSError) as error:
            raise VideoDecodeError(f"PyAV: {error} (after {index} frames)") from error
