"""The metric stage: one evaluation metric over dataset folders' clips, under the stage contract (curate.stage).

Every clip the metric reads gets one row in FOLDER/eval/<metric>/NNNNN.parquet (shard for shard, in manifest
order, each table published whole; columns in schemas/eval_clips.yaml): its measurement, or `error` saying why it
has none (it does not decode, is too short, has no caption, or the metric failed on it) - one bad clip never costs
the others. The value is summed up from those rows into FOLDER/eval/<metric>.json with its protocol and the run's
provenance. A shard is measured once: a rerun, also after a kill, measures only shards without a table, and a run
with nothing left to measure loads no model. The engine refuses a rerun whose settings (frames, model and its
weights' hash, device...) or input (the folders' manifests) changed, naming what, unless forced.

`max_clips` picks the clips the value covers - the first N decodable ones in manifest order - and is not a
setting of the rows: changing it sums the stored rows up again (measuring further shards when more are needed),
as select's thresholds do with scores. A metric over two folders (FVD) keeps the second folder's rows apart, in a
folder named by that folder's content and the settings, which every later run against it reuses.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from curate import engine, provenance, schema, storage
from curate.eval.clips import Clip, iter_clips
from curate.shards import reader
from curate.shards.folder import DatasetFolder
from curate.stage import Resources, Stage
from curate.weightfile import curate_cache_dir

SCHEMA = "eval_clips"
BASE_COLUMNS = ("key", "error", "frames")


class Selection(NamedTuple):
    """The clips one folder contributes to the value: measured rows and the failure rows met before the N-th."""
    rows: list[dict]
    skipped: list[dict]

    def counts(self) -> dict:
        return {"clips": len(self.rows), "skipped": len(self.skipped),
                "skipped_examples": [{"key": r["key"], "error": r["error"]} for r in self.skipped[:5]]}


class ClipMetric:
    """What a metric measures per clip and how it sums up; subclasses are dataclasses of plain fields: a metric
    travels to the Ray workers, where measurer() builds the model once per worker process."""

    name: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]  # its per-clip columns (schemas/eval_clips.yaml)
    exact: ClassVar[bool] = False  # a clip shorter than frames x stride is an error (else: the frames it has)
    videos_only: ClassVar[bool] = True  # images are not clips (CLIPSIM reads them as one-frame clips)
    frames: int
    stride: int = 1
    batch_size: int = 1  # clips per measure() call

    @property
    def gpus(self) -> float:
        """GPUs per shard task (given when the cluster has GPUs): model metrics that run on cuda take one."""
        return 0.0

    def settings(self) -> dict:
        """What decides a clip's row: a rerun with other settings is refused unless forced."""
        raise NotImplementedError

    def check(self) -> None:
        """Weights resolved and checked (their hashes kept for settings()), before any write."""

    def record(self) -> dict:
        """Provenance beyond the settings (model files...)."""
        return {}

    def measurer(self):
        """A callable: list of decoded clips -> one dict of `columns` per clip (built once per worker)."""
        raise NotImplementedError

    def summarise(self, sides: dict[str, Selection]) -> dict:
        """The result (value, counts, protocol) from the selected rows of each folder."""
        raise NotImplementedError


_LOADED: dict[str, object] = {}  # one measurer per worker process: the model loads once, not once per shard


def _measurer(metric: ClipMetric):
    key = repr(metric)  # a dataclass: every field (weights path, device...) shows
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = metric.measurer()
    return _LOADED[key]


def _measure(measure, clips: list[Clip]) -> list[dict]:
    """Rows of a batch; when the batch fails, clip by clip, so only the clip that fails gets the error."""
    try:
        return measure(clips)
    except Exception:  # noqa: BLE001 - retried clip by clip below
        if len(clips) == 1:
            raise
    out = []
    for clip in clips:
        try:
            out += measure([clip])
        except Exception as error:  # noqa: BLE001 - that clip's failure row
            out.append({"error": f"{type(error).__name__}: {error}"})
    return out


