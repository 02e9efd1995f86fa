"""LAION improved aesthetic predictor v2: the released MLP on L2-normalised CLIP ViT-L/14 image embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from curate.scoring.clip_embedder import ClipEmbedder, embed_sample_frames
from curate.scoring.sample import Sample
from curate.scoring.weights import AESTHETIC_V2_L14, DEFAULT_CLIP, resolve_clip, resolve_known_file

NAME = "aesthetic"
VERSION = "1"
AESTHETIC_SCORE = "aesthetic_score"  # mean over sampled frames
AESTHETIC_SCORE_MIN = "aesthetic_score_min"  # worst sampled frame
AESTHETIC_MODEL = "aesthetic_model"
AESTHETIC_SCORE_ERROR = "aesthetic_score_error"
EMBED_DIM = 768  # the OpenAI ViT-L/14 embedding the released weights were trained on


class AestheticMLP(nn.Module):
    """The released architecture, layer for layer, so its state dict (layers.0/2/4/6/7) loads strictly.

    Linear 768-1024-128-64-16-1 with dropouts between and no activations, as distributed.
    """

    def __init__(self, input_dim: int = EMBED_DIM):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings)


def load_aesthetic_mlp(path: str | Path | None = None) -> tuple[AestheticMLP, Path]:
    """The predictor with the released weights (explicit path, cache, or download), in eval mode on CPU."""
    weights = resolve_known_file(AESTHETIC_V2_L14, path, what="LAION aesthetic predictor v2")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    mlp = AestheticMLP()
    mlp.load_state_dict(state, strict=True)
    return mlp.eval().requires_grad_(False), weights


class AestheticScorer:
    """Predicted aesthetic rating (about 1-10, unclamped) per frame; mean and min over a video's frames."""

    name = NAME
    columns = (AESTHETIC_SCORE, AESTHETIC_SCORE_MIN, AESTHETIC_MODEL, AESTHETIC_SCORE_ERROR)

    def __init__(self, aesthetic_model: str | Path | None = None, clip_model: str = DEFAULT_CLIP,
                 device: str | None = None, embedder: ClipEmbedder | None = None):
        self.weights_path = aesthetic_model
        self.embedder = embedder or ClipEmbedder(clip_model, device)
        self.mlp: AestheticMLP | None = None
        self.model_id = ""

    def check_weights(self) -> None:
        """Resolve the CLIP and predictor weights without building models (fails fast where they are missing)."""
        resolve_clip(self.embedder.spec)
        resolve_known_file(AESTHETIC_V2_L14, self.weights_path, what="LAION aesthetic predictor v2")

    def setup(self) -> None:
        self.embedder.load()
        if self.embedder.embed_dim != EMBED_DIM:
            raise ValueError(
                f"the aesthetic predictor needs {EMBED_DIM}-d CLIP ViT-L/14 embeddings; "
                f"{self.embedder.model_id} gives {self.embedder.embed_dim}-d"
            )
        self.mlp, weights = load_aesthetic_mlp(self.weights_path)
        self.mlp.to(self.embedder.device)
        self.model_id = f"{weights.name}@{self.embedder.model_id}"

    def provenance(self) -> dict:
        return {"scorer": NAME, "version": VERSION, "model": self.model_id,
                "checksum_source": AESTHETIC_V2_L14.checksum_source}

    def score_batch(self, samples: list[Sample]) -> list[dict]:
        return self.score_embedded(samples, embed_sample_frames(self.embedder, samples))

    @torch.inference_mode()
    def score_embedded(self, samples: list[Sample], frame_embeddings: list[np.ndarray | str]) -> list[dict]:
        rows = [{AESTHETIC_SCORE: None, AESTHETIC_SCORE_MIN: None, AESTHETIC_MODEL: self.model_id,
                 AESTHETIC_SCORE_ERROR: None} for _ in samples]
        scored = [index for index, embeddings in enumerate(frame_embeddings) if not isinstance(embeddings, str)]
        for index, embeddings in enumerate(frame_embeddings):
            if isinstance(embeddings, str):
                rows[index][AESTHETIC_SCORE_ERROR] = embeddings
        if not scored:
            return rows
        stacked = torch.from_numpy(np.concatenate([frame_embeddings[index] for index in scored]))
        stacked = torch.nn.functional.normalize(stacked.float(), dim=-1).to(self.embedder.device)
        ratings = self.mlp(stacked).squeeze(-1).cpu().numpy()
        start = 0
        for index in scored:
            count = len(frame_embeddings[index])
            per_frame = ratings[start : start + count]
            start += count
            rows[index][AESTHETIC_SCORE] = float(per_frame.mean())
            rows[index][AESTHETIC_SCORE_MIN] = float(per_frame.min())
        return rows
