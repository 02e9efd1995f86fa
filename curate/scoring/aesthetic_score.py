"""LAION improved aesthetic predictor v2: the released MLP on L2-normalised CLIP ViT-L/14 image embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from curate.scoring.clip_embedder import ClipEmbedder, embed_sample_frames
from curate.scoring.sample import Sample
from curate.scoring.clip_spec import ClipSource
from curate.scoring.options import DEFAULT_CLIP
from curate.scoring.published_weights import AESTHETIC_V2_L14, resolve_known_file
from curate.scoring.registry import MODEL, ScorerSpec
from curate.weightfile import file_digest, load_strict, read_weights, unwrap_state_dict

NAME = "aesthetic"
VERSION = "1"
AESTHETIC_SCORE = "aesthetic_score"  # mean over sampled frames
AESTHETIC_SCORE_MIN = "aesthetic_score_min"  # worst sampled frame
AESTHETIC_MODEL = "aesthetic_model"
AESTHETIC_SCORE_ERROR = "aesthetic_score_error"
EMBED_DIM = 768  # the OpenAI ViT-L/14 embedding the released weights were trained on
AESTHETIC_CLIP_RELEASE = "ViT-L-14"  # the OpenAI CLIP release whose embeddings the MLP was trained on


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


def load_aesthetic_mlp(path: str | Path | None = None, input_dim: int = EMBED_DIM) -> tuple[AestheticMLP, Path]:
    """The predictor with the released weights (explicit path, cache, or download), in eval mode on CPU.

    A file without the released layout is a WeightsLayoutError naming the file and the expected keys.
    """
    weights = resolve_known_file(AESTHETIC_V2_L14, path, what="LAION aesthetic predictor v2")
    mlp = AestheticMLP(input_dim)
    load_strict(mlp, unwrap_state_dict(read_weights(weights, what="aesthetic predictor")), weights,
                f"aesthetic predictor (MLP {input_dim}-1024-128-64-16-1)")
    return mlp.eval().requires_grad_(False), weights


def require_openai_l14(source: ClipSource, spec: str) -> None:
    """Refuse a CLIP other than OpenAI's ViT-L/14 for the released predictor, by name, whatever its width."""
    if source.openai != AESTHETIC_CLIP_RELEASE:
        raise ValueError(
            f"the LAION aesthetic predictor is defined on OpenAI CLIP {AESTHETIC_CLIP_RELEASE} embeddings; "
            f"{spec!r} is not OpenAI's {AESTHETIC_CLIP_RELEASE} weights. Give the aesthetic scorer its own CLIP "
            f"({DEFAULT_CLIP}, or OpenAI's ViT-L-14.pt file), or, for an MLP you trained on this CLIP's "
            "embeddings, say so with the custom-CLIP override (aesthetic_custom_clip=True)."
        )


class AestheticScorer:
    """Predicted aesthetic rating (about 1-10, unclamped) per frame; mean and min over a video's frames.

    The CLIP feeding the MLP must be OpenAI's ViT-L/14 (the tag ViT-L-14:openai, OpenAI's published file,
    or OpenAI's repository in the hub cache): other CLIPs are refused by name, even 768-d ones such as
    ViT-L-14:laion2b_s32b_b82k, whose embeddings mean something else to the MLP. custom_clip=True lifts
    that check for an MLP file of the same layout trained on another CLIP's embeddings (its width must
    match the MLP's input).
    """

    name = NAME
    columns = (AESTHETIC_SCORE, AESTHETIC_SCORE_MIN, AESTHETIC_MODEL, AESTHETIC_SCORE_ERROR)

    def __init__(self, aesthetic_model: str | Path | None = None, clip_model: str = DEFAULT_CLIP,
                 device: str | None = None, embedder: ClipEmbedder | None = None, custom_clip: bool = False):
        self.weights_path = aesthetic_model
        self.embedder = embedder or ClipEmbedder(clip_model, device)
        self.custom_clip = custom_clip
        self.mlp: AestheticMLP | None = None
        self.resolved: Path | None = None
        self.model_id = ""

    def check_weights(self) -> None:
        """Strict checks before any work: the CLIP is the right one and loads, the MLP file has the released layout."""
        source = self.embedder.resolve()
        if not self.custom_clip:  # by name first: a wrong CLIP is refused before its weights are read
            require_openai_l14(source, self.embedder.spec)
        self.embedder.check()
        _, self.resolved = load_aesthetic_mlp(self.weights_path, self.embedder.embed_dim)
        self.model_id = f"{self.resolved.name}@{source.model_id}"

    def setup(self) -> None:
        if not self.custom_clip:
            require_openai_l14(self.embedder.resolve(), self.embedder.spec)
        self.embedder.load()
        self.mlp, self.resolved = load_aesthetic_mlp(self.weights_path, self.embedder.embed_dim)
        self.mlp.to(self.embedder.device)
        self.model_id = f"{self.resolved.name}@{self.embedder.model_id}"

    def provenance(self) -> dict:
        if self.resolved is None:
            self.check_weights()
        return {"scorer": NAME, "version": VERSION, "model": self.model_id, "weights": str(self.resolved),
                "sha256": file_digest(self.resolved), "checksum_source": AESTHETIC_V2_L14.checksum_source,
                "custom_clip": self.custom_clip, "clip": self.embedder.provenance()}

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


def _build(context) -> AestheticScorer:
    options = context.options
    return AestheticScorer(options.aesthetic_model, embedder=context.clip(options.aesthetic_clip_model or DEFAULT_CLIP),
                           custom_clip=options.aesthetic_custom_clip)


SPEC = ScorerSpec(NAME, AestheticScorer.columns, MODEL, _build,
                  weights=(AESTHETIC_V2_L14.filename, "the OpenAI CLIP ViT-L/14 named by aesthetic_clip_model"),
                  options={"aesthetic_model": None, "aesthetic_clip_model": DEFAULT_CLIP, "aesthetic_custom_clip": False})
