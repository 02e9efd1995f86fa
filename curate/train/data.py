"""Training batches from curated dataset folders (DIR/shards/*.tar WebDataset shards), local or in object storage.

Videos become T frames at a sampled frame stride (fps conditioning = source fps / stride), images
single frames (T=1); both are resized to cover the preset geometry and center-cropped in uint8 (a uint8 resize
costs a fraction of a float one, and a batch crosses to the trainer in a quarter of the bytes); the trainer maps
them to [-1, 1] on its device with `to_model_range`.

Sampling plan (deterministic given the seed, resumable from the number of batches consumed):
- every (folder, modality) pair is a source; batch k draws ONE source from a seeded stream of
  choices with probability image_ratio * w / sum(image w) for image sources and
  (1 - image_ratio) * w / sum(video w) for video sources, so a batch is all-video or all-image
  and every rank makes the same choice (ranks stay in lockstep: same shapes, same module set);
- each source is an endless sequence of epochs, each a seeded permutation of its samples,
  split by rank (perm[rank::world], cut to equal length); a batch takes the next B samples
  (a rank's slice is drawn once per epoch and kept: redrawing it per batch is O(samples) a batch);
- DataLoader worker w builds the batches k with k % num_workers == w; the DataLoader returns
  workers' outputs round-robin, i.e. in order of k.
Members are read by seeking into the tar (offsets found once by curate.shards.reader's header scan, kept as flat
arrays: 40 bytes + the key per sample, where an object per sample cost ~700, 7 GiB a rank at WebVid-10M's 10.7M
clips).
A folder may be a URL (s3://bucket/prefix, any fsspec URL, see curate.storage): headers are then scanned
through buffered ranged reads (media larger than a block are jumped over; shards are scanned concurrently);
a sample's members, adjacent in the tar, come back in one ranged GET, a batch's samples concurrently and the
next batch's while this one decodes. Nothing is copied whole to local disk. A storage error is raised (the
client has retried it): skipping the sample would make a run's data depend on the network.
A sample that fails to decode is replaced by the next one in the epoch order, with a warning, so one corrupt
member never stops a run and the replacement is the same on every replay.
Resuming: a rank that consumed B micro-batches (B x batch_size samples) restarts with start_batch=B.
"""

from __future__ import annotations

import collections
import fcntl
import gc
import hashlib
import io
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from curate import storage
from curate.media.geometry import center_crop_box, cover_size
from curate.media.video_frames import decode
from curate.shards.reader import Span, modality_of, read_member, scan_members
from curate.weightfile import curate_cache_dir

_CHOICE_BLOCK = 4096
_FALLBACKS = 8  # how many following samples to try when one fails to decode
_SCAN_THREADS = 16  # remote shards are scanned concurrently (a scan waits on round trips)
_READ_THREADS = 16  # concurrent sample reads per loader process (remote only)
_SPAN_SLACK = 4096  # members whose gaps (headers, padding) stay under this come back in one ranged read


@dataclass(frozen=True)
class Sample:
    key: str
    modality: str  # "video" | "image"
    media: Span
    caption: Span | None
    meta: Span | None


@dataclass(frozen=True)
class LoaderConfig:
    """What the loader reads and how it shapes it (one rank's view)."""

    dirs: tuple[str, ...]
    frames: int
    height: int
    width: int
    batch_size: int  # per rank, per micro-step
    weights: tuple[float, ...] = ()  # one per dir; default 1.0 each
    image_ratio: float = 0.0  # fraction of batches drawn from image sources
    frame_stride: tuple[int, int] = (1, 8)  # inclusive range a video's stride is drawn from
    image_fps: float = 24.0  # fps conditioning value given to images (the paper does not say)
    seed: int = 0
    num_workers: int = 0


_MEMBERS = ("media", "caption", "meta")  # the columns of SampleIndex.offsets / sizes