def measure_shard(root: str, sid: str, metric: ClipMetric, measure, workers: int = 2,
                  decode_timeout: float = 60.0) -> list[dict]:
    """One row per clip of shard `sid` the metric reads, in manifest order: its columns or its error."""
    rows: list[dict] = []
    batch: list[tuple[int, Clip]] = []

    def flush():
        clips = [clip for _, clip in batch]
        try:
            measured = _measure(measure, clips)
        except Exception as error:  # noqa: BLE001 - a single clip's failure is its row
            measured = [{"error": f"{type(error).__name__}: {error}"}]
        for (index, clip), values in zip(batch, measured, strict=True):
            rows[index].update(values, frames=len(clip.frames))
        batch.clear()

    for clip in iter_clips(root, frames=metric.frames, stride=metric.stride, exact=metric.exact,
                           videos_only=metric.videos_only, workers=workers, decode_timeout=decode_timeout,
                           shards=[sid]):
        rows.append({"key": clip.key, "error": clip.error})
        if clip.frames is not None:
            batch.append((len(rows) - 1, clip))
            if len(batch) >= metric.batch_size:
                flush()
    if batch:
        flush()
    return rows


def manifests_fingerprint(root: str) -> str:
    """sha256 over a folder's shard manifests: changes whenever a shard is added, removed or rewritten."""
    return provenance.files_fingerprint(root, storage.glob(DatasetFolder(root).manifest_glob()))


def reference_dir(root: str, metric: ClipMetric) -> str:
    """Where a second folder's rows go: ROOT/eval/<metric>_reference/<content and settings key>/, or the user cache
    when the folder is read-only (a shared copy of a benchmark)."""
    text = json.dumps({"manifests": manifests_fingerprint(root), "settings": metric.settings()}, sort_keys=True,
                      default=str)
    key = hashlib.sha256(text.encode()).hexdigest()[:32]
    local = not storage.is_remote(root)
    eval_dir = storage.join(root, "eval")
    writable = not local or os.access(eval_dir if os.path.isdir(eval_dir) else root, os.W_OK)
    base = eval_dir if writable else str(curate_cache_dir())
    return storage.join(base, f"{metric.name}_reference", key)


