"""The score stage: shards -> decoded samples (CPU) -> scorers in an actor pool -> scores/<scorer>/.

Each scorer writes its own folder (scores/clip/, scores/motion/, ...) with one table per shard and its own
_provenance.json, so a column has exactly one home. A shard's score table records the digest of what it
scored (the shard's success keys and media hashes): when that changes — e.g. retry-failed turned failures
into successes — the next run scores the shard again. Scorers asked for together share one decode (and
one CLIP pass for clip + aesthetic). The dataset folder may be a local path or an object-store URL (curate.storage):
tars are read by ranged reads, tables are published whole.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curate import schema, storage
from curate.scoring.clip_score import CLIP_EMBEDDING
from curate.scoring.clip_spec import DEFAULT_CLIP
from curate.scoring.embeddings import write_embeddings
from curate.scoring.frames import DECODE_MAX_SIDE, FrameDecodeError, IsolatedDecoder
from curate.scoring.options import ScoreSection
from curate.scoring.scorer_set import MODEL_SCORERS, SCORE_ERROR, SCORER_NAMES, ScorerSet, summarise_errors
from curate.shards import reader
from curate.shards.derived import drop_temporaries, shard_content, stale_shards, write_table
from curate.shards.folder import DatasetFolder
from curate.stage import Resources, Stage



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


def score_on_cpu(rows: list[dict], names: list[str], batch_size: int) -> list[dict]:
    """The weight-free scorers (motion, quality, ...) run where the frames were decoded, in the CPU task, so a
    model actor (one per GPU) does model work only: their columns travel as JSON in `cpu_scores`, and what no
    model scorer reads is dropped from the row (the encoded file; the capped frames when CLIP has its own)."""
    scorers = ScorerSet(names)
    scorers.setup()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        for row, scored in zip(chunk, scorers.score_batch([_as_sample(r) for r in chunk]), strict=True):
            scored.pop(SCORE_ERROR, None)
            row["cpu_scores"] = json.dumps(scored, default=lambda value: value.tolist())  # numpy scalars/arrays
    return rows


def _leave_behind(rows: list[dict], model_scorers: bool) -> list[dict]:
    for row in rows:
        row["media"] = None
        if not model_scorers or row["clip_frames"] is not None:
            row["frames"] = row["shape"] = None
    return rows


class ScoreModel:
    """The actor: builds the model scorers (loads weights) once, then scores batches, merging the columns the
    CPU tasks already computed."""

    def __init__(self, scorer_kwargs: dict):
        self.scorers = ScorerSet(**scorer_kwargs) if scorer_kwargs["names"] else None
        if self.scorers is not None:
            self.scorers.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
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
        return pa.Table.from_pylist(scored)


@dataclass
class ScoreStage(Stage):
    """Per-batch scorers (clip, aesthetic, motion, quality) over every success sample of a dataset folder."""

    root: str
    section: ScoreSection

    name = "score"

    def __post_init__(self):
        self.root = storage.absolute(self.root)
        self.folder = DatasetFolder(self.root)
        if not any(s in SCORER_NAMES for s in self.section.scorers):
            raise ValueError(f"no per-batch scorer among {self.section.scorers}; choose from {', '.join(SCORER_NAMES)}")
        self.scorers = [s for s in SCORER_NAMES if s in self.section.scorers]
        self.inputs = (self.folder.shards_dir,)
        self.outputs = tuple(self.scorer_dir(s) for s in self.scorers)
        models = any(s in ("clip", "aesthetic") for s in self.scorers)
        self.resources = Resources(actors=self.section.actors or 0, gpus_per_actor=1.0 if models else 0.0,
                                   batch_size=self.section.batch_size)
        self.needs: dict[str, set[str]] = {}
        self.content: dict[str, tuple[str, int]] = {}
        self.clip_resize: tuple[int, str] | None = None
        self.with_media = False

    def describe(self) -> list[str]:
        s = self.section
        return super().describe() + [f"  {', '.join(self.scorers)} on {s.frames} frames ({s.positions}); decoding in "
                                     "CPU tasks, each scorer writes scores/<scorer>/"]

    def scorer_dir(self, scorer: str) -> str:
        return storage.join(self.root, "scores", scorer)

    @property
    def provenance_path(self) -> str:
        return storage.join(self.root, "scores", "_provenance.json")  # the last score run, as a whole

    def scorer_kwargs(self, names) -> dict:
        s = self.section
        kwargs = {"names": list(names), "keep_embedding": True}
        if s.clip_model:
            kwargs["clip_model"] = s.clip_model
        if s.aesthetic_model:
            kwargs["aesthetic_model"] = s.aesthetic_model
        if s.aesthetic_clip_model:
            kwargs["aesthetic_clip_model"] = s.aesthetic_clip_model
        if s.aesthetic_custom_clip:
            kwargs["aesthetic_custom_clip"] = True
        if s.trust_checkpoint:
            kwargs["trust_checkpoint"] = True
        return kwargs

    def scorer_config(self, scorer: str) -> dict:
        s = self.section
        config = {"frames": s.frames, "positions": s.positions}
        if scorer == "clip":
            config["clip_model"] = s.clip_model or DEFAULT_CLIP
        if scorer == "aesthetic":
            config.update(aesthetic_model=s.aesthetic_model, aesthetic_clip_model=s.aesthetic_clip_model or DEFAULT_CLIP,
                          aesthetic_custom_clip=s.aesthetic_custom_clip)
        return config

    def config(self) -> dict:
        return {"scorers": {s: self.scorer_config(s) for s in self.scorers}}

    def read_provenance(self) -> dict | None:
        """The settings each requested scorer's folder was built with (a scorer without a folder yet takes
        this run's), so the runner refuses a scorer whose settings changed, whatever else is asked."""
        stored = {}
        for scorer in self.scorers:
            path = storage.join(self.scorer_dir(scorer), "_provenance.json")
            if storage.exists(path):
                stored[scorer] = storage.read_json(path)["config"]
        if not stored:
            return None
        config = json.loads(json.dumps(self.config(), sort_keys=True, default=str))
        config["scorers"].update(stored)
        return {"config": config, "input_fingerprint": ""}

    def check(self) -> None:
        if not self.folder.complete_shards():
            raise FileNotFoundError(f"{self.root} has no complete shards to score")
        if self.scorers:
            scorers = ScorerSet(**self.scorer_kwargs(self.scorers))
            scorers.check_weights()
            self.clip_resize = scorers.clip_first_resize()
            self.with_media = scorers.needs_media

    def reset(self) -> None:
        for scorer in self.scorers:
            storage.remove(self.scorer_dir(scorer), recursive=True)
        if "clip" in self.scorers:
            storage.remove(storage.join(self.root, "embeddings"), recursive=True)

    def record(self) -> dict:
        return {"dataset": self.root, "scorers": self.scorers}

    def todo(self) -> list[str]:
        self.content = {sid: shard_content(self.folder.manifest(sid)) for sid in self.folder.complete_shards()}
        self.needs = {}
        drop_temporaries(storage.join(self.root, "embeddings"))
        for scorer in self.scorers:
            drop_temporaries(self.scorer_dir(scorer))
            for sid in stale_shards(self.scorer_dir(scorer), self.content):
                self.needs.setdefault(sid, set()).add(scorer)
        return sorted(self.needs)

    def expand(self, unit: str) -> list[dict]:
        s = self.section
        rows = expand_shard(self.root, unit, s.frames, s.positions, s.decode_timeout, self.clip_resize,
                            self.with_media)
        needed = self.needs.get(unit, set(self.scorers))
        cpu = [name for name in SCORER_NAMES if name in needed and name not in MODEL_SCORERS]
        if cpu:
            rows = score_on_cpu(rows, cpu, s.batch_size)
        return _leave_behind(rows, any(name in MODEL_SCORERS for name in self.scorers))

    def expected_rows(self, unit: str) -> int:
        return self.content[unit][1]

    def model(self):
        names = sorted(set().union(*self.needs.values())) if self.needs else self.scorers
        return ScoreModel, {"scorer_kwargs": self.scorer_kwargs([n for n in names if n in MODEL_SCORERS])}

    def write(self, unit: str, rows: list[dict]) -> None:
        rows.sort(key=lambda r: r["key"])
        digest = self.content[unit][0]
        full = schema.load("scores")
        for scorer in sorted(self.needs.get(unit, ())):
            columns = ["key"] + [c for c in _scorer_columns(scorer) if c in full.names]
            table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows],
                                         schema=pa.schema([full.field(c) for c in columns]))
            if scorer == "clip":  # the stored embedding serves dedup and retrieval
                kept = [(r["key"], np.frombuffer(r[CLIP_EMBEDDING], np.float32)) for r in rows if r.get(CLIP_EMBEDDING)]
                if kept:
                    write_embeddings(storage.join(self.root, "embeddings", f"{unit}.parquet"), [k for k, _ in kept],
                                     np.stack([e for _, e in kept]), self.section.clip_model or DEFAULT_CLIP)
            write_table(storage.join(self.scorer_dir(scorer), f"{unit}.parquet"), table, digest)

    def finish(self, done: list, failures: list) -> dict:
        run = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        models = ScorerSet(**self.scorer_kwargs(self.scorers)).provenance() if self.scorers else {}
        for scorer in self.scorers:
            storage.write_json(storage.join(self.scorer_dir(scorer), "_provenance.json"), {
                "stage": "score", "scorer": scorer, "config": self.scorer_config(scorer), "run": run,
                "columns": [c for c in _scorer_columns(scorer) if c != CLIP_EMBEDDING], "model": models.get(scorer),
                "shards_scored_this_run": sorted(s for s, names in self.needs.items() if scorer in names)})
        return {"scored_shards": len(self.needs), "skipped_shards": len(self.content) - len(self.needs),
                "scorers": self.scorers, "failed_shards": []}


def _scorer_columns(scorer: str) -> tuple[str, ...]:
    """The score columns one scorer writes (its error column included), from the scorer classes."""
    from curate.scoring import aesthetic_score, clip_score, codec_motion, motion_score, ocr_score, technical_quality

    return {clip_score.NAME: (clip_score.CLIP_SCORE, clip_score.CLIP_MODEL, clip_score.CLIP_SCORE_ERROR, CLIP_EMBEDDING),
            aesthetic_score.NAME: (aesthetic_score.AESTHETIC_SCORE, aesthetic_score.AESTHETIC_SCORE_MIN,
                                   aesthetic_score.AESTHETIC_MODEL, aesthetic_score.AESTHETIC_SCORE_ERROR),
            motion_score.NAME: motion_score.MotionScorer.columns,
            codec_motion.NAME: codec_motion.CodecMotionScorer.columns,
            technical_quality.NAME: technical_quality.QualityScorer.columns,
            ocr_score.NAME: ocr_score.OcrScorer.columns}[scorer]
