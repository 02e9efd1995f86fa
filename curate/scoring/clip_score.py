"""CLIP text alignment (CLIPSIM): raw cosine between each sampled frame and the caption, averaged over frames."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from curate.scoring.options import DEFAULT_CLIP
from curate.scoring.registry import MODEL, ScorerSpec
from curate.scoring.sample import Sample

if TYPE_CHECKING:  # open_clip and torch load with the scorer, not with the stages that name its columns
    from curate.scoring.clip_embedder import ClipEmbedder

NAME = "clip"
VERSION = "1"
CLIP_SCORE = "clip_score"
CLIP_EMBEDDING = "clip_embedding"  # mean of the frame embeddings, re-normalised: for dedup and retrieval
CLIP_MODEL = "clip_model"
CLIP_SCORE_ERROR = "clip_score_error"


class ClipScorer:
    """Scores caption/frames alignment with one open_clip model; optionally returns the image embedding."""

    name = NAME

    def __init__(self, clip_model: str = DEFAULT_CLIP, device: str | None = None, keep_embedding: bool = True,
                 embedder: ClipEmbedder | None = None):
        if embedder is None:
            from curate.scoring.clip_embedder import ClipEmbedder

            embedder = ClipEmbedder(clip_model, device)
        self.embedder = embedder
        self.keep_embedding = keep_embedding

    @property
    def columns(self) -> tuple[str, ...]:
        base = (CLIP_SCORE, CLIP_MODEL, CLIP_SCORE_ERROR)
        return base + (CLIP_EMBEDDING,) if self.keep_embedding else base

    def check_weights(self) -> None:
        """Resolve the CLIP weights and check their layout without loading them (fails fast, before any work)."""
        self.embedder.check()

    def setup(self) -> None:
        self.embedder.load()

    def provenance(self) -> dict:
        return {"scorer": NAME, "version": VERSION, **self.embedder.provenance()}

    def score_batch(self, samples: list[Sample]) -> list[dict]:
        from curate.scoring.clip_embedder import embed_sample_frames

        return self.score_embedded(samples, embed_sample_frames(self.embedder, samples))

    def score_embedded(self, samples: list[Sample], frame_embeddings: list[np.ndarray | str]) -> list[dict]:
        """Rows from frame embeddings computed once per batch (shared with the aesthetic scorer)."""
        rows = [self._empty_row() for _ in samples]
        captioned = []
        for index, (sample, embeddings) in enumerate(zip(samples, frame_embeddings)):
            if isinstance(embeddings, str):
                rows[index][CLIP_SCORE_ERROR] = embeddings
                continue
            if self.keep_embedding:
                mean = embeddings.mean(axis=0)
                rows[index][CLIP_EMBEDDING] = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
            caption = sample.get("caption")
            if caption is None or not str(caption).strip():
                rows[index][CLIP_SCORE_ERROR] = "no caption"
                continue
            captioned.append(index)
        if captioned:
            try:
                texts = self.embedder.embed_texts([str(samples[index]["caption"]) for index in captioned]).cpu().numpy()
            except Exception as error:  # the text tower failing is every captioned sample's error, not a crash
                for index in captioned:
                    rows[index][CLIP_SCORE_ERROR] = f"caption embedding failed: {type(error).__name__}: {error}"
                return rows
            for index, text in zip(captioned, texts):
                rows[index][CLIP_SCORE] = float((frame_embeddings[index] @ text).mean())
        return rows

    def _empty_row(self) -> dict:
        row = {column: None for column in self.columns}
        row[CLIP_MODEL] = self.embedder.model_id
        return row


def _build(context) -> ClipScorer:
    return ClipScorer(embedder=context.clip(context.options.clip_model or DEFAULT_CLIP))


SPEC = ScorerSpec(NAME, (CLIP_SCORE, CLIP_MODEL, CLIP_SCORE_ERROR), MODEL, _build,
                  weights=("the open_clip model named by clip_model",), options={"clip_model": DEFAULT_CLIP})
