"""The select stage: a checked SQL predicate over manifest + scores -> a training-ready dataset folder
(media re-encoded to the training geometry, WebDataset shards + manifest + provenance)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import tarfile
from dataclasses import asdict, dataclass, field

import pyarrow.parquet as pq

from curate import engine, provenance
from curate.media.digest import sha256_file
from curate.media.probe import ProbeError, ProbePool, probe_image, shared_pool
from curate.media.transcode import TranscodeError, image_resize_center_crop, resize_center_crop
from curate.predicate import check_column, check_predicate
from curate.shards.atomic import write_json
from curate.shards.folder import DatasetFolder
from curate.shards.writer import ShardWriter, build_shard
from curate.stats.query import connect, run


@dataclass
class Selection:
    where: str = "TRUE"
    top: float | None = None  # keep this fraction (0-1] of what passes `where`, best first by `by`
    by: str | None = None
    quotas: dict[str, int] = field(default_factory=dict)  # at most N per source, best first by `by`
    video_size: tuple[int, int] = (512, 320)  # width, height (the paper's base geometry)
    image_size: tuple[int, int] = (512, 512)  # the paper's spatial fine-tune geometry
    max_frames: int | None = None


def selection_sql(con, sel: Selection) -> tuple[str, str, list]:
    """(checked predicate, SELECT of the kept keys, its parameters): every name in the SQL is a known
    column and every user value is a bound parameter."""
    columns = run(con, "SELECT * FROM samples LIMIT 0").column_names
    where = check_predicate(sel.where, columns)
    if (sel.top is not None or sel.quotas) and not sel.by:
        raise ValueError("--top and quotas need --by COLUMN to rank samples")
    if sel.top is not None and not 0 < sel.top <= 1:
        raise ValueError("--top is a fraction in (0, 1]")
    rank = f'"{check_column(sel.by, columns)}"' if sel.by else "NULL"
    sql = f"SELECT key, shard, source, {rank} AS _by FROM samples WHERE status = 'success' AND ({where})"
    params: list = []
    if sel.quotas:
        cases = " ".join("WHEN ? THEN ?" for _ in sel.quotas)
        sql = (f"SELECT * FROM ({sql}) QUALIFY row_number() OVER (PARTITION BY source ORDER BY _by DESC NULLS LAST,"
               f" key) <= CASE source {cases} ELSE 9223372036854775807 END")
        for source, quota in sel.quotas.items():
            params += [source, int(quota)]
    if sel.top is not None:
        sql = (f"SELECT * FROM ({sql}) QUALIFY row_number() OVER (ORDER BY _by DESC NULLS LAST, key)"
               f" <= ceil(? * count(*) OVER ())")
        params.append(float(sel.top))
    return where, f"SELECT key, shard FROM ({sql}) ORDER BY shard, key", params


def _encode(row: dict, src: str, work: str, sel: Selection, probes: ProbePool):
    try:
        if row["modality"] == "video":
            dst = os.path.join(work, f"{row['key']}.out.mp4")
            resize_center_crop(src, dst, *sel.video_size, max_frames=sel.max_frames)
            info = probes.probe_video(dst)
            ext = "mp4"
        else:
            dst = os.path.join(work, f"{row['key']}.out.jpg")
            image_resize_center_crop(src, dst, *sel.image_size)
            info, ext = probe_image(dst), "jpg"
    except (TranscodeError, ProbeError, OSError) as exc:
        return dict(row, status="failed_to_decode", error_reason="reencode_error", error_message=str(exc)), None, None
    out = dict(row, width=info.width, height=info.height, fps=info.fps, duration=info.duration,
               num_frames=info.num_frames, codec=info.codec, size_bytes=os.path.getsize(dst), sha256=sha256_file(dst))
    return out, dst, ext


def select_shard(root: str, out: str, sid: str, keys: list[str], selection: dict) -> dict:
    """Re-encode the kept samples of one input shard into output shard `sid`."""
    sel = Selection(**{**selection, "video_size": tuple(selection["video_size"]),
                       "image_size": tuple(selection["image_size"])})
    src = DatasetFolder(root)
    wanted = set(keys)
    rows = {r["key"]: r for r in pq.read_table(src.manifest(sid)).to_pylist() if r["key"] in wanted}

    def body(work: str, writer: ShardWriter) -> None:
        probes = shared_pool(1)
        with tarfile.open(src.tar(sid)) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if key in rows and ext not in ("txt", "json"):
                    tar.extract(member, work, filter="data")
                    writer.add(*_encode(rows.pop(key), os.path.join(work, member.name), work, sel, probes))
        for row in rows.values():
            writer.add(dict(row, status="failed_to_decode", error_reason="missing_media",
                            error_message="selected sample has no media in its source shard"))

    return build_shard(out, sid, body)


def select(root: str, out: str, sel: Selection, force: bool = False, address: str | None = None) -> dict:
    """Write the samples that pass `sel` to the dataset folder `out`; resumable per shard. Returns counts;
    `kept` equals the count of the same predicate in DuckDB (`curate query`)."""
    root, out = os.path.abspath(root), os.path.abspath(out)
    con = connect(root)
    where, sql, params = selection_sql(con, sel)
    chosen = run(con, sql, params).to_pylist()
    by_shard: dict[str, list[str]] = {}
    for r in chosen:
        by_shard.setdefault(r["shard"], []).append(r["key"])
    config = json.loads(json.dumps(asdict(sel)))
    # What decides the selection: the manifests and score tables (small), not the media tars (terabytes).
    tables = glob.glob(DatasetFolder(root).manifest_glob()) + glob.glob(os.path.join(root, "scores", "*", "*.parquet"))
    fingerprint = provenance.files_fingerprint(root, tables)
    folder = DatasetFolder(out)
    existing = folder.read_provenance()
    if existing and force:
        shutil.rmtree(out)
        existing = None
    provenance.check_resume(existing, config, fingerprint)
    scores = {}
    for prov in sorted(os.listdir(os.path.join(root, "scores"))) if os.path.isdir(os.path.join(root, "scores")) else []:
        path = os.path.join(root, "scores", prov, "_provenance.json")
        if os.path.exists(path):
            scores[prov] = json.load(open(path)).get("scorers")
    os.makedirs(out, exist_ok=True)
    record = provenance.record("select", config, fingerprint, source_dataset=root, predicate=where, sql=sql,
                               params=params,
                               scorers=scores, kept=len(chosen))
    write_json(folder.provenance_path, record)
    done = set(folder.complete_shards())
    jobs = [(root, out, sid, keys, config) for sid, keys in sorted(by_shard.items()) if sid not in done]
    _, failures = engine.run_tasks(select_shard, jobs, desc="select", address=address)
    try:
        os.rmdir(os.path.join(out, "_work"))
    except OSError:
        pass
    (total,) = con.execute("SELECT count(*) FROM samples").fetchone()
    (passing,) = con.execute("SELECT count(*) FROM samples WHERE status = 'success'").fetchone()
    return {"kept": len(chosen), "dropped": passing - len(chosen), "not_success": total - passing,
            "shards": len(by_shard), "failed_shards": [{"shard": j[2], "error": e} for j, e in failures]}
