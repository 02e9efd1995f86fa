"""FVD between two dataset folders: I3D features of T-frame clips, Gaussian statistics (cached per folder +
protocol), the Frechet distance, and the protocol record written with every number."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from curate import provenance, storage
from curate.eval import frechet, i3d
from curate.eval.clips import iter_clips
from curate.device import resolve
from curate.eval.fvd_options import RESIZE_MODES, FVDOptions
from curate.weightfile import curate_cache_dir
from curate.shards.folder import DatasetFolder

SIZE = 224
SELECTION = ("the first N decodable video clips in manifest order (shards by id, rows in manifest order); "
             "videos shorter than frames x stride are skipped and counted")


def preprocess(frames: np.ndarray, device: torch.device, resize: str = "crop") -> torch.Tensor:
    """uint8 [T,H,W,3] (or a batch [B,T,H,W,3]) -> float32 [3,T,224,224] ([B,3,T,224,224]) in [-1, 1] on the device."""
    batched = frames.ndim == 5
    clips = frames if batched else frames[None]
    count, length, height, width = clips.shape[:4]
    video = torch.from_numpy(np.ascontiguousarray(clips)).to(device).reshape(count * length, height, width, 3)
    video = video.permute(0, 3, 1, 2).float() / 255.0
    if resize == "squash":
        video = F.interpolate(video, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    elif resize == "crop":
        scale = SIZE / min(height, width)
        target = (SIZE, math.ceil(width * scale)) if height < width else (math.ceil(height * scale), SIZE)
        video = F.interpolate(video, size=target, mode="bilinear", align_corners=False)
        top, left = (video.shape[-2] - SIZE) // 2, (video.shape[-1] - SIZE) // 2
        video = video[:, :, top : top + SIZE, left : left + SIZE]
    else:
        raise ValueError(f"unknown resize mode {resize!r}; choose from {sorted(RESIZE_MODES)}")
    video = (video * 2.0 - 1.0).reshape(count, length, 3, SIZE, SIZE).permute(0, 2, 1, 3, 4)
    if not batched:
        return video[0].contiguous()
    # channels-last 3D: the CPU conv3d kernels ran the I3D forward ~25% faster on it than on NCTHW (measured,
    # 2 x 16 x 224 x 224 clips); CUDA gets the plain contiguous layout
    layout = torch.channels_last_3d if video.device.type == "cpu" else torch.contiguous_format
    return video.contiguous(memory_format=layout)


@contextlib.contextmanager
def strict_float32():
    """TF32 off for the I3D forward: cuDNN convolutions use TF32 by default, which the protocol's float32 is not."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@torch.inference_mode()
def i3d_features(model: torch.nn.Module, clips: Iterable[np.ndarray], *, device: torch.device,
                 resize: str = "crop", batch_size: int = 8) -> np.ndarray:
    """[N,400] float64 I3D logits of uint8 [T,H,W,3] clips (all with the same T), batch by batch."""
    features, batch = [], []

    def run() -> None:
        if len({clip.shape for clip in batch}) == 1:  # one upload and one resize for the whole batch
            pixels = preprocess(np.stack(batch), device, resize)
        else:
            pixels = torch.stack([preprocess(clip, device, resize) for clip in batch])
        with strict_float32():
            features.append(model(pixels).double().cpu())
        batch.clear()

    for frames in clips:
        batch.append(frames)
        if len(batch) == batch_size:
            run()
    if batch:
        run()
    return torch.cat(features).numpy() if features else np.zeros((0, i3d.NUM_CLASSES))


def protocol(loaded: i3d.LoadedI3d, *, frames: int, stride: int, resize: str, max_clips: int,
             device: torch.device) -> dict:
    """Everything that changes an FVD value, recorded with it (published FVDs differ mostly by protocol); the
    statistics cache is keyed on it, device included (GPU and CPU float32 kernels differ in the last bits)."""
    return {
        "metric": "FVD",
        "extractor": f"InceptionI3d Kinetics-400 ({loaded.kind})",
        "extractor_file": loaded.path.name,
        "extractor_sha256": loaded.sha256,
        "features": "400-d Kinetics logits (pre-softmax), averaged over output time steps, as the TF original "
                    "and the VideoGPT/StyleGAN-V PyTorch ports use",
        "bn_eps": i3d.BN_EPS if loaded.kind == "state_dict" else None,
        "frames": frames, "stride": stride, "start_frame": 0,
        "resize_mode": resize, "resize": RESIZE_MODES[resize], "size": SIZE, "value_range": [-1.0, 1.0],
        "precision": "float32 forward (TF32 off), float64 statistics", "device": device.type,
        "max_clips": max_clips, "selection": SELECTION,
        "covariance": frechet.COVARIANCE, "trace_sqrt": frechet.TRACE_SQRT,
    }


def manifest_fingerprint(root: str) -> str:
    """sha256 over the folder's shard manifests: changes whenever a shard is added, removed or rewritten."""
    return provenance.files_fingerprint(root, storage.glob(DatasetFolder(root).manifest_glob()))


