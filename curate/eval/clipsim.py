"""CLIPSIM: cosine between a video's caption and each of its frames (the CLIP scorer's embeddings), averaged
over frames, then over videos; reported unscaled (no x100, no clipping at 0), the scale of the paper's 0.30."""

from __future__ import annotations

import os

import numpy as np

from curate.eval.clips import iter_clips
from curate.scoring.clip_embedder import ClipEmbedder
from curate.storage import write_json

DEFAULT_CLIPSIM_MODEL = "ViT-B-32:openai"  # the model CLIPSIM is usually reported with (Make-A-Video, VideoCrafter)


def clipsim_video(embedder: ClipEmbedder, frames: np.ndarray, caption: str) -> float:
    """Mean over frames of cos(text embedding, frame embedding) for one clip."""
    images = embedder.embed_frames(frames)
    text = embedder.embed_texts([caption])
    return float((images @ text.T).mean())


def clipsim(gen_dir: str, *, clip_model: str = DEFAULT_CLIPSIM_MODEL, frames: int = 16, stride: int = 1,
            max_clips: int | None = None, device: str | None = None, trust_checkpoint: bool = False,
            workers: int = 2, decode_timeout: float = 60.0, out: str | None = None) -> dict:
    """CLIPSIM of a folder of captioned videos (images count as one-frame clips); the result with its protocol
    is written to `out` (default GEN_DIR/eval/clipsim.json) and returned."""
    embedder = ClipEmbedder(clip_model, device, trust_checkpoint).load()  # weights checked before any decoding
    scores, skipped = [], []
    for clip in iter_clips(gen_dir, frames=frames, stride=stride, exact=False, videos_only=False, limit=max_clips,
                           workers=workers, decode_timeout=decode_timeout):
        if clip.frames is None or not clip.caption:
            skipped.append({"key": clip.key, "error": clip.error or "no caption"})
            continue
        scores.append(clipsim_video(embedder, clip.frames, clip.caption))
    result = {
        "metric": "clipsim", "value": float(np.mean(scores)) if scores else None, "clips": len(scores),
        "skipped": len(skipped), "skipped_examples": skipped[:5],
        "protocol": {"model": embedder.model_id, "weights_sha256": embedder.provenance()["sha256"],
                     "device": embedder.device.type, "precision": embedder.precision, "frames": frames, "stride": stride, "start_frame": 0,
                     "max_clips": max_clips, "caption": "the manifest's caption column",
                     "aggregation": "cosine per frame, mean over frames, then mean over videos; unscaled",
                     "preprocess": "open_clip's eval transform of the model (via the CLIP scorer's embedder)"},
    }
    target = out or os.path.join(gen_dir, "eval", "clipsim.json")
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    write_json(target, result)
    return result
