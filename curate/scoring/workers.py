"""What the score stage's Ray workers run: a shard decoded into samples with the CPU scorers' columns (CPU tasks),
and the model actor that adds the model scorers' columns to them.

Frames travel between the two as raw bytes + shape; the CPU scorers' columns as JSON in `cpu_scores`.
"""

from __future__ import annotations

import json

import numpy as np

from curate.scoring.clip_score import CLIP_EMBEDDING
from curate.scoring.frames import DECODE_MAX_SIDE, FrameDecodeError, IsolatedDecoder
from curate.scoring.options import ScoreSection
from curate.scoring.registry import ScorerSpec
from curate.scoring.scorer_set import SCORE_ERROR, ScorerSet, summarise_errors
from curate.shards import reader


def expand_shard(root: str, sid: str, k: int, positions: str, decode_timeout: float,
                 clip_resize: tuple[int, str] | None = None, with_media: bool = False) -> list[dict]:
    """Every success row of one shard with its frames, decoded in an isolated child (a crash there is one
    sample's decode_error), plus CLIP's first resize of the original frames when `clip_resize` is given, and the
    encoded file itself when `with_media` (for scorers that read the bitstream). Frames travel as raw bytes +
    shape."""
    out = []

    def row(meta: dict, frames=None, clip=None, error=None, media=None) -> dict:
        return {"unit": sid, "key": meta["key"], "modality": meta["modality"], "caption": meta.get("caption"),
                "sha256": meta.get("sha256"), "media": media if with_media else None,
                "frames": None if frames is None else frames.tobytes(),
                "shape": None if frames is None else list(frames.shape),
                "clip_frames": None if clip is None else clip.tobytes(),
                "clip_shape": None if clip is None else list(clip.shape), "decode_error": error}

    with IsolatedDecoder(decode_timeout) as decoder:
        for sample in reader.samples(root, sid, ["caption", "sha256"]):
            meta, media = sample.row, sample.media
            if media is None:  # listed as success but absent from the tar: scored as an error, not lost
                out.append(row(meta, error="media missing from tar"))
                continue
            try:
                decoded = decoder.decode(media, meta["modality"], k, positions, DECODE_MAX_SIDE, clip_resize)
                frames, clip = decoded if clip_resize else (decoded, None)
                out.append(row(meta, np.ascontiguousarray(frames, np.uint8),
                               None if clip is None else np.ascontiguousarray(clip, np.uint8), media=media))
            except FrameDecodeError as exc:
                out.append(row(meta, error=str(exc), media=media))
    return out


def _as_sample(row: dict) -> dict:
    frames = None if row["frames"] is None else np.frombuffer(row["frames"], np.uint8).reshape(row["shape"])
    clip = None if row["clip_frames"] is None else np.frombuffer(row["clip_frames"], np.uint8).reshape(row["clip_shape"])
    return {"key": row["key"], "modality": row["modality"], "caption": row["caption"], "sha256": row["sha256"],
            "frames": frames, "clip_frames": clip, "decode_error": row["decode_error"], "media": row["media"]}


def score_on_cpu(rows: list[dict], specs: list[ScorerSpec], options: ScoreSection, batch_size: int) -> list[dict]:
    """The CPU scorers (motion, quality, ...) run where the frames were decoded, in the CPU task, so a model actor
    (one per GPU) does model work only: their columns travel as JSON in `cpu_scores`."""
    scorers = ScorerSet(specs, options)
    scorers.setup()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        for row, scored in zip(chunk, scorers.score_batch([_as_sample(r) for r in chunk]), strict=True):
            scored.pop(SCORE_ERROR, None)
            row["cpu_scores"] = json.dumps(scored, default=lambda value: value.tolist())  # numpy scalars/arrays
    return rows


def leave_behind(rows: list[dict], model_scorers: bool) -> list[dict]:
    """Drop what no model scorer reads before the rows travel to the actors: the encoded file, and the capped
    frames when CLIP has its own (or there is no model scorer)."""
    for row in rows:
        row["media"] = None
        if not model_scorers or row["clip_frames"] is not None:
            row["frames"] = row["shape"] = None
    return rows


class ScoreModel:
    """The actor: builds the model scorers (loads weights) once, then scores batches, merging the columns the
    CPU tasks already computed."""

    def __init__(self, specs: list[ScorerSpec], options: ScoreSection):
        self.scorers = ScorerSet(specs, options) if specs else None
        if self.scorers is not None:
            self.scorers.setup()

    def __call__(self, rows: list[dict]) -> list[dict]:
        if self.scorers is not None:
            scored = self.scorers.score_batch([_as_sample(row) for row in rows])
        else:
            scored = [{"key": row["key"]} for row in rows]
        for out, row in zip(scored, rows, strict=True):
            out.update(json.loads(row["cpu_scores"]) if row.get("cpu_scores") else {})
            summarise_errors(out)
            out["unit"] = row["unit"]
            emb = out.pop(CLIP_EMBEDDING, None)
            out[CLIP_EMBEDDING] = None if emb is None else np.asarray(emb, np.float32).tobytes()
        return scored
