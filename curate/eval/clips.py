"""Evaluation clips of a dataset folder: success rows in manifest order, T consecutive frames decoded in
crash-isolated children (a hostile file costs one clip, never the run)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from queue import Queue

import numpy as np

from curate.media.isolated import IsolatedFailure, IsolatedWorker
from curate.media.video_frames import VideoDecodeError, decode_frames
from curate.scoring.frames import FrameDecodeError, load_image
from curate.shards import reader
from curate.shards.folder import DatasetFolder


@dataclass
class Clip:
    key: str
    shard: str
    modality: str
    caption: str | None
    frames: np.ndarray | None  # uint8 [T,H,W,3]; None when it could not be decoded
    error: str | None = None


def clip_indices(num_frames: int, frames: int, stride: int, exact: bool) -> list[int]:
    """Frames 0, stride, 2*stride, ... (`frames` of them); a shorter video is an error when `exact`,
    otherwise as many as it has."""
    if frames < 1 or stride < 1:
        raise ValueError(f"frames and stride must be >= 1, got {frames}, {stride}")
    needed = (frames - 1) * stride + 1
    if num_frames < needed and exact:
        raise FrameDecodeError(f"video has {num_frames} frames; {frames} frames at stride {stride} need {needed}")
    return list(range(0, min(num_frames, needed), stride))


def decode_clip(media: bytes, modality: str, frames: int, stride: int, exact: bool) -> np.ndarray:
    """uint8 [T,H,W,3] RGB: consecutive frames of a video (decord, PyAV for the widths decord cannot copy),
    or an image as one frame. Runs in a child."""
    if modality == "image":
        return load_image(media)
    try:
        return decode_frames(media, lambda count: clip_indices(count, frames, stride, exact))
    except VideoDecodeError as error:
        raise FrameDecodeError(str(error)) from error


def success_rows(root: str, shards: list[str] | None = None) -> list[dict]:
    """Every success row (shard, key, modality, caption) of the complete shards (or of `shards`), in manifest
    order."""
    if not DatasetFolder(root).complete_shards():
        raise FileNotFoundError(f"{root} is not a dataset folder with complete shards (no shards/*.parquet)")
    return [dict(row, modality=row.get("modality") or "video", caption=row.get("caption"))
            for row in reader.success_rows(root, ["caption"], shards)]


def read_media(root: str, rows: list[dict]) -> Iterator[tuple[dict, bytes | None]]:
    """(row, media bytes or None when the tar lacks it) for the rows, in their order: one header scan per shard,
    then one ranged read per sample."""
    current, spans = None, {}
    for row in rows:
        if row["shard"] != current:
            current, spans = row["shard"], reader.member_spans(root, row["shard"])
        found = reader.media_span(spans.get(row["key"], {}))
        yield row, (reader.read_member(found[1]) if found is not None else None)


def iter_clips(root: str, *, frames: int, stride: int = 1, exact: bool = True, videos_only: bool = True,
               limit: int | None = None, workers: int = 1, decode_timeout: float = 60.0,
               shards: list[str] | None = None) -> Iterator[Clip]:
    """Clips of the folder's success rows (of `shards` only, when given) in manifest order, decoded by `workers`
    isolated children, up to `limit` decoded clips (failed ones are yielded with their error and do not count)."""
    rows = [r for r in success_rows(root, shards) if r["modality"] == "video" or not videos_only]
    pool: Queue[IsolatedWorker] = Queue()
    for _ in range(max(1, workers)):
        pool.put(IsolatedWorker(decode_clip, decode_timeout))

    def decode(item: tuple[dict, bytes | None]) -> Clip:
        row, media = item
        clip = Clip(row["key"], row["shard"], row["modality"], row["caption"], None)
        if media is None:
            clip.error = "media missing from tar"
            return clip
        worker = pool.get()
        try:
            clip.frames = worker.call(media, row["modality"], frames, stride, exact)
        except IsolatedFailure as error:
            clip.error = f"decoding {error}"
        except Exception as error:  # one sample's decode failure is that sample's error
            clip.error = f"{type(error).__name__}: {error}"
        finally:
            pool.put(worker)
        return clip

    decoded = 0
    media = read_media(root, rows)
    with ThreadPoolExecutor(max(1, workers)) as executor:
        pending: deque = deque()
        try:
            for item in media:  # keep 2 x workers decodes in flight, results in order
                pending.append(executor.submit(decode, item))
                while len(pending) >= 2 * max(1, workers) or (pending and pending[0].done()):
                    clip = pending.popleft().result()
                    decoded += clip.frames is not None
                    yield clip
                    if limit is not None and decoded >= limit:
                        return
            while pending:
                clip = pending.popleft().result()
                decoded += clip.frames is not None
                yield clip
                if limit is not None and decoded >= limit:
                    return
        finally:
            for future in pending:
                future.cancel()
            executor.shutdown(wait=True)
            while not pool.empty():
                pool.get().close()
