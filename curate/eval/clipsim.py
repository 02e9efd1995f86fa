"""CLIPSIM: cosine between a video's caption and each of its frames (the CLIP scorer's embeddings), averaged
over frames, then over videos; reported unscaled (no x100, no clipping at 0), the scale of the paper's 0.30."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate.eval.metric_stage import ClipMetric, MetricStage, Selection, run_device, run_metric
from curate.scoring.clip_embedder import ClipEmbedder

DEFAULT_CLIPSIM_MODEL = "ViT-B-32:openai"  # the model CLIPSIM is usually reported with (Make-A-Video, VideoCrafter)
AGGREGATION = "cosine per frame, mean over frames, then mean over videos; unscaled"


def clipsim_video(embedder: ClipEmbedder, frames: np.ndarray, caption: str) -> float:
    """Mean over frames of cos(text embedding, frame embedding) for one clip."""
    images = embedder.embed_frames(frames)
    text = embedder.embed_texts([caption])
    return float((images @ text.T).mean())


@dataclass
class ClipSim(ClipMetric):
    """CLIPSIM of up to `frames` frames of each video (an image is a one-frame clip) against its caption."""

    name = "clipsim"
    columns = ("clipsim",)
    videos_only = False
    clip_model: str = DEFAULT_CLIPSIM_MODEL
    frames: int = 16
    stride: int = 1
    device: str = "cpu"
    trust_checkpoint: bool = False
    model: dict | None = None  # the embedder's provenance (model id, weights file and sha256), after check()

    @property
    def gpus(self) -> float:
        return 1.0 if self.device == "cuda" else 0.0

    def _embedder(self, device: str) -> ClipEmbedder:
        return ClipEmbedder(self.clip_model, device, self.trust_checkpoint)

    def check(self) -> None:
        if self.model is None:  # resolved and checked without loading; on the CPU, the driver may have no GPU
            embedder = self._embedder("cpu")
            embedder.check()
            self.model = dict(embedder.provenance(), device=self.device,
                              precision="bf16 autocast" if self.device == "cuda" else "float32")

    def settings(self) -> dict:
        self.check()
        m = self.model
        return {"model": m["model"], "weights_sha256": m["sha256"], "device": m["device"],
                "precision": m["precision"], "frames": self.frames, "stride": self.stride, "start_frame": 0,
                "caption": "the manifest's caption column"}

    def record(self) -> dict:
        return {"model": self.model}

    def measurer(self):
        embedder = self._embedder(self.device).load()

        def measure(clips):
            return [{"clipsim": clipsim_video(embedder, clip.frames, clip.caption)} if clip.caption
                    else {"error": "no caption"} for clip in clips]

        return measure

    def summarise(self, sides: dict[str, Selection]) -> dict:
        (chosen,) = sides.values()
        scores = [row["clipsim"] for row in chosen.rows]
        return {"metric": "clipsim", "value": float(np.mean(scores)) if scores else None, **chosen.counts(),
                "protocol": dict(self.settings(), aggregation=AGGREGATION, preprocess=(
                    "open_clip's eval transform of the model (via the CLIP scorer's embedder)"))}


def clipsim(gen_dir: str, *, clip_model: str = DEFAULT_CLIPSIM_MODEL, frames: int = 16, stride: int = 1,
            max_clips: int | None = None, device: str | None = None, trust_checkpoint: bool = False,
            workers: int = 2, decode_timeout: float = 60.0, out: str | None = None, force: bool = False,
            address: str | None = None) -> dict:
    """CLIPSIM of a folder of captioned videos through the metric stage: per-clip rows in GEN_DIR/eval/clipsim/, the
    result with its protocol and provenance in `out` (default GEN_DIR/eval/clipsim.json). Weights are resolved and
    checked before any decoding."""
    metric = ClipSim(clip_model=clip_model, frames=frames, stride=stride, device=run_device(device, address),
                     trust_checkpoint=trust_checkpoint)
    stage = MetricStage(metric, {"folder": gen_dir}, max_clips, out, workers, decode_timeout)
    return run_metric(stage, force=force, address=address)
