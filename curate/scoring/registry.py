"""The scorers `curate score` knows, and what each one is (a ScorerSpec); every list of scorers is read from here.

To add a scorer: write one module with the scorer class (name, columns, check_weights, setup, provenance,
score_batch) and `SPEC = ScorerSpec(...)` naming its columns, where it runs and its factory; add one line
`"<name>": "<module>"` to SCORERS; document its columns in schemas/scores.yaml (tests/scoring/test_registry.py
checks both ways). The CLI's --scorers, recipes, the score stage and its workers then take it from here.

A module is imported when its spec is first asked for, not here, so `curate --help` does not load torch, open_clip
or OpenCV (importing curate.cli takes 0.6-0.9 s on the 2-core dev machine; importing every scorer module 9-23 s more).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from curate.config import ConfigError

SCORERS: dict[str, str] = {  # name -> the module defining its SPEC; this order is the order scorers run and report
    "clip": "curate.scoring.clip_score",
    "aesthetic": "curate.scoring.aesthetic_score",
    "motion": "curate.scoring.motion_score",
    "codec_motion": "curate.scoring.codec_motion",
    "quality": "curate.scoring.technical_quality",
    "ocr": "curate.scoring.ocr_score",
    "dedup": "curate.dedup.stage",
}

CPU = "cpu"  # in the CPU task that decoded the frames, beside them: no model weights to hold per worker
MODEL = "model"  # in the model actor pool (one actor per GPU when there are GPUs): weights load once per actor
DATASET = "dataset"  # its own stage over the whole dataset, after the per-sample scorers: it compares samples
PLACES = (CPU, MODEL, DATASET)


@dataclass(frozen=True)
class ScorerSpec:
    name: str  # what --scorers and a recipe's `score.scorers` call it; it writes scores/<name>/
    columns: tuple[str, ...]  # the score columns it writes, its error column included (schemas/scores.yaml)
    runs: str  # CPU, MODEL or DATASET
    # CPU/MODEL: factory(context: scorer_set.ScorerContext) -> scorer; DATASET: factory(root, options) -> a Stage
    factory: Callable[..., Any]
    weights: tuple[str, ...] = ()  # the weights it loads (a published file, or the option naming one); () for none
    options: Mapping[str, Any] = field(default_factory=dict)  # ScoreSection options it reads -> recorded when unset
    reports: tuple[str, ...] = ()  # DATASET: the keys of its stage's summary that `curate score` prints

    def __post_init__(self):
        if self.runs not in PLACES:
            raise ValueError(f"scorer {self.name}: runs={self.runs!r}; choose from {', '.join(PLACES)}")
        if self.runs != DATASET and not any(column.endswith("_error") for column in self.columns):
            raise ValueError(f"scorer {self.name}: a per-sample scorer writes a `*_error` column (its failures)")

    @property
    def per_sample(self) -> bool:
        return self.runs != DATASET


def spec(name: str) -> ScorerSpec:
    """The spec of one registered scorer (imports its module)."""
    if name not in SCORERS:
        raise ConfigError(f"unknown scorer(s) {name}; choose from {', '.join(SCORERS)}")
    found = importlib.import_module(SCORERS[name]).SPEC
    if found.name != name:
        raise ValueError(f"{SCORERS[name]}.SPEC is named {found.name!r} but registered as {name!r}")
    return found


def specs(names: Iterable[str]) -> list[ScorerSpec]:
    """The specs of `names`, in registry order; unknown names (or none) are a ConfigError naming the valid ones."""
    names = list(names)
    unknown = [name for name in names if name not in SCORERS]
    if unknown or not names:
        raise ConfigError(f"unknown scorer(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(SCORERS)}")
    return [spec(name) for name in SCORERS if name in names]
