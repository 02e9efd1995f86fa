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
    image_max_side: int | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    deadline: float = 300.0
    max_bytes: int = 512 << 20
    retries: int = 2


@dataclass
class Pipeline:
    name: str
    download: DownloadSection
    description: str = ""
    score: dict | None = None
    select: dict | None = None
    train: dict | None = None


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
