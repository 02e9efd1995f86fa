"""The download stage: plan the source once, then download the unfinished shards."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pyarrow.compute as pc

from curate import engine, provenance, storage
from curate.config import FLATTEN, option_help
from curate.download.http import FetchPolicy
from curate.download.plan import build_plan
from curate.download.shard import RETRYABLE_STATUSES, DownloadOptions, download_shard
from curate.shards.folder import DatasetFolder, shard_id
from curate.stage import Resources, Stage


def _placeholders(values) -> str:
    return ", ".join("?" for _ in values)


def _absolute(path: str) -> str:
    """Ray workers do not share the driver's working directory: local paths become absolute, URLs stay."""
    return path if storage.is_remote(path) else os.path.abspath(storage.local_path(path))


@dataclass
class DownloadSection:
    source: str = field(metadata=option_help("Source reader: webvid, laion-coco, laion-aesthetics, journeydb, msrvtt, "
                                       "folder, urls."))
    input: str = field(metadata=option_help("The source's metadata file or folder, in its distributed format."))
    source_options: dict = field(default_factory=dict, metadata=option_help(
        "Reader options: caption_column (laion-*/urls), images (journeydb), videos (msrvtt)."))
    shard_size: int = field(default=1000, metadata=option_help("Samples per shard.", min=1))
    limit: int | None = field(default=None, metadata=option_help("Only the first N input rows.", min=1))
    max_failure_rate: float = field(default=1.0, metadata=option_help(
        "Exit 1 when a larger fraction of rows failed to download or decode (the folder is kept).", min=0.0, max=1.0))
    options: DownloadOptions = field(default_factory=DownloadOptions, metadata=FLATTEN)

    @property
    def fetch(self) -> FetchPolicy:
        return self.options.fetch


@dataclass
class DownloadStage(Stage):
    """source metadata -> dataset folder `out` (shards/NNNNN.tar|.parquet|_stats.json, _plan/, provenance.json)."""

    out: str
    section: DownloadSection

    name = "download"
    resources = Resources(cpus=1)

    def __post_init__(self):
        self.out = _absolute(self.out)
        self.folder = DatasetFolder(self.out)
        self.inputs = (self.section.input,)
        self.outputs = (self.folder.shards_dir,)
        self.scratch_dirs = (self.folder.work_dir,)

    @property
    def provenance_path(self) -> str:
        return self.folder.provenance_path

    def config(self) -> dict:
        s = self.section
        return {"source": s.source, "source_options": s.source_options, "options": s.options.to_dict(),
                "shard_size": s.shard_size, "limit": s.limit}

    def fingerprint(self) -> str:
        return provenance.input_fingerprint(self.section.input)

    def check(self) -> None:
        from curate.sources import READERS, check_options

        if self.section.source not in READERS:
            raise ValueError(f"unknown source {self.section.source!r}; choose one of {', '.join(READERS)}")
        check_options(self.section.source, self.section.source_options)
        if not storage.exists(self.section.input):
            raise FileNotFoundError(f"input {self.section.input} does not exist")

    def reset(self) -> None:
        for path in (self.folder.shards_dir, storage.parent(self.folder.plan_path), self.folder.work_dir,
                     storage.join(self.out, "scores"), storage.join(self.out, "embeddings")):
            storage.remove(path, recursive=True)

    def record(self) -> dict:
        return {"input": _absolute(self.section.input)}

    def describe(self) -> list[str]:
        s, o = self.section, self.section.options
        return [f"{self.name}: {s.source} from {s.input}" + (f" (first {s.limit} rows)" if s.limit else ""),
                f"  shards of {s.shard_size} samples, images and videos in separate shards -> "
                f"{self.folder.shards_dir}/NNNNN.tar|.parquet",
                f"  {self.resources.cpus:g} CPU per shard task, {o.thread_count} video fetches each, img2dataset with "
                f"{o.image_thread_count} threads for images; private addresses "
                f"{'ALLOWED' if o.fetch.allow_private_addresses else 'refused'}; {o.fetch.retries} retries; "
                f"byte cap {o.fetch.max_bytes}; failure budget {s.max_failure_rate:.0%}"]

    def prepare(self) -> None:
        if not storage.exists(self.folder.plan_path):
            s = self.section
            build_plan(self.folder, s.source, s.input, s.source_options, s.shard_size, s.limit)

    def planned_shards(self) -> list[str]:
        # one column of the plan (pyarrow: a few ranged reads remotely, where DuckDB over fsspec took ~0.5 s)
        shard_no = storage.read_table(self.folder.plan_path, columns=["shard_no"]).column("shard_no")
        count = pc.max(shard_no).as_py() + 1 if len(shard_no) else 0
        return [shard_id(n) for n in range(int(count))]

    def todo(self) -> list[str]:
        done = set(self.folder.complete_shards())
        return [sid for sid in self.planned_shards() if sid not in done]

    def process(self, unit: str):
        return download_shard(self.out, int(unit), unit, self.section.options.to_dict())

    def failure_rate(self) -> float:
        """Fraction of rows that failed to download or decode (invalid inputs and duplicates are not counted)."""
        if not self.folder.complete_shards():
            return 0.0
        (rate,) = storage.duckdb_connect(self.out).execute(
            f"SELECT coalesce(avg(CASE WHEN status IN ({_placeholders(RETRYABLE_STATUSES)}) THEN 1.0 ELSE 0.0 END), 0) "
            "FROM read_parquet(?) WHERE status NOT IN ('invalid_input', 'duplicate')",
            [*RETRYABLE_STATUSES, self.folder.manifest_glob()]).fetchone()
        return round(float(rate), 4)

    def finish(self, done: list, failures: list) -> dict:
        failed = [{"shard": unit, "error": error} for unit, error in failures]
        rate = self.failure_rate()
        total = len(self.planned_shards())
        if rate > self.section.max_failure_rate:
            failed.append({"shard": "*", "error": f"failure rate {rate:.1%} exceeds the budget "
                                                  f"{self.section.max_failure_rate:.1%}"})
        return {"shards": total, "skipped": total - len(done) - len(failures), "ran": len(done),
                "failed_shards": failed, "failure_rate": rate}


def download(source: str, input_path: str, out: str, *, source_options: dict | None = None,
             options: DownloadOptions | None = None, shard_size: int = 1000, limit: int | None = None,
             max_failure_rate: float = 1.0, force: bool = False, ray_address: str | None = None) -> dict:
    """Build (or continue building) the dataset folder `out` from a source. Finished shards are skipped;
    a folder built from another input or config is refused unless `force` (which starts it over)."""
    section = DownloadSection(source=source, input=input_path, source_options=source_options or {},
                              shard_size=shard_size, limit=limit, max_failure_rate=max_failure_rate,
                              options=options or DownloadOptions())
    return engine.run_stage(DownloadStage(out, section), force=force, address=ray_address)
