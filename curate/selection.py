"""The select stage: a checked SQL predicate over manifest + scores -> a training-ready dataset folder
(media re-encoded to the training geometry, WebDataset shards + manifest + provenance). Either folder may be a
local path or an object-store URL (curate.storage); re-encoding works in a local scratch folder."""

from __future__ import annotations

import os
from dataclasses import dataclass

from curate import engine, provenance, storage
from curate.config import ConfigError, SelectSection
from curate.media.digest import sha256_file
from curate.media.probe import ProbeError, ProbePool, probe_image, shared_pool
from curate.media.transcode import TranscodeError, image_resize_center_crop, resize_center_crop
from curate.predicate import check_column, check_predicate
from curate.shards import reader
from curate.shards.folder import DatasetFolder
from curate.shards.writer import ShardWriter, build_shard
from curate.stage import FolderToFolderStage, Resources
from curate.stats.query import caption_runs, connect, run


def selection_sql(con, sel: SelectSection) -> tuple[str, str, list]:
    """(checked predicate, SELECT of the kept keys, its parameters): every name in the SQL is a known
    column and every user value is a bound parameter."""
    columns = run(con, "SELECT * FROM samples LIMIT 0").column_names
    where = check_predicate(sel.where, columns)
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


def chosen_captions(con, root: str, run_name: str, chosen: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    """shard -> key -> caption of run `run_name` for the chosen keys that have one; an unknown run is a ConfigError
    naming the runs there are."""
    runs = caption_runs(root)
    if run_name not in runs:
        raise ConfigError(f"--caption {run_name!r}: no such caption run in {root}; "
                          f"choose from {', '.join(runs) or '(none: run curate caption first)'}")
    column = f"caption_{run_name}"
    wanted = {key: shard for shard, keys in chosen.items() for key in keys}
    out: dict[str, dict[str, str]] = {}
    for key, text in con.execute(f'SELECT key, "{column}" FROM samples WHERE "{column}" IS NOT NULL').fetchall():
        if key in wanted:
            out.setdefault(wanted[key], {})[key] = text
    return out


def _encode(row: dict, src: str, work: str, sel: SelectSection, probes: ProbePool):
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


def select_shard(root: str, out: str, sid: str, keys: list[str], sel: SelectSection,
                 captions: dict[str, str] | None = None) -> dict:
    """Re-encode the kept samples of one input shard into output shard `sid`; `captions` (key -> text) replace
    the source captions they cover (KEY.txt and the manifest's caption)."""
    def body(work: str, writer: ShardWriter) -> None:
        probes = shared_pool(1)
        for sample in reader.samples(root, sid, keys=keys):
            if sample.key in (captions or {}):
                sample.row["caption"] = captions[sample.key]
            if sample.media is None:
                writer.add(dict(sample.row, status="failed_to_decode", error_reason="missing_media",
                                error_message="selected sample has no media in its source shard"))
                continue
            src = os.path.join(work, f"{sample.key}.{sample.extension}")
            with open(src, "wb") as f:
                f.write(sample.media)
            writer.add(*_encode(sample.row, src, work, sel, probes))

    return build_shard(out, sid, body)


@dataclass
class SelectStage(FolderToFolderStage):
    """A checked SQL predicate over manifest + scores -> a training dataset folder `out`, shard for shard."""

    root: str
    out: str
    section: SelectSection

    name = "select"
    resources = Resources(cpus=1)

    def __post_init__(self):
        super().__post_init__()
        self.chosen: dict[str, list[str]] = {}
        self.captions: dict[str, dict[str, str]] = {}  # shard -> key -> the chosen caption run's text
        self.sql: tuple = ()

    def check(self) -> None:
        """The predicate and ranking column are checked against the `samples` columns before anything is written."""
        con = connect(self.root)
        where, sql, params = selection_sql(con, self.section)
        self.sql = (where, sql, params)
        self.chosen = {}
        for r in run(con, sql, params).to_pylist():
            self.chosen.setdefault(r["shard"], []).append(r["key"])
        caption = self.section.caption
        self.captions = chosen_captions(con, self.root, caption, self.chosen) if caption else {}
        con.close()

    def fingerprint(self) -> str:
        # What decides the selection: the manifests and score tables (small), not the media tars (terabytes).
        tables = (storage.glob(DatasetFolder(self.root).manifest_glob())
                  + storage.glob(storage.join(self.root, "scores", "*", "*.parquet")))
        if self.section.caption:
            tables += storage.glob(storage.join(self.root, "captions", self.section.caption, "*.parquet"))
        return provenance.files_fingerprint(self.root, tables)

    def reset(self) -> None:
        storage.remove(self.out, recursive=True)

    def record(self) -> dict:
        scores = {}
        for path in storage.glob(storage.join(self.root, "scores", "*", "_provenance.json")):
            scores[storage.basename(storage.parent(path))] = storage.read_json(path)
        where, sql, params = self.sql
        caption = None
        if self.section.caption:
            caption = {"run": self.section.caption, "replaced": sum(len(c) for c in self.captions.values()),
                       "provenance": storage.read_json(storage.join(self.root, "captions", self.section.caption,
                                                                    "_provenance.json"))}
        return {"source_dataset": self.root, "predicate": where, "sql": sql, "params": params, "scorers": scores,
                "kept": sum(len(k) for k in self.chosen.values()), "caption": caption}

    def describe(self) -> list[str]:
        s = self.section
        return [f"{self.name}: WHERE {s.where}" + (f", top {s.top} by {s.by}" if s.top else "")
                + (f", quotas {s.quotas}" if s.quotas else ""),
                f"  videos {s.video_size[0]}x{s.video_size[1]}" + (f" (<= {s.max_frames} frames)" if s.max_frames else "")
                + f", images {s.image_size[0]}x{s.image_size[1]} -> {self.out}; {self.resources.cpus:g} CPU per shard task"]

    def todo(self) -> list[str]:
        done = set(self.folder.complete_shards())
        return [sid for sid in sorted(self.chosen) if sid not in done]

    def process(self, unit: str) -> dict:
        return select_shard(self.root, self.out, unit, self.chosen[unit], self.section, self.captions.get(unit))

    def finish(self, done: list, failures: list) -> dict:
        con = connect(self.root)
        (total,) = con.execute("SELECT count(*) FROM samples").fetchone()
        (passing,) = con.execute("SELECT count(*) FROM samples WHERE status = 'success'").fetchone()
        kept = sum(len(k) for k in self.chosen.values())
        return {"kept": kept, "dropped": passing - kept, "not_success": total - passing, "shards": len(self.chosen),
                "out": self.out, "failed_shards": [{"shard": u, "error": e} for u, e in failures]}


def select(root: str, out: str, section: SelectSection, force: bool = False, address: str | None = None) -> dict:
    """Write the samples that pass `section` to the dataset folder `out`; resumable per shard. `kept` equals
    the count of the same predicate in DuckDB (`curate query`)."""
    return engine.run_stage(SelectStage(root, out, section), force=force, address=address)
