"""A pipeline recipe as a list of stages (download -> split -> caption -> score -> dedup -> select), described or run
in order. With a split stage, caption, score, dedup and select work on the clips' folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from curate import engine
from curate.caption.stage import CaptionStage
from curate.config import (CaptionSection, ConfigError, SelectSection, expand_path, expand_variables, from_mapping,
                           load_yaml)
from curate.download.stage import DownloadSection, DownloadStage
from curate.scoring import registry
from curate.scoring.options import ScoreSection
from curate.scoring.stage import ScoreStage
from curate.selection import SelectStage
from curate.split.options import SplitSection
from curate.split.stage import SplitStage
from curate.stage import Stage


@dataclass
class Pipeline:
    name: str
    download: DownloadSection
    description: str = ""
    split: SplitSection | None = None  # long videos -> single-shot clips; score and select then work on the clips
    caption: CaptionSection | None = None
    score: ScoreSection | None = None
    select: SelectSection | None = None


def load_pipeline(path: str) -> Pipeline:
    """Relative input paths are resolved against the recipe's folder, so recipes travel with their data."""
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping with at least `name` and `download`")
    try:
        pipeline = from_mapping(Pipeline, data)
        base = os.path.dirname(os.path.abspath(path))
        dl = pipeline.download
        dl.input = expand_path(dl.input, base, "download.input")
        for key, value in list(dl.source_options.items()):
            if isinstance(value, str):
                where = f"download.source_options.{key}"
                dl.source_options[key] = (expand_path(value, base, where) if key in ("images", "videos")
                                          else expand_variables(value, where))
        if pipeline.caption and pipeline.caption.prompt_file:
            pipeline.caption.prompt_file = expand_path(pipeline.caption.prompt_file, base, "caption.prompt_file")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return pipeline


def beside(target: str, out: str) -> str:
    """A stage's own folder: absolute as written, else beside the dataset folder."""
    return target if os.path.isabs(target) else os.path.join(os.path.dirname(os.path.abspath(out)), target)


def stages(recipe: Pipeline, out: str) -> list[Stage]:
    plan: list[Stage] = [DownloadStage(out, recipe.download)]
    data = out
    if recipe.split:
        data = beside(recipe.split.out, out)
        plan.append(SplitStage(out, data, recipe.split))
    if recipe.caption:
        plan.append(CaptionStage(data, recipe.caption))
    if recipe.score:
        chosen = registry.specs(recipe.score.scorers)
        if any(spec.per_sample for spec in chosen):
            plan.append(ScoreStage(data, recipe.score))
        plan += [spec.factory(data, recipe.score) for spec in chosen if not spec.per_sample]
    if recipe.select:
        plan.append(SelectStage(data, beside(recipe.select.out, out), recipe.select))
    return plan


def describe(recipe: Pipeline, out: str) -> str:
    """What `curate run` will do, stage by stage, before it does it."""
    plan = stages(recipe, out)
    lines = [f"pipeline {recipe.name}: " + " -> ".join(s.name for s in plan)]
    for stage in plan:
        lines += ["  " + line for line in stage.describe()]
    return "\n".join(lines)


def run(recipe: Pipeline, out: str, *, force: bool = False, address: str | None = None,
        echo: Callable[[str, dict], None] = lambda name, summary: None) -> dict:
    """Run the stages in order; a stage that reports failed shards stops the pipeline (its summary says why)."""
    results = {}
    for stage in stages(recipe, out):
        results[stage.name] = summary = engine.run_stage(stage, force=force, address=address)
        echo(stage.name, summary)
        if summary.get("failed_shards"):
            break
    return results


def score(root: str, scorers: list[str], *, force: bool = False, address: str | None = None, **options) -> dict:
    """Score every success sample of the dataset folder (options: ScoreSection fields); resumable per shard
    and per scorer; refuses a scorer whose settings changed unless `force`. Dataset-wide scorers (dedup) run
    last; the summary adds the keys each one reports, and the failed shards of every stage."""
    chosen = registry.specs(scorers)
    section = ScoreSection(scorers=list(scorers), **options)
    summary: dict = {}
    if any(spec.per_sample for spec in chosen):
        summary.update(engine.run_stage(ScoreStage(root, section), force=force, address=address))
    for spec in chosen:
        if not spec.per_sample:
            found = engine.run_stage(spec.factory(root, section), force=force, address=address)
            summary.update({key: found[key] for key in spec.reports if key in found})
            summary["failed_shards"] = summary.get("failed_shards", []) + found.get("failed_shards", [])
    return summary
