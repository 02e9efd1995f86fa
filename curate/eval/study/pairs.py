"""Finds the study's pairs: videos of different generated folders made from the same prompt and seed."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass

from curate.shards import reader
from curate.shards.folder import DatasetFolder


@dataclass(frozen=True)
class Video:
    """One generated video: where its bytes lie inside a shard tar, and what it was generated from."""

    model: str  # the folder's label; never shown to raters
    folder: str
    key: str
    tar: str
    offset: int
    size: int
    ext: str
    caption: str


@dataclass(frozen=True)
class Pair:
    """Two models' videos of one prompt and seed; `a` and `b` are in label order, not display order."""

    id: str
    match: dict  # {"prompt_key" or "caption": ..., "seed": ...}
    a: Video
    b: Video

    @property
    def caption(self) -> str:
        return self.a.caption or self.b.caption


def model_labels(folders: list[str]) -> list[str]:
    """Each folder's basename, or its whole path where two basenames collide."""
    names = [os.path.basename(os.path.normpath(f)) for f in folders]
    return [n if names.count(n) == 1 else os.path.normpath(f) for n, f in zip(names, folders)]


def _generation_fields(row: dict) -> dict:
    """prompt_key and seed from the row's columns, else from its `extra` JSON (where a writer bound to the
    manifest schema keeps its own columns)."""
    extra = row.get("extra")
    extra = json.loads(extra) if isinstance(extra, str) and extra.startswith("{") else {}
    return {name: row.get(name) if row.get(name) is not None else extra.get(name) for name in ("prompt_key", "seed")}


def match_of(row: dict) -> dict:
    """What makes two videos comparable: the same prompt (its key, or its text when there is no key) and seed."""
    fields = _generation_fields(row)
    prompt = {"prompt_key": fields["prompt_key"]} if fields["prompt_key"] is not None else {"caption": row.get("caption") or ""}
    seed = fields["seed"]
    return {**prompt, "seed": int(seed) if seed is not None else None}


def load_videos(folder: str, model: str) -> dict[str, Video]:
    """The success videos of a generated dataset folder, by match id (first key wins on duplicates)."""
    dataset = DatasetFolder(folder)
    if not dataset.exists():
        raise FileNotFoundError(f"{folder}: not a dataset folder (no shards/)")
    videos: dict[str, Video] = {}
    for sid in dataset.complete_shards():
        spans = reader.member_spans(folder, sid)
        for row in sorted(reader.manifest_rows(folder, sid), key=lambda r: r["key"]):
            found = reader.media_span(spans.get(row["key"], {}))
            if found is None or reader.modality_of(found[0]) != "video":
                continue
            ext, span = found
            videos.setdefault(json.dumps(match_of(row), sort_keys=True), Video(
                model=model, folder=os.path.abspath(folder), key=row["key"], tar=span.tar, offset=span.offset,
                size=span.size, ext=ext, caption=row.get("caption") or ""))
    return videos


def pair_id(match_id: str, model_a: str, model_b: str) -> str:
    """Stable across restarts (recorded with every vote): a digest of the match and the two labels."""
    text = json.dumps([match_id, *sorted((model_a, model_b))])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def find_pairs(folders: list[str]) -> list[Pair]:
    """Every pair of folders x every match present in both; with k folders a prompt gives k(k-1)/2 pairs."""
    if len(folders) < 2:
        raise ValueError("a study needs at least two generated folders")
    labels = model_labels(folders)
    by_model = {label: load_videos(folder, label) for label, folder in zip(labels, folders)}
    pairs = []
    for model_a, model_b in itertools.combinations(sorted(by_model), 2):
        for match_id in sorted(by_model[model_a].keys() & by_model[model_b].keys()):
            pairs.append(Pair(id=pair_id(match_id, model_a, model_b), match=json.loads(match_id),
                              a=by_model[model_a][match_id], b=by_model[model_b][match_id]))
    return pairs