class SampleIndex:
    """One source's samples (one modality) as flat arrays: row i -> Sample on demand. The arrays are a few
    objects, so forked loader workers share them (no refcount writes touch their pages)."""

    def __init__(self, modality: str, tars: list[str], keys: np.ndarray, shard: np.ndarray, offsets: np.ndarray,
                 sizes: np.ndarray):
        self.modality, self.tars = modality, tars
        self.keys, self.shard, self.offsets, self.sizes = keys, shard, offsets, sizes  # sizes: -1 = no such member

    @classmethod
    def from_rows(cls, modality: str, tars: list[str], rows: list[tuple[str, int, tuple]]) -> SampleIndex:
        """rows: (key, shard, ((offset, size) or None per member of _MEMBERS))."""
        n = len(rows)
        offsets, sizes = np.zeros((n, len(_MEMBERS)), np.int64), np.full((n, len(_MEMBERS)), -1, np.int32)
        for i, (_, _, members) in enumerate(rows):
            for j, member in enumerate(members):
                if member is not None:
                    if member[1] >= 2**31:
                        raise ValueError(f"{rows[i][0]}: a {member[1]}-byte member in {tars[rows[i][1]]} (2 GiB max)")
                    offsets[i, j], sizes[i, j] = member
        keys = np.array([key.encode() for key, _, _ in rows], dtype=np.bytes_)
        return cls(modality, tars, keys, np.array([r[1] for r in rows], np.int32), offsets, sizes)

    @classmethod
    def concat(cls, parts: list[SampleIndex]) -> SampleIndex:
        tars, shard = [], []
        for part in parts:  # shard ids renumbered into the joint tar list
            shard.append(part.shard + len(tars))
            tars += part.tars
        return cls(parts[0].modality, tars, np.concatenate([p.keys for p in parts]), np.concatenate(shard),
                   np.concatenate([p.offsets for p in parts]), np.concatenate([p.sizes for p in parts]))

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> Sample:
        tar, offsets, sizes = self.tars[self.shard[i]], self.offsets[i].tolist(), self.sizes[i].tolist()
        media, caption, meta = (Span(tar, o, z) if z >= 0 else None for o, z in zip(offsets, sizes))
        return Sample(self.keys[i].decode(), self.modality, media, caption, meta)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def scan_shard(tar_path: str | Path) -> dict[str, SampleIndex]:
    """Index one tar by its headers, by modality: one row per key that has a media member. The index is kept on
    this node (CURATE_CACHE/tar_index, keyed by the tar's path and version): of the ranks that start together
    on a node the first scans and the others wait for its file, and a resumed run scans nothing."""
    cache = curate_cache_dir() / "tar_index"
    cache.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(f"{tar_path}\0{storage.version(str(tar_path))}".encode()).hexdigest()[:32]
    path = cache / f"{name}.npz"
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            with np.load(path, allow_pickle=False) as stored:
                return {m: SampleIndex(m, [str(tar_path)], stored[f"{m}_keys"], np.zeros(len(stored[f"{m}_keys"]), np.int32),
                                       stored[f"{m}_offsets"], stored[f"{m}_sizes"])
                        for m in ("video", "image") if f"{m}_keys" in stored}
        index = _scan_shard(tar_path)
        tmp = cache / f".{name}.{os.getpid()}.npz"
        np.savez(tmp, **{f"{m}_{field}": getattr(part, field) for m, part in index.items()
                         for field in ("keys", "offsets", "sizes")})
        os.replace(tmp, path)
        return index


def _scan_shard(tar_path: str | Path) -> dict[str, SampleIndex]:
    groups: dict[str, dict[str, tuple[int, int]]] = {}
    for key, ext, offset, size in scan_members(str(tar_path)):
        groups.setdefault(key, {})[ext] = (offset, size)
    rows: dict[str, list] = {"video": [], "image": []}
    for key, members in groups.items():
        for ext, member in members.items():
            modality = modality_of(ext)
            if modality:
                rows[modality].append((key, 0, (member, members.get("txt"), members.get("json"))))
                break
    return {m: SampleIndex.from_rows(m, [str(tar_path)], r) for m, r in rows.items() if r}


