"""The score stage: shards -> decoded samples (CPU) -> ScorerSet in actor pools -> scores/<run>/NNNNN.parquet."""

from __future__ import annotations

import json
import os
import shutil
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate import engine, provenance, schema
from curate.scoring import dedup
from curate.scoring.clip_score import CLIP_EMBEDDING
from curate.scoring.embeddings import align_embeddings, read_embeddings, write_embeddings
from curate.scoring.frames import DECODE_MAX_SIDE, DEFAULT_K, DEFAULT_POSITIONS, FrameDecodeError, IsolatedDecoder
from curate.scoring.scorer_set import SCORER_NAMES, ScorerSet
from curate.shards.atomic import publish, write_json
from curate.shards.folder import DatasetFolder

ALL_SCORERS = SCORER_NAMES + (dedup.NAME,)
_MEDIA_EXT = ("mp4", "webm", "jpg", "png", "webp", "gif", "bmp")


def run_name(scorers: list[str]) -> str:
    """Each combination of per-batch scorers writes its own folder, so runs with other scorers add columns."""
    return "+".join(sorted(s for s in scorers if s != dedup.NAME))


def expand_shard(item: dict, root: str, k: int, positions: str, decode_timeout: float) -> list[dict]:
    """Every success row of one shard with its frames, decoded in an isolated child (a crash there is one
    sample's decode_error). Frames travel as raw bytes + shape."""
    folder = DatasetFolder(root)
    sid = item["shard"]
    manifest = pq.read_table(folder.manifest(sid), columns=["key", "modality", "caption", "sha256", "status"])
    rows = {r["key"]: r for r in manifest.to_pylist() if r["status"] == "success"}
    out = []
    with tarfile.open(folder.tar(sid)) as tar, IsolatedDecoder(decode_timeout) as decoder:
        for member in tar:
            key, _, ext = member.name.partition(".")
            if key not in rows or ext not in _MEDIA_EXT:
                continue
            meta = rows.pop(key)
            media = tar.extractfile(member).read()
            try:
                frames = np.ascontiguousarray(decoder.decode(media, meta["modality"], k, positions, DECODE_MAX_SIDE), np.uint8)
                blob, shape, error = frames.tobytes(), list(frames.shape), None
            except FrameDecodeError as exc:
                blob, shape, error = None, None, str(exc)
            out.append({"shard": sid, "key": key, "modality": meta["modality"], "caption": meta["caption"],
                        "sha256": meta["sha256"], "frames": blob, "shape": shape, "decode_error": error})
    for key, meta in rows.items():  # listed as success but absent from the tar: scored as an error, not lost
        out.append({"shard": sid, "key": key, "modality": meta["modality"], "caption": meta["caption"],
                    "sha256": meta["sha256"], "frames": None, "shape": None, "decode_error": "media missing from tar"})
    return out


class ScoreModel:
    """The actor: builds the ScorerSet (loads weights) once, then scores batches."""

    def __init__(self, scorer_kwargs: dict):
        self.scorers = ScorerSet(**scorer_kwargs)
        self.scorers.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        samples = []
        for row in batch.to_pylist():
            frames = None
            if row["frames"] is not None:
                frames = np.frombuffer(row["frames"], np.uint8).reshape(row["shape"])
            samples.append({"key": row["key"], "modality": row["modality"], "caption": row["caption"],
                            "sha256": row["sha256"], "frames": frames, "decode_error": row["decode_error"]})
        scored = self.scorers.score_batch(samples)
        for row, source in zip(scored, batch.column("shard").to_pylist()):
            row["shard"] = source
            emb = row.pop(CLIP_EMBEDDING, None)
            row[CLIP_EMBEDDING] = None if emb is None else np.asarray(emb, np.float32).tobytes()
        return pa.Table.from_pylist(scored)


def _score_schema(columns: list[str]) -> pa.Schema:
    full = schema.load("scores")
    return pa.schema([full.field(c) for c in columns])


def _write_shard(root: str, run: str, columns: list[str], clip_model: str | None, sid: str, rows: list[dict]) -> None:
    rows.sort(key=lambda r: r["key"])
    out_dir = os.path.join(root, "scores", run)
    if clip_model is not None:
        kept = [(r["key"], np.frombuffer(r[CLIP_EMBEDDING], np.float32)) for r in rows if r.get(CLIP_EMBEDDING)]
        if kept:
            write_embeddings(os.path.join(root, "embeddings", f"{sid}.parquet"), [k for k, _ in kept],
                             np.stack([e for _, e in kept]), clip_model)
    table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows], schema=_score_schema(columns))
    tmp = os.path.join(out_dir, f".{sid}.parquet.tmp")
    pq.write_table(table, tmp)
    publish(tmp, os.path.join(out_dir, f"{sid}.parquet"))