@dataclass
class MetricStage(Stage):
    """`metric` over `folders` ({side name: dataset folder}, the first one measured, the others references) ->
    FIRST/eval/<metric>/ per-clip tables and the result JSON `out` (default FIRST/eval/<metric>.json)."""

    metric: ClipMetric
    folders: dict[str, str]
    max_clips: int | None = None
    out: str | None = None
    workers: int = 2  # isolated decoder children per shard task
    decode_timeout: float = 60.0

    def __post_init__(self):
        self.folders = {side: storage.absolute(root) for side, root in self.folders.items()}
        self.name = self.metric.name
        self.main = next(iter(self.folders))
        self.out = self.out or storage.join(self.folders[self.main], "eval", f"{self.metric.name}.json")
        self.outputs = (self.out,)
        self.inputs = tuple(self.folders.values())
        self.resources = Resources(cpus=1, gpus=self.metric.gpus)
        self.dirs: dict[str, str] = {self.main: storage.join(self.folders[self.main], "eval", self.metric.name)}
        self.planned = 0
        self.short = False  # the last run's selection fell short of max_clips with shards left to measure

    @property
    def provenance_path(self) -> str:
        return storage.join(self.dirs[self.main], "_provenance.json")

    def config(self) -> dict:
        return dict(self.metric.settings(), metric=self.metric.name)

    def fingerprint(self) -> dict:
        return {side: manifests_fingerprint(root) for side, root in self.folders.items()}

    def check(self) -> None:
        for root in self.folders.values():
            if not DatasetFolder(root).complete_shards():
                raise FileNotFoundError(f"{root} is not a dataset folder with complete shards (no shards/*.parquet)")
        self.metric.check()
        for side, root in self.folders.items():
            if side != self.main:
                self.dirs[side] = reference_dir(root, self.metric)
        self.outputs = (self.out, *self.dirs.values())

    def reset(self) -> None:
        storage.remove(self.dirs[self.main], recursive=True)
        storage.remove(self.out)

    def record(self) -> dict:
        return {"folders": self.folders, "rows": self.dirs, "result": self.out, **self.metric.record()}

    def prepare(self) -> None:
        for side, folder in self.dirs.items():
            if side != self.main and not storage.exists(storage.join(folder, "_about.json")):
                storage.makedirs(folder)
                storage.write_json(storage.join(folder, "_about.json"), {
                    "folder": self.folders[side], "manifests": manifests_fingerprint(self.folders[side]),
                    "metric": self.metric.name, "settings": self.metric.settings()})

    def describe(self) -> list[str]:
        return super().describe() + [f"  {self.metric.name} of {self.metric.frames} frames per clip, first "
                                     f"{self.max_clips or 'all'} clips -> {self.out}"]

    def _table(self, side: str, sid: str) -> str:
        return storage.join(self.dirs[side], f"{sid}.parquet")

    def todo(self) -> list[tuple[str, str]]:
        """Shards without a table, in order, until the tables (measured) and the rest (by their rows) promise
        max_clips clips per folder."""
        units = []
        for side, root in self.folders.items():
            written = set(storage.glob(storage.join(self.dirs[side], "*.parquet")))
            promised = 0
            for sid in DatasetFolder(root).complete_shards():
                if self.max_clips is not None and promised >= self.max_clips:
                    break
                if self._table(side, sid) in written:
                    promised += sum(e is None for e in storage.read_table(
                        self._table(side, sid), columns=["error"]).column("error").to_pylist())
                else:
                    units.append((side, sid))
                    promised += sum(1 for r in reader.manifest_rows(root, sid, [])
                                    if not self.metric.videos_only or (r.get("modality") or "video") == "video")
        self.planned = len(units)
        return units

    def process(self, unit: tuple[str, str]) -> dict:
        side, sid = unit
        rows = measure_shard(self.folders[side], sid, self.metric, _measurer(self.metric), self.workers,
                             self.decode_timeout)
        table = schema.table(SCHEMA, rows).select([*BASE_COLUMNS, *self.metric.columns])
        storage.write_table(table, self._table(side, sid))
        return {"side": side, "shard": sid, "clips": len(rows), "failed": sum(r["error"] is not None for r in rows)}

    def select(self, side: str) -> Selection:
        """The first max_clips measured rows of a folder's tables in manifest order, and the failures before them."""
        rows, skipped = [], []
        for sid in DatasetFolder(self.folders[side]).complete_shards():
            if not storage.exists(self._table(side, sid)):
                break  # beyond the measured prefix
            for row in storage.read_table(self._table(side, sid)).to_pylist():
                if self.max_clips is not None and len(rows) >= self.max_clips:
                    return Selection(rows, skipped)
                (rows if row["error"] is None else skipped).append(row)
        return Selection(rows, skipped)

    def finish(self, done: list, failures: list) -> dict:
        run = {"measured_shards": len(done), "resumed": not self.planned, "failed_clips_this_run":
               sum(d["failed"] for d in done), "failed_shards": [{"shard": f"{s}/{u}", "error": e}
                                                                  for (s, u), e in failures]}
        self.short = False
        if failures:
            return dict(run, metric=self.metric.name, value=None)
        sides = {side: self.select(side) for side in self.folders}
        more = any(self.max_clips is not None and len(sides[side].rows) < self.max_clips and any(
            not storage.exists(self._table(side, sid)) for sid in DatasetFolder(root).complete_shards())
            for side, root in self.folders.items())
        if more:
            self.short = True
            return dict(run, metric=self.metric.name, value=None)
        result = self.metric.summarise(sides)
        result["protocol"]["max_clips"] = self.max_clips
        record = {k: v for k, v in (self.read_provenance() or {}).items() if k != "complete"}
        result = dict(result, provenance=record)
        storage.makedirs(storage.parent(self.out))
        storage.write_json(self.out, result)
        return dict(result, **run)


def run_metric(stage: MetricStage, *, force: bool = False, address: str | None = None) -> dict:
    """Run the stage; again while failures among the first shards left the value short of max_clips clips
    and shards remain (each run measures only shards without a table)."""
    summary = engine.run_stage(stage, force=force, address=address)
    while stage.short and stage.planned and not summary["failed_shards"]:
        summary = engine.run_stage(stage, address=address)
    return summary


def run_device(device: str | None, address: str | None) -> str:
    """The device a model metric runs on: the one asked for, else cuda when the cluster has GPUs (one per shard
    task), else cpu. Decided on the driver, so the settings (and FVD's protocol) name it before any work."""
    if device:
        from curate.device import resolve

        return str(resolve(device).type)
    return "cuda" if engine.cluster_gpus(address) >= 1 else "cpu"
