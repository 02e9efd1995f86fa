"""Pipeline recipes (pipelines/*.yaml): strict parsing into dataclasses — an unknown key is an error."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import yaml


class ConfigError(Exception):
    pass


@dataclass
class DownloadSection:
    source: str
    input: str
    source_options: dict = field(default_factory=dict)
    shard_size: int = 1000
    limit: int | None = None
    allow_private_addresses: bool = False
    thread_count: int = 16
    image_thread_count: int = 64
    max_pixels: int = 8192 * 8192
    video_max_side: int | None = None
    decode_check: bool = False
    image_max_side: int | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    deadline: float = 300.0
    max_bytes: int = 512 << 20
    retries: int = 2
    max_failure_rate: float = 1.0  # exit 1 when more rows than this fraction failed (the folder is kept)


@dataclass
class ScoreSection:
    scorers: list = field(default_factory=lambda: ["clip", "aesthetic", "motion", "quality", "dedup"])
    clip_model: str | None = None
    aesthetic_model: str | None = None
    batch_size: int = 32
    actors: int | None = None
    frames: int = 3
    positions: str = "first,middle,last"
    dedup_threshold: float = 0.95


@dataclass
class SelectSection:
    where: str = "TRUE"
    top: float | None = None
    by: str | None = None
    quotas: dict = field(default_factory=dict)
    video_size: list = field(default_factory=lambda: [512, 320])
    image_size: list = field(default_factory=lambda: [512, 512])
    max_frames: int | None = None
    out: str = "selected"  # folder beside the dataset folder (or an absolute path)


@dataclass
class Pipeline:
    name: str
    download: DownloadSection
    description: str = ""
    score: ScoreSection | None = None
    select: SelectSection | None = None


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing}")
    return cls(**data)


def load_pipeline(path: str) -> Pipeline:
    """Relative input paths are resolved against the recipe's folder, so recipes travel with their data."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping with at least `name` and `download`")
    data = dict(data)
    data["download"] = _build(DownloadSection, data.get("download"), f"{path}: download")
    if data.get("score") is not None:
        data["score"] = _build(ScoreSection, data["score"], f"{path}: score")
    if data.get("select") is not None:
        data["select"] = _build(SelectSection, data["select"], f"{path}: select")
    pipeline = _build(Pipeline, data, path)
    base = os.path.dirname(os.path.abspath(path))
    dl = pipeline.download
    dl.input = os.path.normpath(os.path.join(base, os.path.expandvars(dl.input)))
    for key, value in list(dl.source_options.items()):
        if isinstance(value, str):
            dl.source_options[key] = value = os.path.expandvars(value)
        if key in ("images", "videos") and isinstance(value, str):
            dl.source_options[key] = os.path.normpath(os.path.join(base, os.path.expandvars(value)))
    return pipeline
