"""The score stage's options (`curate score` flags and a recipe's `score:` keys, from these fields alone)."""

from __future__ import annotations

from dataclasses import dataclass, field

from curate.config import ConfigError, option_help
from curate.scoring.frames import POSITIONS
from curate.scoring.registry import SCORERS

DEFAULT_CLIP = "ViT-L-14:openai"  # here, not in clip_spec: a stage reads it without importing open_clip


@dataclass
class ScoreSection:
    scorers: list = field(default_factory=lambda: ["clip", "aesthetic", "motion", "quality", "dedup"],
                          metadata=option_help(f"Comma-separated, of: {', '.join(SCORERS)}."))
    clip_model: str | None = field(default=None, metadata=option_help(
        f"CLIP for clip_score and dedup (default {DEFAULT_CLIP}): open_clip NAME:TAG, NAME:/path/checkpoint, a "
        "checkpoint file (architecture recognised or inferred from its shapes; refused when ambiguous; "
        "NAME-quickgelu for OpenAI-trained weights), a model folder, or hf-hub:ORG/REPO."))
    aesthetic_model: str | None = field(default=None, metadata=option_help(
        "Path to sac+logos+ava1-l14-linearMSE.pth (default: the standard caches)."))
    aesthetic_clip_model: str | None = field(default=None, metadata=option_help(
        "The CLIP feeding the aesthetic MLP: OpenAI ViT-L/14 only (ViT-L-14:openai, or its checkpoint file)."))
    aesthetic_custom_clip: bool = field(default=False, metadata=option_help(
        "Allow another CLIP for the aesthetic MLP (only for an MLP you trained on that CLIP's embeddings)."))
    trust_checkpoint: bool = field(default=False, metadata=option_help(
        "Read pickled/TorchScript CLIP files whose checksum is not published (they can run code)."))
    batch_size: int = field(default=32, metadata=option_help("Samples per model batch.", min=1))
    actors: int | None = field(default=None, metadata=option_help("Scorer actors (default: one per GPU, else 1).", min=1))
    frames: int = field(default=3, metadata=option_help("Frames sampled per video.", min=1))
    positions: str = field(default="first,middle,last", metadata=option_help(
        "Frame positions: first,middle,last or uniform."))
    dedup_threshold: float = field(default=0.95, metadata=option_help(
        "CLIP cosine at or above which a sample is a near-duplicate."))
    keep_best: str | None = field(default=None, metadata=option_help(
        "Dedup keeps, of each group of duplicates, the sample with the highest value of this numeric score column "
        "(e.g. aesthetic_score; missing values last, ties by dataset order); default: the earliest."))
    decode_timeout: float = field(default=60.0, metadata=option_help(
        "Seconds one sample's decode may take in the isolated decoder before it is a failure.", min=1.0))

    def __post_init__(self):
        if self.positions not in POSITIONS:
            raise ConfigError(f"unknown frame positions {self.positions!r}; choose from {', '.join(POSITIONS)}")