def scan_dataset(directory: str | Path) -> dict[str, SampleIndex]:
    """A dataset folder's samples by modality (in shard order, then tar order)."""
    pattern = storage.join(str(directory), "shards", "*.tar")
    shards = storage.glob(pattern)
    if not shards:
        raise FileNotFoundError(f"no shards found: {pattern}")
    if storage.is_remote(pattern):  # a scan waits on round trips, not on this machine
        with ThreadPoolExecutor(min(_SCAN_THREADS, len(shards))) as pool:
            parts = list(pool.map(scan_shard, shards))
    else:
        parts = [scan_shard(shard) for shard in shards]
    return {m: SampleIndex.concat([p[m] for p in parts if m in p]) for m in ("video", "image")
            if any(m in p for p in parts)}


def read_sample(sample: Sample) -> dict[str, bytes | None]:
    """{media, caption, meta} bytes of a sample (None where it has no such member). Local members are read one by
    one; remote ones, adjacent in their tar, in one ranged read when the gaps between them are small."""
    members = {"media": sample.media, "caption": sample.caption, "meta": sample.meta}
    present = [m for m in members.values() if m is not None]
    start, end = min(m.offset for m in present), max(m.offset + m.size for m in present)
    one_read = (storage.is_remote(sample.media.tar) and len({m.tar for m in present}) == 1
                and end - start <= sum(m.size for m in present) + _SPAN_SLACK * len(present))
    if not one_read:
        return {name: read_member(m) if m else None for name, m in members.items()}
    span = storage.read_range(sample.media.tar, start, end)
    return {name: span[m.offset - start : m.offset - start + m.size] if m else None for name, m in members.items()}


def shape_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [T,H,W,3] -> uint8 [3,T,height,width]: scale to cover, then center crop, with the sizes and offsets
    of curate.media.geometry (torchvision's rounding, the same as the select stage's ffmpeg). The resize runs on
    uint8 (torch's fixed-point kernel, the one torchvision uses on uint8): within a grey level of a float resize."""
    x = frames.permute(0, 3, 1, 2)  # channels-last memory: the layout the uint8 kernel reads fastest
    h, w = x.shape[-2:]
    nh, nw = cover_size(h, w, height, width)
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = center_crop_box(nh, nw, height, width)
    return x[:, :, top : top + height, left : left + width].permute(1, 0, 2, 3).contiguous()


def to_model_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1] (the trainer runs it on its device, after the uint8 batch crossed)."""
    return pixels.float() / 127.5 - 1.0


def resize_center_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [T,H,W,3] -> float [3,T,height,width] in [-1,1], as the trainer sees a sample."""
    return to_model_range(shape_frames(frames, height, width))


def decode_clip(
    data: bytes, frames: int, stride_range: tuple[int, int], rng: np.random.Generator, fps: float | None
) -> tuple[torch.Tensor, float]:
    """Decode `frames` frames at a random feasible stride and start -> (uint8 [T,H,W,3], fps / stride), where fps
    is the source's when its metadata says, else the container's. The one decoder (curate.media.video_frames)
    decodes, so widths decord cannot copy decode too.

    Strides whose span exceeds the video are skipped; a video shorter than `frames` repeats its last frame.
    """
    lo, hi = stride_range
    chosen = []

    def pick(n: int) -> list[int]:
        feasible = [s for s in range(lo, hi + 1) if (frames - 1) * s + 1 <= n] or [1]
        stride = int(rng.choice(feasible))
        chosen.append(stride)
        start = int(rng.integers(0, max(1, n - (frames - 1) * stride)))
        return np.minimum(start + stride * np.arange(frames), n - 1).tolist()

    decoded = decode(data, pick)
    return torch.from_numpy(decoded.frames), (fps or decoded.fps) / chosen[0]


def decode_image(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy())[None]