def _dedup(root: str, threshold: float) -> int:
    """Exact (sha256) and near (stored CLIP embeddings) duplicate flags over the whole dataset, in
    manifest order, so the earliest copy is the one kept."""
    import duckdb

    folder = DatasetFolder(root)
    keys, digests = [], []
    for key, digest in duckdb.connect().execute(
            "SELECT key, sha256 FROM read_parquet(?) WHERE status = 'success' ORDER BY shard, row",
            [folder.manifest_glob()]).fetchall():
        keys.append(key)
        digests.append(digest)
    exact = dedup.exact_duplicate_of(keys, digests)
    paths = sorted(p for p in (os.path.join(root, "embeddings", n) for n in os.listdir(os.path.join(root, "embeddings")))
                   if p.endswith(".parquet")) if os.path.isdir(os.path.join(root, "embeddings")) else []
    near: list = [None] * len(keys)
    if paths:
        stored_keys, stored, _ = read_embeddings(paths)
        near = dedup.near_duplicate_of(keys, align_embeddings(keys, stored_keys, stored), threshold)
    out_dir = os.path.join(root, "scores", dedup.NAME)
    os.makedirs(out_dir, exist_ok=True)
    table = pa.table({"key": keys, dedup.EXACT_DUPLICATE_OF: pa.array(exact, pa.string()),
                      dedup.NEAR_DUPLICATE_OF: pa.array(near, pa.string())})
    tmp = os.path.join(out_dir, ".all.parquet.tmp")
    pq.write_table(table, tmp)
    publish(tmp, os.path.join(out_dir, "all.parquet"))
    return sum(e is not None for e in exact) + sum(n is not None for n in near)


def score(root: str, scorers: list[str], *, clip_model: str | None = None, aesthetic_model: str | None = None,
          batch_size: int = 32, actors: int | None = None, frames: int = DEFAULT_K,
          positions: str = DEFAULT_POSITIONS, dedup_threshold: float = dedup.DEFAULT_THRESHOLD,
          decode_timeout: float = 60.0, force: bool = False, address: str | None = None) -> dict:
    """Score every success sample of the dataset folder; resumable per shard; refuses a changed config."""
    root = os.path.abspath(root)
    unknown = [s for s in scorers if s not in ALL_SCORERS]
    if unknown or not scorers:
        raise ValueError(f"unknown scorers {unknown}; choose from {', '.join(ALL_SCORERS)}")
    folder = DatasetFolder(root)
    shards = folder.complete_shards()
    if not shards:
        raise FileNotFoundError(f"{root} has no complete shards to score")
    batch_scorers = [s for s in scorers if s in SCORER_NAMES]
    summary = {"scored_shards": 0, "skipped_shards": 0, "duplicates_flagged": None}
    if batch_scorers:
        run = run_name(batch_scorers)
        kwargs = {"names": batch_scorers, "keep_embedding": True}
        if clip_model:
            kwargs.update(clip_model=clip_model, aesthetic_clip_model=clip_model)
        if aesthetic_model:
            kwargs["aesthetic_model"] = aesthetic_model
        config = json.loads(json.dumps({"scorers": batch_scorers, "scorer_kwargs": kwargs, "frames": frames,
                                        "positions": positions}, sort_keys=True))
        out_dir = os.path.join(root, "scores", run)
        prov_path = os.path.join(out_dir, "_provenance.json")
        existing = json.load(open(prov_path)) if os.path.exists(prov_path) else None
        fingerprint = "|".join(shards)
        if existing and force:
            shutil.rmtree(out_dir)
            existing = None
        provenance.check_resume(existing, config, fingerprint)
        probe = ScorerSet(**kwargs)
        probe.check_weights()  # resolves (not loads) every weights file: missing ones fail before Ray work
        os.makedirs(out_dir, exist_ok=True)
        columns = [c for c in probe.columns if c != CLIP_EMBEDDING]
        write_json(prov_path, provenance.record("score", config, fingerprint, run=run, columns=columns))
        done = {n[: -len(".parquet")] for n in os.listdir(out_dir) if n.endswith(".parquet")}
        todo = [s for s in shards if s not in done]
        expected = {s: int(pq.read_table(folder.manifest(s), columns=["status"]).column("status")
                           .to_pylist().count("success")) for s in todo}
        gpus = engine.cluster_gpus(address) if probe.needs_gpu else 0
        pool = actors or (int(gpus) if gpus >= 1 else 1)
        clip_spec = kwargs.get("clip_model") if "clip" in batch_scorers else None
        if "clip" in batch_scorers and clip_spec is None:
            from curate.scoring.weights import DEFAULT_CLIP

            clip_spec = DEFAULT_CLIP
        engine.map_shards(
            todo, expand_shard, {"root": root, "k": frames, "positions": positions, "decode_timeout": decode_timeout},
            ScoreModel, {"scorer_kwargs": kwargs}, expected,
            lambda sid, rows: _write_shard(root, run, columns, clip_spec, sid, rows),
            batch_size=batch_size, actors=pool, gpus_per_actor=1 if gpus >= 1 else 0, desc=f"score {run}",
            address=address)
        write_json(prov_path, provenance.record("score", config, fingerprint, run=run, columns=columns,
                                                scorers=probe.provenance(), complete=True))
        summary.update(scored_shards=len(todo), skipped_shards=len(shards) - len(todo), run=run)
    if dedup.NAME in scorers:
        summary["duplicates_flagged"] = _dedup(root, dedup_threshold)
    return summary
