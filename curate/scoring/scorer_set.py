"""The scorers an engine worker runs on one batch: builds them by name, shares one CLIP pass, merges their rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curate.scoring import aesthetic_score, clip_score, codec_motion, motion_score, ocr_score, technical_quality
from curate.scoring.clip_embedder import ClipEmbedder, embed_sample_frames
from curate.scoring.clip_spec import DEFAULT_CLIP
from curate.scoring.sample import Sample

KEY = "key"
SCORE_ERROR = "score_error"  # every failed scorer's message for this sample, "; "-joined; null when all succeeded
SCORER_NAMES = (clip_score.NAME, aesthetic_score.NAME, motion_score.NAME, codec_motion.NAME, technical_quality.NAME,
                ocr_score.NAME)
MODEL_SCORERS = (clip_score.NAME, aesthetic_score.NAME)  # the ones that want a GPU


def summarise_errors(row: dict) -> dict:
    """Set SCORE_ERROR from every `*_error` column of a scored row."""
    errors = [f"{column}: {row[column]}" for column in row
              if column.endswith("_error") and column != SCORE_ERROR and row[column]]
    row[SCORE_ERROR] = "; ".join(errors) if errors else None
    return row


class ScorerSet:
    """Per-batch scoring for a subset of SCORER_NAMES; one row per input sample, always, in input order.

    clip_model feeds the CLIP score only; aesthetic_clip_model feeds the aesthetic MLP and must be OpenAI's
    ViT-L/14 unless aesthetic_custom_clip says the MLP file was trained on that other CLIP. When both name
    the same model, one CLIP pass serves both. trust_checkpoint lets CLIP files whose checksum is not a
    published one be read although they hold TorchScript or pickled objects.
    Dedup is not here: it compares the whole dataset, see curate.dedup.
    """

    def __init__(self, names: list[str] | tuple[str, ...], clip_model: str = DEFAULT_CLIP,
                 aesthetic_model: str | Path | None = None, aesthetic_clip_model: str = DEFAULT_CLIP,
                 device: str | None = None, keep_embedding: bool = True, aesthetic_custom_clip: bool = False,
                 trust_checkpoint: bool = False):
        unknown = [name for name in names if name not in SCORER_NAMES]
        if unknown:
            raise ValueError(f"unknown scorers {unknown}; per-batch scorers are {list(SCORER_NAMES)}")
        self.names = tuple(name for name in SCORER_NAMES if name in names)
        self.scorers = []
        self._shared: ClipEmbedder | None = None
        clip_embedder = ClipEmbedder(clip_model, device, trust_checkpoint)
        if clip_score.NAME in self.names:
            self.scorers.append(clip_score.ClipScorer(keep_embedding=keep_embedding, embedder=clip_embedder))
        if aesthetic_score.NAME in self.names:
            shares = clip_score.NAME in self.names and aesthetic_clip_model == clip_model
            embedder = clip_embedder if shares else ClipEmbedder(aesthetic_clip_model, device, trust_checkpoint)
            self._shared = clip_embedder if shares else None
            self.scorers.append(aesthetic_score.AestheticScorer(aesthetic_model, embedder=embedder,
                                                                custom_clip=aesthetic_custom_clip))
        if motion_score.NAME in self.names:
            self.scorers.append(motion_score.MotionScorer())
        if codec_motion.NAME in self.names:
            self.scorers.append(codec_motion.CodecMotionScorer())
        if technical_quality.NAME in self.names:
            self.scorers.append(technical_quality.QualityScorer())
        if ocr_score.NAME in self.names:
            self.scorers.append(ocr_score.OcrScorer())

    @property
    def needs_gpu(self) -> bool:
        return any(name in MODEL_SCORERS for name in self.names)

    @property
    def needs_media(self) -> bool:
        """Whether a scorer reads the encoded file itself (the samples must then carry `media`)."""
        return any(getattr(scorer, "needs_media", False) for scorer in self.scorers)

    @property
    def columns(self) -> tuple[str, ...]:
        return (KEY,) + tuple(column for scorer in self.scorers for column in scorer.columns) + (SCORE_ERROR,)

    def check_weights(self) -> None:
        """Strict checks of every weights file (found, right model, right keys and shapes) without loading the
        models: the driver calls this before writing anything or starting workers."""
        for scorer in self.scorers:
            scorer.check_weights()

    def clip_first_resize(self) -> tuple[int, str] | None:
        """The first resize step shared by every CLIP model in use (None when there is none, or they differ:
        then CLIP sees the capped frames)."""
        steps = {scorer.embedder.first_resize() for scorer in self.scorers if hasattr(scorer, "embedder")}
        return steps.pop() if len(steps) == 1 else None

    def setup(self) -> None:
        """Load every model once per worker (raises WeightsMissing here, before any batch is read)."""
        for scorer in self.scorers:
            scorer.setup()

    def provenance(self) -> dict[str, dict]:
        """Per scorer: version, model names, weight files and their sha256 (checks the weights if not yet done)."""
        return {scorer.name: scorer.provenance() for scorer in self.scorers}

    def score_batch(self, samples: list[Sample]) -> list[dict]:
        rows = [{KEY: sample.get(KEY)} for sample in samples]
        shared = embed_sample_frames(self._shared, samples) if self._shared is not None else None
        for scorer in self.scorers:
            try:
                if shared is not None and scorer.name in MODEL_SCORERS:
                    produced = scorer.score_embedded(samples, shared)
                else:
                    produced = scorer.score_batch(samples)
            except Exception as error:  # a scorer bug costs its columns for this batch, never the batch's rows
                error_column = next(column for column in scorer.columns if column.endswith("_error"))
                produced = [{error_column: f"{scorer.name} scorer failed on this batch: {type(error).__name__}: {error}"}
                            for _ in samples]
            for row, values in zip(rows, produced, strict=True):
                row.update({column: values.get(column) for column in scorer.columns})
        for row in rows:
            summarise_errors(row)
        return rows

    def score_columns(self, batch: dict[str, list | np.ndarray]) -> dict[str, list]:
        """Column-oriented form of score_batch (what a dataframe/Arrow batch engine hands over)."""
        size = len(batch[KEY])
        samples = [{name: values[index] for name, values in batch.items()} for index in range(size)]
        rows = self.score_batch(samples)
        return {column: [row[column] for row in rows] for column in self.columns}
