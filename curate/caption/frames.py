"""A sample's frames for a vision-language model: N evenly spaced video frames (or the image), as JPEG bytes,
decoded in isolated children so a hostile file costs one sample."""

from __future__ import annotations

import asyncio
import base64
import functools

import numpy as np

from curate.media.isolated import IsolatedFailure, IsolatedWorker
from curate.media.video_frames import decode
from curate.scoring.frames import fit_within, frame_indices, load_image

JPEG_QUALITY = 90


def caption_frames(media: bytes, modality: str, count: int, max_side: int) -> list[bytes]:
    """JPEG bytes of `count` evenly spaced frames of a video (fewer when it is shorter), or of the image,
    downscaled so the longer side is at most `max_side`."""
    import cv2

    if modality == "video":
        frames = decode(media, lambda n: frame_indices(n, count, "uniform")).frames
    elif modality == "image":
        frames = load_image(media)
    else:
        raise ValueError(f"unknown modality {modality!r}")
    out = []
    for frame in fit_within(np.ascontiguousarray(frames), max_side):
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError("JPEG encoding failed")
        out.append(jpeg.tobytes())
    return out


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


class FrameDecodeFailed(Exception):
    """One sample's frames could not be made (corrupt media, decoder crash or timeout)."""


class FramePool:
    """`workers` isolated decoder children shared by the coroutines of an event loop: decoding overlaps the
    requests in flight, and a crash or hang in one child fails one sample only. The children outlive a loop, so
    one pool serves every shard a process captions (see shared_pool)."""

    def __init__(self, workers: int, count: int, max_side: int, timeout_s: float = 60.0):
        self.count, self.max_side = count, max_side
        self._workers = [IsolatedWorker(caption_frames, timeout_s) for _ in range(workers)]
        self._idle: asyncio.Queue | None = None
        self._loop = None

    async def frames(self, media: bytes, modality: str) -> list[bytes]:
        if self._loop is not asyncio.get_running_loop():  # a queue belongs to one loop: a new shard, a new queue
            self._loop, self._idle = asyncio.get_running_loop(), asyncio.Queue()
            for worker in self._workers:
                self._idle.put_nowait(worker)
        worker = await self._idle.get()
        try:
            return await asyncio.to_thread(worker.call, media, modality, self.count, self.max_side)
        except IsolatedFailure as error:
            raise FrameDecodeFailed(f"decoding {error}") from None
        except Exception as error:  # noqa: BLE001 - any failure in the child is this sample's error
            raise FrameDecodeFailed(f"{type(error).__name__}: {error}") from None
        finally:
            self._idle.put_nowait(worker)

    def close(self) -> None:
        for worker in self._workers:
            worker.close()


@functools.lru_cache(maxsize=4)
def shared_pool(workers: int, count: int, max_side: int) -> FramePool:
    """One pool per process and settings: a Ray worker that captions shard after shard starts its children once
    (they exit with it: daemonic, or on their pipe's EOF if it is killed)."""
    return FramePool(workers, count, max_side)
