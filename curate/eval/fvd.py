"""FVD between two dataset folders: I3D features of T-frame clips (per clip, through the metric stage), Gaussian
statistics, the Frechet distance, and the protocol record written with every number."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from curate.device import resolve
from curate.eval import frechet, i3d
from curate.eval.fvd_options import RESIZE_MODES, FVDOptions
from curate.eval.metric_stage import ClipMetric, MetricStage, Selection, run_device, run_metric

SIZE = 224


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


SELECTION = ("the first N decodable video clips in manifest order (shards by id, rows in manifest order); "
             "videos shorter than frames x stride are skipped and counted")


@dataclass
class FVD(ClipMetric):
    """I3D logits of the first `frames` frames (every `stride`-th) of each video of both folders; the value is the
    Frechet distance between the Gaussians fitted to the two sets."""

    name = "fvd"
    columns = ("i3d_logits",)
    exact = True
    frames: int = 16
    stride: int = 1
    resize: str = "crop"
    batch_size: int = 8
    weights: str | None = None
    trust: bool = False
    device: str = "cpu"
    extractor: dict | None = None  # file, sha256 and kind of the resolved weights, after check()

    @property
    def gpus(self) -> float:
        return 1.0 if self.device == "cuda" else 0.0

    def check(self) -> None:
        if self.extractor is None:  # resolved and loaded strictly on the driver before any decoding (12.7M params)
            loaded = i3d.load_i3d(self.weights, "cpu", trust_checkpoint=self.trust)
            self.weights = str(loaded.path)
            self.extractor = {"file": loaded.path.name, "sha256": loaded.sha256, "kind": loaded.kind}

    def settings(self) -> dict:
        """Everything that changes an FVD value but the clip count (published FVDs differ mostly by protocol); the
        device too: GPU and CPU float32 kernels differ in the last bits."""
        self.check()
        kind = self.extractor["kind"]
        return {
            "metric": "FVD",
            "extractor": f"InceptionI3d Kinetics-400 ({kind})",
            "extractor_file": self.extractor["file"],
            "extractor_sha256": self.extractor["sha256"],
            "features": "400-d Kinetics logits (pre-softmax), averaged over output time steps, as the TF original "
                        "and the VideoGPT/StyleGAN-V PyTorch ports use",
            "bn_eps": i3d.BN_EPS if kind == "state_dict" else None,
            "frames": self.frames, "stride": self.stride, "start_frame": 0,
            "resize_mode": self.resize, "resize": RESIZE_MODES[self.resize], "size": SIZE, "value_range": [-1.0, 1.0],
            "precision": "float32 forward (TF32 off), float64 statistics", "device": self.device,
        }

    def record(self) -> dict:
        return {"extractor": dict(self.extractor, path=self.weights)}

    def measurer(self):
        device = resolve(self.device)
        model = i3d.load_i3d(self.weights, device, trust_checkpoint=self.trust).model

        def measure(clips):
            features = i3d_features(model, [clip.frames for clip in clips], device=device, resize=self.resize,
                                    batch_size=self.batch_size)
            return [{"i3d_logits": row.astype(np.float32).tolist()} for row in features]

        return measure

    def summarise(self, sides: dict[str, Selection]) -> dict:
        stats, counts = {}, {}
        for side, chosen in sides.items():
            if len(chosen.rows) < 2:
                raise ValueError(f"{side} folder: only {len(chosen.rows)} clips of {self.frames} frames could be read "
                                 f"(FVD needs at least 2); first errors: {chosen.counts()['skipped_examples'][:3]}")
            stats[side] = frechet.fit_gaussian(np.array([row["i3d_logits"] for row in chosen.rows], np.float64))
            counts[side] = chosen.counts()
        return {"metric": "fvd", "value": frechet.frechet_distance(stats["real"], stats["generated"]),
                "protocol": dict(self.settings(), selection=SELECTION, covariance=frechet.COVARIANCE,
                                 trace_sqrt=frechet.TRACE_SQRT),
                **counts}


def fvd(real_dir: str, gen_dir: str, options: FVDOptions = FVDOptions(), *, i3d_weights: str | None = None,
        i3d_trust: bool = False, device: str | None = None, workers: int = 2, decode_timeout: float = 60.0,
        out: str | None = None, force: bool = False, address: str | None = None) -> dict:
    """FVD of gen_dir against real_dir under `options` through the metric stage: the generated clips' features in
    GEN_DIR/eval/fvd/, the real ones' in REAL_DIR/eval/fvd_reference/<content and protocol>/ (reused by every later
    FVD against that folder), the result (value, protocol, counts, provenance) in `out` (default
    GEN_DIR/eval/fvd.json). Weights are resolved and checked before any decoding; i3d_trust allows a TorchScript
    detector file (StyleGAN-V's), which runs code from the file."""
    metric = FVD(frames=options.frames, stride=options.stride, resize=options.resize, batch_size=options.batch_size,
                 weights=i3d_weights, trust=i3d_trust, device=run_device(device, address))
    stage = MetricStage(metric, {"generated": gen_dir, "real": real_dir}, options.max_clips, out, workers,
                        decode_timeout)
    return run_metric(stage, force=force, address=address)
