"""Benchmark: the training loader at the real preset's geometry, against a webdataset + decord loop and a GPU's demand.

Data, written first: WebVid-like H.264 clips (596x336, 25 fps, 8-12 s, a pan over a 1/f texture with grain,
x264 defaults CRF 23 / preset medium / keyframe every 250 frames, so a sample decodes from the clip's one
keyframe; WebVid's own GOPs were not measured) and LAION-like 512x512 JPEGs, in two dataset folders of tar
shards. Shaped to the `videocrafter2_512` recipes' geometry: 16 frames of 320x512 at a frame stride of 1-8,
images one 320x512 frame; micro-batch 1 as in f_base.

- ours: `curate.train.data.make_loader` (what `curate train` runs: tar seek, decord, uint8 cover-resize and
  centre crop, DataLoader worker -> trainer, which maps to [-1, 1] on its device) with 1 worker, then 2;
  samples/s by wall clock and the workers' CPU seconds per sample (from /proc: a shared machine's wall clock
  measures the neighbours too);
- peer: the `webdataset` library streaming the same tars + decord + torchvision's resize / center_crop (uint8,
  then float), the same sampling rule, one plain loop on one core; interleaved with ours over 3 rounds, the
  least disturbed round of each counts; the ratio ours / peer; a per-stage breakdown on the same frames;
- scale: the CPU time of the loader's per-batch plan (the epoch order's draw, once per epoch, amortised over the
  epoch's batches, plus the per-batch work) and the bytes of its sample index when a source holds WebVid-10M's
  10.7M clips (the real code, on a stand-in source);
- demand: FLOPs of one micro-batch per modality (U-Net forward + backward + checkpoint recomputation + the
  frozen VAE / text encoders' forward, counted by curate.train.describe on the meta device), its time at a
  stated bf16 peak and utilisation, and from both: loader cores per GPU, and whether a 16-core node feeds 8
  GPUs (one core kept per trainer process).

    .venv/bin/python scripts/bench_loader_real.py [--quick] [--data DIR] [--util 0.4] [--smoke]

--smoke runs every step at toy sizes on the tiny recipe (the suite's check that the script runs; numbers mean nothing).

--data DIR keeps the generated dataset there (reused by the next run); without it a temporary folder is used.
Linux only (worker CPU time comes from /proc). Runs offline.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import io
import json
import multiprocessing
import os
import platform
import sys
import tarfile
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from curate.train.data import LoaderConfig, make_loader
from curate.train.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "pipelines/train/f_base.yaml"
VIDEO_H, VIDEO_W, VIDEO_FPS = 336, 596, 25  # most WebVid-10M previews are 596x336
IMAGE_SIDE = 512
SMOKE_VIDEO, SMOKE_IMAGE_SIDE = (64, 96), 64  # --smoke: toy sizes
# bf16 dense tensor-core peaks from the datasheets (SXM parts, no sparsity)
GPU_PEAKS = {"A100": 312e12, "H100": 989e12}
NODE_CORES, NODE_GPUS = 16, 8
TICKS = os.sysconf("SC_CLK_TCK")
STARTED = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


# ---- data: WebVid-like clips and LAION-like images in dataset folders (DIR/shards/*.tar) ----

def natural_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """uint8 [H,W,3] with a 1/f spectrum (the statistics of natural images), so H.264 spends realistic bits."""
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
    amplitude = np.maximum(np.hypot(fy, fx), 1.0 / max(height, width)) ** -1.1

    def field() -> np.ndarray:
        return np.fft.irfft2(amplitude * np.exp(2j * np.pi * rng.random(amplitude.shape)), s=(height, width))

    shared = field()
    out = np.stack([0.8 * shared + 0.2 * field() for _ in range(3)], axis=-1)
    out = (out - out.mean()) / out.std()
    return np.clip(128 + 45 * out, 0, 255).astype(np.uint8)


def webvid_like_clip(rng: np.random.Generator, seconds: float, height: int = VIDEO_H,
                     width: int = VIDEO_W) -> tuple[bytes, int]:
    """(mp4 bytes, frames): a slow pan over a natural texture with sensor grain, x264 defaults, 1 thread."""
    import av

    n = int(seconds * VIDEO_FPS)
    margin_y, margin_x = 80, 240
    texture = natural_texture(rng, height + 2 * margin_y, width + 2 * margin_x)
    grain = rng.normal(0, 3, (16, height, width, 3)).astype(np.int16)  # a pool: per-frame noise is slow to draw
    vy, vx = rng.uniform(-1, 1) * margin_y / n, rng.uniform(-1, 1) * margin_x / n  # stays inside the texture
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=VIDEO_FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "medium", "crf": "23"}
        stream.codec_context.thread_count = 1
        for t in range(n):
            y, x = int(margin_y + vy * t), int(margin_x + vx * t)
            frame = texture[y : y + height, x : x + width].astype(np.int16) + grain[rng.integers(len(grain))]
            frame = np.clip(frame, 0, 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue(), n


def clip_job(i: int, smoke: bool = False) -> tuple[bytes, int]:
    """Clip i (its own seed, so clips can be encoded in any process and order); smoke: 2 s of 96x64."""
    rng = np.random.default_rng([0, i])
    if smoke:
        return webvid_like_clip(rng, seconds=2.0, height=SMOKE_VIDEO[0], width=SMOKE_VIDEO[1])
    return webvid_like_clip(rng, seconds=float(rng.uniform(8, 12)))


def laion_like_jpeg(rng: np.random.Generator, side: int = IMAGE_SIDE) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(natural_texture(rng, side, side)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_shard(path: Path, members: list[tuple[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tar.tmp")
    with tarfile.open(tmp, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    tmp.rename(path)


def build_data(root: Path, videos: int, images: int, pool: concurrent.futures.Executor, per_shard: int = 8,
               smoke: bool = False) -> dict:
    """Two dataset folders, root/webvid_like and root/laion_like (kept and reused when complete); clips are
    encoded in `pool`."""
    (video_h, video_w), side = (SMOKE_VIDEO, SMOKE_IMAGE_SIDE) if smoke else ((VIDEO_H, VIDEO_W), IMAGE_SIDE)
    stats_path = root / "data_stats.json"
    if stats_path.exists():
        return json.loads(stats_path.read_text())
    rng = np.random.default_rng(0)
    started, video_bytes, video_seconds = time.perf_counter(), 0, 0.0
    clips = pool.map(clip_job, range(videos), [smoke] * videos)
    for shard, first in enumerate(range(0, videos, per_shard)):
        members = []
        for i in range(first, min(first + per_shard, videos)):
            data, n = next(clips)
            video_bytes, video_seconds = video_bytes + len(data), video_seconds + n / VIDEO_FPS
            meta = {"key": f"v{i:05d}", "modality": "video", "fps": VIDEO_FPS, "num_frames": n,
                    "width": video_w, "height": video_h}
            members += [(f"v{i:05d}.mp4", data), (f"v{i:05d}.txt", b"a slow pan over a textured landscape"),
                        (f"v{i:05d}.json", json.dumps(meta).encode())]
        write_shard(root / "webvid_like/shards" / f"{shard:05d}.tar", members)
    image_bytes = 0
    for shard, first in enumerate(range(0, images, 4 * per_shard)):
        members = []
        for i in range(first, min(first + 4 * per_shard, images)):
            data = laion_like_jpeg(rng, side)
            image_bytes += len(data)
            meta = {"key": f"i{i:05d}", "modality": "image", "width": side, "height": side}
            members += [(f"i{i:05d}.jpg", data), (f"i{i:05d}.txt", b"a textured landscape"),
                        (f"i{i:05d}.json", json.dumps(meta).encode())]
        write_shard(root / "laion_like/shards" / f"{shard:05d}.tar", members)
    stats = {
        "videos": videos,
        "video_geometry": f"{video_w}x{video_h}@{VIDEO_FPS}fps H.264 (x264 crf 23 medium, keyint 250)",
        "video_mean_seconds": round(video_seconds / videos, 1),
        "video_kbit_per_s": round(video_bytes * 8 / video_seconds / 1e3),
        "images": images, "image_geometry": f"{side}x{side} JPEG q90",
        "image_mean_kib": round(image_bytes / images / 1024, 1),
        "generation_s": round(time.perf_counter() - started, 1),
    }
    stats_path.write_text(json.dumps(stats))
    return stats


# ---- ours: the trainer's loader ----

def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.machine()


def children_cpu_seconds() -> float:
    """user + system CPU seconds of this process's live children (the DataLoader workers), from /proc."""
    me, total = os.getpid(), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path("/proc", entry, "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == me:  # after the command: state, ppid, ... utime at index 11, stime at 12
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def ours(cfg: LoaderConfig, samples: int) -> dict:
    """Wall-clock samples/s and the workers' CPU seconds per sample over `samples` samples after a warm-up."""
    it = iter(make_loader(cfg))
    for _ in range(2 + samples // 8):  # start-up, first allocations, the prefetch queue filling
        next(it)
    cpu0, main0, wall0 = children_cpu_seconds(), time.process_time(), time.perf_counter()
    got = 0
    while got < samples:
        got += len(next(it)["keys"])
    wall = time.perf_counter() - wall0
    cpu, main = children_cpu_seconds() - cpu0, time.process_time() - main0
    cpu = max(cpu, 1 / TICKS)  # /proc counts whole ticks: a short run may show none
    del it
    return {"workers": cfg.num_workers, "samples": got, "samples_per_s": round(got / wall, 2),
            "samples_per_s_per_worker": round(got / wall / cfg.num_workers, 2),
            "worker_cpu_s_per_sample": round(cpu / got, 4), "main_cpu_s_per_sample": round(main / got, 4)}


# ---- peer: webdataset + decord + torchvision, one plain loop ----

def peer_resize_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [T,H,W,3] -> uint8 [T,3,height,width]: torchvision's resize to cover (on uint8), then center_crop."""
    import torchvision.transforms.v2.functional as TF

    x = frames.permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    scale = max(height / h, width / w)
    x = TF.resize(x, [max(height, int(h * scale)), max(width, int(w * scale))], antialias=True)
    return TF.center_crop(x, [height, width])


def peer_transform(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [T,H,W,3] -> float [3,T,height,width] in [-1,1], the trainer's layout."""
    x = peer_resize_crop(frames, height, width)
    return (x.float() / 127.5 - 1.0).permute(1, 0, 2, 3).contiguous()


def peer_frames(data: bytes, fps: float, frames: int, strides: tuple[int, int], rng: np.random.Generator):
    """The same sampling rule as the trainer (a feasible stride drawn in the range, a uniform start)."""
    import decord

    reader = decord.VideoReader(io.BytesIO(data), num_threads=1)
    n = len(reader)
    feasible = [s for s in range(strides[0], strides[1] + 1) if (frames - 1) * s + 1 <= n] or [1]
    stride = int(rng.choice(feasible))
    start = int(rng.integers(0, max(1, n - (frames - 1) * stride)))
    idx = np.minimum(start + stride * np.arange(frames), n - 1)
    return torch.from_numpy(reader.get_batch(idx.tolist()).asnumpy()), fps / stride


def peer(folder: Path, modality: str, cfg: LoaderConfig, samples: int) -> dict:
    import webdataset as wds
    from PIL import Image

    urls = [str(p) for p in sorted((folder / "shards").glob("*.tar"))]
    ext = "mp4" if modality == "video" else "jpg"
    stream = iter(wds.WebDataset(urls, shardshuffle=False, empty_check=False).repeat().to_tuple(ext, "txt", "json"))
    rng = np.random.default_rng(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core, like one DataLoader worker
    try:
        warmup = 2 + samples // 8
        for i in range(warmup + samples):
            if i == warmup:
                cpu0, wall0 = time.process_time(), time.perf_counter()
            media, caption, meta = next(stream)
            caption.decode("utf-8")
            if modality == "video":
                fps = json.loads(meta)["fps"]
                frames, _ = peer_frames(media, fps, cfg.frames, cfg.frame_stride, rng)
            else:
                with Image.open(io.BytesIO(media)) as im:
                    frames = torch.from_numpy(np.asarray(im.convert("RGB")).copy())[None]
            peer_transform(frames, cfg.height, cfg.width)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finally:
        torch.set_num_threads(threads)
    return {"samples": samples, "samples_per_s": round(samples / wall, 2), "cpu_s_per_sample": round(cpu / samples, 4)}


def same_work_check(folder: Path, cfg: LoaderConfig) -> float:
    """Max |ours - peer| over one clip's 16 frames, in [-1, 1] units: both shape the same decoded frames to the
    same pixels (both resize uint8: 0 expected), so the two loops do the same work."""
    from curate.train.data import resize_center_crop

    with tarfile.open(next((folder / "shards").glob("*.tar"))) as tf:
        data = next(tf.extractfile(m).read() for m in tf if m.name.endswith(".mp4"))
    frames, _ = peer_frames(data, VIDEO_FPS, cfg.frames, cfg.frame_stride, np.random.default_rng(2))
    a, b = resize_center_crop(frames, cfg.height, cfg.width), peer_transform(frames, cfg.height, cfg.width)
    assert a.shape == b.shape == (3, cfg.frames, cfg.height, cfg.width), (a.shape, b.shape)
    return float((a - b).abs().max())


def breakdown(folder: Path, cfg: LoaderConfig, clips: int = 6) -> dict:
    """CPU seconds per video sample, in this process on one thread: decord's decode of the 16 frames, then
    shaping them to 320x512 our loader worker's way (uint8 resize + crop, uint8 out: the trainer maps to [-1, 1]
    on its device), the peer's (resize uint8, then float), and the peer's resize + crop alone."""
    from curate.shards.reader import read_member
    from curate.train.data import decode_clip, scan_dataset, shape_frames

    steps = {
        "shape_ours_worker_uint8_out": lambda x: shape_frames(x, cfg.height, cfg.width),
        "shape_peer": lambda x: peer_transform(x, cfg.height, cfg.width),
        "shape_peer_uint8_out": lambda x: peer_resize_crop(x, cfg.height, cfg.width).contiguous(),
    }
    rng, totals = np.random.default_rng(3), dict.fromkeys(["decode", *steps], 0.0)
    index = scan_dataset(folder)["video"]
    samples = [index[i] for i in range(min(clips + 1, len(index)))]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i, sample in enumerate(samples):
            data = read_member(sample.media)
            started = time.process_time()
            frames, _ = decode_clip(data, cfg.frames, cfg.frame_stride, rng, VIDEO_FPS)
            times = {"decode": time.process_time() - started}
            for name, step in steps.items():
                started = time.process_time()
                step(frames)
                times[name] = time.process_time() - started
            if i:  # the first pays one-off initialisation
                for name, dt in times.items():
                    totals[name] += dt
    finally:
        torch.set_num_threads(threads)
    return {f"{k}_cpu_s_per_sample": round(v / (len(samples) - 1), 4) for k, v in totals.items()}


def plan_seconds(n: int, world_size: int, batches: int = 2000) -> dict:
    """CPU seconds JointBatches.plan takes for micro-batches of 1 when a source holds n samples: the real method
    on a stand-in whose source is range(n) (the plan needs only its length and indexing). The first batch of an
    epoch draws the rank's epoch order; the others reuse it: per batch = the draw spread over the epoch's batches
    + the steady per-batch cost."""
    from curate.train.data import JointBatches

    stand_in = JointBatches.__new__(JointBatches)  # no folder scan: the source is given directly
    stand_in.cfg = LoaderConfig(dirs=(), frames=16, height=320, width=512, batch_size=1)
    stand_in.rank, stand_in.world_size, stand_in.start_batch = 0, world_size, 0
    stand_in.sources, stand_in._orders = [range(n)], {}
    started = time.process_time()
    stand_in.plan(0, 0, 0)
    first = time.process_time() - started
    started = time.process_time()
    for k in range(1, batches + 1):
        stand_in.plan(k, 0, k)
    steady = (time.process_time() - started) / batches
    return {"epoch_draw_s": first, "steady_s": steady, "per_batch_s": first / (n // world_size) + steady}


def index_bytes_per_sample(folders: list[Path]) -> float:
    """Python heap bytes the loader's sample index (scan_dataset's Sample objects) keeps per sample."""
    import tracemalloc

    from curate.train.data import scan_dataset

    gc.collect()
    tracemalloc.start()  # numpy reports its arrays' buffers to tracemalloc too
    before = tracemalloc.get_traced_memory()[0]
    index = [scan_dataset(folder) for folder in folders]
    gc.collect()  # the scan's garbage (tarfile's member lists sit in reference cycles) is not the index
    size = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return size / sum(len(part) for by_modality in index for part in by_modality.values())


def index_stand_in(root: Path, shards: int = 10, per_shard: int = 1000) -> Path:
    """A dataset folder of WebVid-shaped rows with empty media (webvid_<8 digits> keys, .mp4/.txt/.json members;
    1000 rows a shard as the download stage writes): the index's per-sample bytes without the fixed costs that
    dominate a 40-sample folder."""
    folder = root / "index_stand_in"
    if not (folder / "shards" / f"{shards - 1:05d}.tar").exists():
        for shard in range(shards):
            keys = [f"webvid_{10_000_000 + shard * per_shard + i}" for i in range(per_shard)]
            write_shard(folder / "shards" / f"{shard:05d}.tar",
                        [(f"{key}.{ext}", b"") for key in keys for ext in ("mp4", "txt", "json")])
    return folder


def at_webvid_scale(root: Path, world_size: int, n: int = 10_700_000, smoke: bool = False) -> dict:
    """What the loader's index costs when a source holds WebVid-10M's 10.7M clips (measured at n/10 and n);
    smoke: a 10,700-row source, a 2-shard stand-in, 20 plans."""
    n = 10_700 if smoke else n
    stand_in = index_stand_in(root, shards=2, per_shard=50) if smoke else index_stand_in(root)
    per_sample = index_bytes_per_sample([stand_in])
    small = index_bytes_per_sample([root / "webvid_like", root / "laion_like"])
    batches = 20 if smoke else 2000
    tenth, full = plan_seconds(n // 10, world_size, batches), plan_seconds(n, world_size, batches)
    return {"rows": n, "world_size": world_size,
            "plan_cpu_s_per_batch_at_tenth_the_rows": round(tenth["per_batch_s"], 6),
            "plan_cpu_s_per_batch": round(full["per_batch_s"], 6),
            "plan_cpu_s_epoch_order_draw": round(full["epoch_draw_s"], 3),
            "plan_cpu_s_per_batch_steady": round(full["steady_s"], 6),
            "index_bytes_per_sample": round(per_sample), "index_bytes_per_sample_40_sample_folders": round(small),
            "index_gib_per_rank": round(per_sample * n / 2**30, 2)}


# ---- demand: FLOPs of one micro-batch and the GPU time they take ----

def micro_batch_flops(recipe_path: str) -> dict:
    """FLOPs of one micro-batch per modality: U-Net forward + backward, checkpoint recomputation, encoders."""
    torch.set_num_threads(1)
    from curate.train import describe

    recipe = load_recipe(recipe_path)
    parts = describe.frozen_parts(recipe)
    out = {}
    for modality, frames in (("video", recipe.data.frames), ("image", 1)):
        forward, forward_backward = describe.step_flops(recipe, frames)
        recompute = forward if recipe.train.gradient_checkpointing else 0
        encoders = describe.encoder_flops(recipe, parts, frames)
        out[modality] = {"unet_forward_backward": forward_backward, "recompute": recompute, "encoders": encoders,
                         "total": forward_backward + recompute + encoders}
    return out


def demand(flops: dict, costs: dict, recipe, util: float) -> dict:
    """Per GPU: seconds per micro-batch, samples/s it consumes, loader cores it needs (mix of the recipe)."""
    share = {"video": 1 - recipe.data.image_ratio, "image": recipe.data.image_ratio}
    micro = recipe.train.micro_batch_size
    out = {}
    for gpu, peak in GPU_PEAKS.items():
        seconds = {m: flops[m]["total"] / (peak * util) for m in share}
        mean_s = sum(share[m] * seconds[m] for m in share)
        row = {"video_micro_batch_s": round(seconds["video"], 4), "image_micro_batch_s": round(seconds["image"], 4),
               "step_s": round(recipe.accumulation * mean_s, 3), "samples_per_s": round(micro / mean_s, 2)}
        for basis, per_sample in costs.items():  # loader core-seconds per sample, per modality
            cores = sum(share[m] * per_sample[m] for m in share) * micro / mean_s
            row[f"loader_cores_per_gpu_{basis}"] = round(cores, 2)
            # a trainer process takes about a core of its own (launch, collation, optimizer bookkeeping)
            spare = NODE_CORES - NODE_GPUS
            row[f"node_{NODE_CORES}c_{NODE_GPUS}gpu_headroom_{basis}"] = round(spare / (NODE_GPUS * cores), 2)
        out[gpu] = row
    return out


def summary(r: dict, util: float) -> list[str]:
    """The findings in sentences (per core = per loader worker, by its CPU time)."""
    lines = []
    for m in ("video", "image"):
        ours_cpu = r[m]["ours_1_workers"]["worker_cpu_s_per_sample"]
        peer_cpu = r[m]["peer_webdataset_decord_1_core"]["cpu_s_per_sample"]
        lines.append(f"{m}: ours {1 / ours_cpu:.2f} samples/s per core, webdataset+decord loop {1 / peer_cpu:.2f}: "
                     f"ratio {peer_cpu / ours_cpu:.2f}; wall clock with 1 / 2 workers "
                     f"{r[m]['ours_1_workers']['samples_per_s']} / {r[m]['ours_2_workers']['samples_per_s']} samples/s "
                     f"(load average {r['load_avg_1min_after']} on {r['cpus']} cores)")
    scale = r["at_webvid_scale"]
    lines.append(f"at {scale['rows']:,} samples a source: JointBatches.plan {scale['plan_cpu_s_per_batch']} CPU s per "
                 f"batch (the epoch "
                 f"order drawn once an epoch: {scale['plan_cpu_s_epoch_order_draw']} s); sample index "
                 f"{scale['index_gib_per_rank']} GiB per rank ({scale['index_bytes_per_sample']} bytes a sample)")
    for gpu in GPU_PEAKS:
        g = r["gpu_demand"][gpu]
        lines.append(f"{gpu} bf16 at {util:.0%}: step {g['step_s']} s, {g['samples_per_s']} samples/s per GPU; loader "
                     f"cores per GPU: ours {g['loader_cores_per_gpu_ours_cpu']} "
                     f"({g['loader_cores_per_gpu_ours_cpu_webvid_scale']} at WebVid scale), "
                     f"peer {g['loader_cores_per_gpu_peer_cpu']}; {NODE_CORES}-core node, {NODE_GPUS} GPUs, a core per "
                     f"trainer: headroom x{g['node_16c_8gpu_headroom_ours_cpu']} "
                     f"(x{g['node_16c_8gpu_headroom_ours_cpu_webvid_scale']} at WebVid scale; peer "
                     f"x{g['node_16c_8gpu_headroom_peer_cpu']})")
    return lines


def compare(modality: str, cfg: LoaderConfig, per_round: int, rounds: int = 3) -> dict:
    """Ours with 1 worker and the peer on one core, interleaved over rounds (the same work each round; the least
    disturbed round counts: neighbours' load inflates CPU time too), then ours with 2 workers; the ratios."""
    folder = Path(cfg.dirs[0])
    ours_rounds, peer_rounds = [], []
    for _ in range(rounds):
        ours_rounds.append(ours(replace(cfg, num_workers=1), per_round))
        peer_rounds.append(peer(folder, modality, cfg, per_round))
    one = min(ours_rounds, key=lambda r: r["worker_cpu_s_per_sample"])
    ref = min(peer_rounds, key=lambda r: r["cpu_s_per_sample"])
    one["worker_cpu_s_per_sample_rounds"] = [r["worker_cpu_s_per_sample"] for r in ours_rounds]
    ref["cpu_s_per_sample_rounds"] = [r["cpu_s_per_sample"] for r in peer_rounds]
    two = ours(replace(cfg, num_workers=2), 2 * per_round)
    return {"ours_1_workers": one, "ours_2_workers": two, "peer_webdataset_decord_1_core": ref,
            "ratio_ours_over_peer_cpu": round(ref["cpu_s_per_sample"] / one["worker_cpu_s_per_sample"], 2),
            "ratio_ours_over_peer_wall_per_core": round(one["samples_per_s"] / ref["samples_per_s"], 2),
            "scaling_2_workers_over_1": round(two["samples_per_s"] / one["samples_per_s"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer clips and samples (about a minute)")
    parser.add_argument("--data", type=Path, help="keep / reuse the generated dataset here")
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--util", type=float, default=0.4, help="achieved fraction of the bf16 peak")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the tiny recipe: checks every step runs")
    args = parser.parse_args()
    # clips and images generated, then samples per measuring round (3 rounds, 1 worker and the peer; 2 workers once)
    videos, images, n_video, n_image = (6, 32, 4, 16) if args.quick else (8, 48, 8, 40)
    rounds = 3
    if args.smoke:  # a batch of the tiny recipe (4) from each folder, one round
        videos, images, n_video, n_image, rounds = 4, 4, 8, 8, 1
        args.recipe = ROOT / "pipelines/train/tiny_f_base.yaml"

    recipe = load_recipe(args.recipe)
    d = recipe.data
    # two processes: one traces the FLOPs (meta device), the other encodes clips, then both encode
    pool = concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
    flops_future = pool.submit(micro_batch_flops, str(args.recipe))
    with tempfile.TemporaryDirectory() as tmp:
        root = (args.data or Path(tmp)) / f"videos{videos}_images{images}"
        say(f"data: {videos} clips, {images} images in {root}")
        data = build_data(root, videos, images, pool, smoke=args.smoke)
        base = LoaderConfig(dirs=(str(root / "webvid_like"),), frames=d.frames, height=d.height, width=d.width,
                            batch_size=recipe.train.micro_batch_size, frame_stride=tuple(d.frame_stride),
                            image_fps=d.image_fps, seed=recipe.train.seed)
        configs = {"video": base, "image": replace(base, dirs=(str(root / "laion_like"),), image_ratio=1.0)}
        counts = {"video": n_video, "image": n_image}
        say("FLOPs of the recipe's micro-batches (meta device)")
        flops = flops_future.result()  # the measurements below want both cores
        pool.shutdown()
        results = {"recipe": recipe.name, "geometry": f"{d.frames}x{d.height}x{d.width}",
                   "image_ratio": d.image_ratio, "micro_batch": recipe.train.micro_batch_size,
                   "accumulation": recipe.accumulation, "cpu": cpu_model(),
                   "cpus": os.cpu_count(), "load_avg_1min_before": round(os.getloadavg()[0], 2), "data": data,
                   "max_abs_diff_ours_vs_peer_transform": round(same_work_check(root / "webvid_like", base), 4)}
        for modality, cfg in configs.items():
            say(f"{modality}: ours with 1 worker and the peer, {rounds} rounds; ours with 2 workers")
            results[modality] = compare(modality, cfg, counts[modality], rounds)
        say("breakdown of a video sample; the loader's index at WebVid scale")
        results["video"]["breakdown_1_thread"] = breakdown(root / "webvid_like", base)
        scale = at_webvid_scale(root, recipe.train.num_workers, smoke=args.smoke)
        results["at_webvid_scale"] = scale
        results["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    # loader core-seconds per sample, by CPU time (wall clock on a shared machine measures the neighbours too):
    # ours; ours plus the plan's cost at WebVid scale (micro-batch 1: one plan per sample); the peer's
    plan_cost = scale["plan_cpu_s_per_batch"] / recipe.train.micro_batch_size
    costs = {
        "ours_cpu": {m: results[m]["ours_1_workers"]["worker_cpu_s_per_sample"] for m in configs},
        "ours_cpu_webvid_scale": {m: results[m]["ours_1_workers"]["worker_cpu_s_per_sample"] + plan_cost
                                  for m in configs},
        "peer_cpu": {m: results[m]["peer_webdataset_decord_1_core"]["cpu_s_per_sample"] for m in configs},
    }
    results["tflop_per_micro_batch"] = {m: {k: round(v / 1e12, 2) for k, v in f.items()} for m, f in flops.items()}
    results["gpu_demand"] = {"bf16_peaks_tflops": {g: p / 1e12 for g, p in GPU_PEAKS.items()}, "utilisation": args.util,
                             **demand(flops, costs, recipe, args.util)}
    print(json.dumps(results, indent=2))
    print("\n".join(summary(results, args.util)))


if __name__ == "__main__":
    main()
