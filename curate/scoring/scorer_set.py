"""The scorers an engine worker runs on one batch: built from their specs, one CLIP pass per model, rows merged."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from curate.scoring.options import ScoreSection
from curate.scoring.registry import MODEL, SCORERS, ScorerSpec, specs
from curate.scoring.sample import Sample

if TYPE_CHECKING:  # open_clip and torch load with the first CLIP a scorer asks for, not with the score stage
    from curate.scoring.clip_embedder import ClipEmbedder

KEY = "key"
SCORE_ERROR = "score_error"  # every failed scorer's message for this sample, "; "-joined; null when all succeeded


@dataclass
class ScorerContext:
    """What a scorer's factory builds it from: the score options, the device, and one ClipEmbedder per CLIP spec,
    so scorers asking for the same CLIP share its model and its pass over each batch."""

    options: ScoreSection = field(default_factory=ScoreSection)
    device: str | None = None
    clips: dict[str, ClipEmbedder] = field(default_factory=dict)

    def clip(self, clip_spec: str) -> ClipEmbedder:
        if clip_spec not in self.clips:
            from curate.scoring.clip_embedder import ClipEmbedder

            self.clips[clip_spec] = ClipEmbedder(clip_spec, self.device, self.options.trust_checkpoint)
        return self.clips[clip_spec]


def summarise_errors(row: dict) -> dict:
    """Set SCORE_ERROR from every `*_error` column of a scored row."""
    errors = [f"{column}: {row[column]}" for column in row
              if column.endswith("_error") and column != SCORE_ERROR and row[column]]
    row[SCORE_ERROR] = "; ".join(errors) if errors else None
    return row


class ScorerSet:
    """Per-batch scoring for some registered per-sample scorers; one row per input sample, always, in input order.

    `scorers` are names (looked up in the registry) or specs (the score stage hands its workers specs, so a
    scorer registered in the driver runs there too); they run and report in registry order. Each is built by its spec's factory from `options` (a
    ScoreSection); scorers that use the same CLIP share one embedding pass per batch (clip and aesthetic, when
    aesthetic_clip_model is clip_model). Dedup is not here: it compares the whole dataset, see curate.dedup.
    """

    def __init__(self, scorers: Sequence[str | ScorerSpec], options: ScoreSection | None = None,
                 device: str | None = None):
        named = [s for s in scorers if isinstance(s, str)]
        chosen = (specs(named) if named else []) + [s for s in scorers if not isinstance(s, str)]
        order = list(SCORERS)  # registry order, whatever order they were asked in (a scorer not in it: last)
        self.specs = tuple(sorted(chosen, key=lambda s: order.index(s.name) if s.name in order else len(order)))
        whole = [s.name for s in self.specs if not s.per_sample]
        if whole:
            raise ValueError(f"{', '.join(whole)} compares the whole dataset: it runs as its own stage, not per batch")
        self.names = tuple(s.name for s in self.specs)
        context = ScorerContext(options or ScoreSection(), device)
        self.scorers = [s.factory(context) for s in self.specs]

    @property
    def needs_gpu(self) -> bool:
        return any(s.runs == MODEL for s in self.specs)

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
        embedded: dict[int, list] = {}  # id(embedder) -> this batch's frame embeddings, computed once per CLIP
        for scorer in self.scorers:
            try:
                embedder = getattr(scorer, "embedder", None)
                if embedder is not None and hasattr(scorer, "score_embedded"):
                    if id(embedder) not in embedded:
                        from curate.scoring.clip_embedder import embed_sample_frames

                        embedded[id(embedder)] = embed_sample_frames(embedder, samples)
                    produced = scorer.score_embedded(samples, embedded[id(embedder)])
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