def _cache_dirs(root: str, cache_dir: str | None) -> list[str]:
    if cache_dir:
        return [cache_dir]
    return [storage.join(root, "eval", "fvd_stats"), str(curate_cache_dir() / "fvd_stats")]


def _cache_key(root: str, proto: dict) -> str:
    text = json.dumps({"manifests": manifest_fingerprint(root), "protocol": proto}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load_cached_stats(root: str, proto: dict, cache_dir: str | None = None) -> frechet.GaussianStats | None:
    key = _cache_key(root, proto)
    for folder in _cache_dirs(root, cache_dir):
        path = storage.join(folder, f"{key}.npz")
        if storage.exists(path):
            with np.load(io.BytesIO(storage.read_bytes(path))) as data:
                return frechet.GaussianStats(data["mu"], data["sigma"], int(data["count"]))
    return None


def save_stats(root: str, proto: dict, stats: frechet.GaussianStats, summary: dict,
               cache_dir: str | None = None) -> str | None:
    """Atomically write the statistics (+ a JSON saying what they are) to the first writable cache folder."""
    key = _cache_key(root, proto)
    for folder in _cache_dirs(root, cache_dir):
        try:
            storage.makedirs(folder)
            data = io.BytesIO()
            np.savez(data, mu=stats.mu, sigma=stats.sigma, count=stats.count)
            storage.write_bytes(storage.join(folder, f"{key}.npz"), data.getvalue())
            storage.write_json(storage.join(folder, f"{key}.json"), {
                "folder": storage.absolute(root), "protocol": proto, "manifests": manifest_fingerprint(root), **summary})
            return folder
        except OSError:
            continue  # a read-only dataset folder: try the user cache
    return None


def folder_stats(root: str, model: torch.nn.Module, proto: dict, *, device: torch.device, batch_size: int = 8,
                 workers: int = 2, decode_timeout: float = 60.0, cache_dir: str | None = None,
                 use_cache: bool = True) -> tuple[frechet.GaussianStats, dict]:
    """Gaussian statistics of a folder's first `max_clips` clips, from the cache when the same manifests were
    measured under the same protocol."""
    if use_cache and (cached := load_cached_stats(root, proto, cache_dir)) is not None:
        return cached, {"clips": cached.count, "cached": True}
    errors: list[dict] = []

    def decoded():
        for clip in iter_clips(root, frames=proto["frames"], stride=proto["stride"], limit=proto["max_clips"],
                               workers=workers, decode_timeout=decode_timeout):
            if clip.frames is None:
                errors.append({"key": clip.key, "error": clip.error})
            else:
                yield clip.frames

    features = i3d_features(model, decoded(), device=device, resize=proto["resize_mode"], batch_size=batch_size)
    if len(features) < 2:
        raise ValueError(f"{root}: only {len(features)} clips of {proto['frames']} frames could be read "
                         f"(FVD needs at least 2); first errors: {errors[:3]}")
    stats = frechet.fit_gaussian(features)
    summary = {"clips": stats.count, "skipped": len(errors), "skipped_examples": errors[:5], "cached": False}
    if use_cache:
        save_stats(root, proto, stats, summary, cache_dir)
    return stats, summary


def fvd(real_dir: str, gen_dir: str, options: FVDOptions = FVDOptions(), *, i3d_weights: str | None = None,
        i3d_trust: bool = False, device: str | None = None, workers: int = 2, decode_timeout: float = 60.0,
        cache_dir: str | None = None, out: str | None = None) -> dict:
    """FVD of gen_dir against real_dir under `options`; the result (value, protocol, counts, inputs) is written to
    `out` (default GEN_DIR/eval/fvd.json) and returned. Weights are resolved and checked before any decoding;
    i3d_trust allows a TorchScript detector file (StyleGAN-V's), which runs code from the file."""
    for root in (real_dir, gen_dir):
        if not DatasetFolder(root).complete_shards():
            raise FileNotFoundError(f"{root} is not a dataset folder with complete shards (no shards/*.parquet)")
    torch_device = resolve(device)
    loaded = i3d.load_i3d(i3d_weights, torch_device, trust_checkpoint=i3d_trust)
    proto = protocol(loaded, frames=options.frames, stride=options.stride, resize=options.resize,
                     max_clips=options.max_clips, device=torch_device)
    reading = {"device": torch_device, "batch_size": options.batch_size, "workers": workers,
               "decode_timeout": decode_timeout, "cache_dir": cache_dir}
    real, real_summary = folder_stats(real_dir, loaded.model, proto, **reading)
    gen, gen_summary = folder_stats(gen_dir, loaded.model, proto, **reading)
    result = {
        "metric": "fvd", "value": frechet.frechet_distance(real, gen), "protocol": proto,
        "real": {"folder": storage.absolute(real_dir), "manifests": manifest_fingerprint(real_dir), **real_summary},
        "generated": {"folder": storage.absolute(gen_dir), "manifests": manifest_fingerprint(gen_dir), **gen_summary},
        "versions": provenance.package_versions(),
    }
    target = out or storage.join(gen_dir, "eval", "fvd.json")
    storage.makedirs(storage.parent(target))
    storage.write_json(target, result)
    return result