class JointBatches(IterableDataset):
    """Endless deterministic stream of batches for one rank (see the module docstring)."""

    def __init__(self, cfg: LoaderConfig, rank: int = 0, world_size: int = 1, start_batch: int = 0):
        self.cfg, self.rank, self.world_size, self.start_batch = cfg, rank, world_size, start_batch
        weights = cfg.weights or (1.0,) * len(cfg.dirs)
        if len(weights) != len(cfg.dirs):
            raise ValueError(f"{len(weights)} weights for {len(cfg.dirs)} data folders")
        self.sources: list[SampleIndex] = []
        raw: list[tuple[str, float]] = []
        for directory, weight in zip(cfg.dirs, weights):
            for modality, part in scan_dataset(directory).items():
                if weight > 0:
                    self.sources.append(part)
                    raw.append((modality, weight))
        self._orders: dict[tuple[int, int], np.ndarray] = {}
        self.probs = self._source_probs(raw, cfg.image_ratio)
        for part, p in zip(self.sources, self.probs):
            if p > 0 and len(part) < world_size * cfg.batch_size:
                raise ValueError(
                    f"a source has {len(part)} samples, fewer than world_size x batch_size = "
                    f"{world_size * cfg.batch_size}; lower the batch size or add data"
                )

    @staticmethod
    def _source_probs(raw: list[tuple[str, float]], image_ratio: float) -> np.ndarray:
        share = {"video": 1.0 - image_ratio, "image": image_ratio}
        totals = {m: sum(w for mm, w in raw if mm == m) for m in share}
        present = [m for m in share if totals[m] > 0 and share[m] > 0]
        if not present:
            have = sorted({m for m, _ in raw}) or ["nothing"]
            raise ValueError(f"image_ratio={image_ratio} selects no data: the folders hold {', '.join(have)}")
        probs = np.array([share[m] * w / totals[m] if m in present else 0.0 for m, w in raw])
        return probs / probs.sum()

    def _choices(self):
        """Endless source index per batch, from the seed alone."""
        rng = np.random.default_rng([self.cfg.seed, 0x50C])
        while True:
            yield from rng.choice(len(self.sources), size=_CHOICE_BLOCK, p=self.probs).tolist()

    def _rank_order(self, source: int, epoch: int) -> np.ndarray:
        """This rank's slice of the source's epoch permutation, drawn once per (source, epoch): a source's batches
        advance through its epochs in order, so the current and the previous epoch are all a batch can need."""
        if (source, epoch) not in self._orders:
            n = len(self.sources[source])
            perm = np.random.default_rng([self.cfg.seed, source, epoch]).permutation(n)
            order = perm[self.rank :: self.world_size][: n // self.world_size]
            for stale in [k for k in self._orders if k[0] == source and k[1] < epoch - 1]:
                del self._orders[stale]
            self._orders[(source, epoch)] = order.astype(np.int32) if n < 2**31 else order.copy()
        return self._orders[(source, epoch)]

    def plan(self, batch_index: int, source: int, position: int) -> list[tuple[list[Sample], np.random.Generator]]:
        """Per slot of a batch starting at `position` of `source`'s stream: the sample, then fallbacks, and an RNG."""
        per_epoch = len(self.sources[source]) // self.world_size
        out = []
        for slot in range(self.cfg.batch_size):
            epoch, i = divmod(position + slot, per_epoch)
            order = self._rank_order(source, epoch)
            candidates = [self.sources[source][int(order[(i + k) % per_epoch])]
                          for k in range(min(_FALLBACKS, per_epoch))]
            out.append((candidates, np.random.default_rng([self.cfg.seed, batch_index, slot, self.rank])))
        return out

    def decode(self, sample: Sample, data: dict[str, bytes | None], rng: np.random.Generator):
        """(uint8 pixels [3,T,H,W], caption, fps) from a sample's member bytes (see read_sample)."""
        cfg = self.cfg
        caption = data["caption"].decode("utf-8").strip() if data["caption"] is not None else ""
        if sample.modality == "image":
            frames, fps = decode_image(data["media"]), cfg.image_fps
        else:
            meta = json.loads(data["meta"]) if data["meta"] is not None else {}
            frames, fps = decode_clip(data["media"], cfg.frames, cfg.frame_stride, rng, meta.get("fps"))
        return shape_frames(frames, cfg.height, cfg.width), caption, float(fps)

    def load(self, sample: Sample, rng: np.random.Generator) -> tuple[torch.Tensor, str, float]:
        return self.decode(sample, read_sample(sample), rng)

    def load_first_readable(self, candidates: list[Sample], rng: np.random.Generator, first=None):
        """A sample that fails to decode is replaced by the next one of the epoch order (deterministic).
        `first`: the first candidate's bytes when already read (prefetched)."""
        for i, sample in enumerate(candidates):
            data = first if i == 0 and first is not None else read_sample(sample)  # storage errors propagate
            try:
                return sample, self.decode(sample, data, rng)
            except Exception as err:  # a corrupt member must not stop a training run
                warnings.warn(f"skipping undecodable sample {sample.key} ({sample.media.tar}): {err}")
        raise RuntimeError(f"{len(candidates)} consecutive samples failed to decode, starting at {candidates[0].key}")

    def _planned(self, worker: int, num_workers: int):
        """(batch index, source, plan) of this worker's batches, in order."""
        counts = [0] * len(self.sources)
        for k, source in enumerate(self._choices()):
            position = counts[source] * self.cfg.batch_size
            counts[source] += 1
            if k < self.start_batch or k % num_workers != worker:
                continue
            yield k, source, self.plan(k, source, position)

    def batches(self, worker: int = 0, num_workers: int = 1):
        planned = self._planned(worker, num_workers)
        if not any(storage.is_remote(str(d)) for d in self.cfg.dirs):
            for k, source, plan in planned:
                yield self._assemble(k, source, plan, [None] * len(plan))
            return
        # remote: a read waits on a round trip, so a batch's samples are fetched concurrently, and the next
        # batch's while this one decodes (the pool lives in the process that iterates: a loader worker)
        with ThreadPoolExecutor(_READ_THREADS) as pool:
            pending: collections.deque = collections.deque()
            for k, source, plan in planned:
                pending.append((k, source, plan, [pool.submit(read_sample, candidates[0]) for candidates, _ in plan]))
                if len(pending) > 1:
                    yield self._assemble(*pending.popleft())

    def _assemble(self, k: int, source: int, plan, prefetched) -> dict:
        loaded = [self.load_first_readable(candidates, rng, read.result() if read else None)
                  for (candidates, rng), read in zip(plan, prefetched)]
        keys = [sample.key for sample, _ in loaded]
        pixels, captions, fps = zip(*(item for _, item in loaded))
        return {
            "pixels": torch.stack(pixels),
            "captions": list(captions),
            "fps": torch.tensor(fps, dtype=torch.float32),
            "keys": keys,
            "modality": self.sources[source].modality,
            "batch_index": k,
        }

    def __iter__(self):
        info = get_worker_info()
        # each worker must see the batches in the same global order, so worker ids are offset by start_batch
        worker, num = (info.id, info.num_workers) if info else (0, 1)
        return self.batches((worker + self.start_batch) % num, num)


class _ForkCleanLoader(DataLoader):
    """Workers are forked: the parent's pending garbage is collected before the fork and everything else it holds
    is frozen for it, so a worker's collector never finalizes the parent's objects. Finalizing one there (a Ray
    ObjectRef, a gRPC or event-loop handle) touches threads that do not exist in the child and crashed the worker
    with SIGSEGV mid-run. Frozen objects are also never scanned, so their pages stay shared."""

    def _get_iterator(self):
        if not self.num_workers:
            return super()._get_iterator()
        gc.collect()
        gc.freeze()
        try:
            return super()._get_iterator()
        finally:
            gc.unfreeze()


def make_loader(cfg: LoaderConfig, rank: int = 0, world_size: int = 1, start_batch: int = 0,
                pin_memory: bool = False) -> DataLoader:
    dataset = JointBatches(cfg, rank, world_size, start_batch)
    return _ForkCleanLoader(
        dataset,
        batch_size=None,
        pin_memory=pin_memory,
        num_workers=cfg.num_workers,
        persistent_workers=False,
        prefetch_factor=4 if cfg.num_workers else None,
    )
