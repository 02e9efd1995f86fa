"""A download job: plan once, run the unfinished shards on Ray, record provenance; resumable and retryable."""

from __future__ import annotations

import json
import os
import shutil

import duckdb

from curate import engine, provenance
from curate.download.plan import build_plan
from curate.download.shard import RETRYABLE_STATUSES, DownloadOptions, download_shard, retry_shard
from curate.shards.atomic import write_json
from curate.shards.folder import DatasetFolder, shard_id


def _normalise(config: dict) -> dict:
    return json.loads(json.dumps(config, sort_keys=True, default=str))


def _remove_if_empty(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _planned_shards(folder: DatasetFolder) -> int:
    (count,) = duckdb.connect().execute("SELECT coalesce(max(shard_no) + 1, 0) FROM read_parquet($p)",
                                        {"p": folder.plan_path}).fetchone()
    return int(count)


def _failure_rate(folder: DatasetFolder) -> float:
    """Fraction of rows that failed to download or decode (invalid inputs and duplicates are not counted)."""
    if not folder.complete_shards():
        return 0.0
    placeholders = ", ".join("?" for _ in RETRYABLE_STATUSES)
    (rate,) = duckdb.connect().execute(
        f"SELECT coalesce(avg(CASE WHEN status IN ({placeholders}) THEN 1.0 ELSE 0.0 END), 0) FROM read_parquet(?) "
        "WHERE status NOT IN ('invalid_input', 'duplicate')", [*RETRYABLE_STATUSES, folder.manifest_glob()]).fetchone()
    return round(float(rate), 4)


def download(source: str, input_path: str, out: str, *, source_options: dict | None = None,
             options: DownloadOptions | None = None, shard_size: int = 1000, limit: int | None = None,
             force: bool = False, ray_address: str | None = None) -> dict:
    """Build (or continue building) the dataset folder `out` from a source. Finished shards are skipped;
    a folder built from another input or config is refused unless `force` (which starts it over)."""
    options = options or DownloadOptions()
    out = os.path.abspath(out)  # Ray workers do not share the driver's working directory
    folder = DatasetFolder(out)
    config = _normalise({"source": source, "source_options": source_options or {}, "options": options.to_dict(),
                         "shard_size": shard_size, "limit": limit})
    fingerprint = provenance.input_fingerprint(input_path)
    existing = folder.read_provenance()
    if existing and force:
        for path in (folder.shards_dir, os.path.dirname(folder.plan_path), os.path.join(out, "_work")):
            shutil.rmtree(path, ignore_errors=True)
        existing = None
    provenance.check_resume(existing, config, fingerprint)
    os.makedirs(out, exist_ok=True)
    if existing is None or not os.path.exists(folder.plan_path):
        write_json(folder.provenance_path, provenance.record("download", config, fingerprint,
                                                            input=os.path.abspath(input_path), complete=False))
        build_plan(folder, source, input_path, source_options or {}, shard_size, limit)
    total = _planned_shards(folder)
    done = set(folder.complete_shards())
    jobs = [(out, n, shard_id(n), options.to_dict()) for n in range(total) if shard_id(n) not in done]
    _, failures = engine.run_tasks(download_shard, jobs, desc=f"download {source}", address=ray_address)
    _remove_if_empty(os.path.join(out, "_work"))
    summary = {"shards": total, "skipped": total - len(jobs), "ran": len(jobs) - len(failures),
               "failed_shards": [{"shard": job[2], "error": err} for job, err in failures],
               "failure_rate": _failure_rate(folder)}
    write_json(folder.provenance_path, provenance.record(
        "download", config, fingerprint, input=os.path.abspath(input_path), complete=not failures,
        shards=total, failed_shards=summary["failed_shards"]))
    return summary


def retry_failed(out: str, ray_address: str | None = None) -> dict:
    """Re-attempt only the rows that failed to download or decode, shard by shard, with the folder's options."""
    out = os.path.abspath(out)
    folder = DatasetFolder(out)
    record = folder.read_provenance()
    if record is None:
        raise FileNotFoundError(f"{out} is not a dataset folder (no provenance.json)")
    options = record["config"]["options"]
    placeholders = ", ".join("?" for _ in RETRYABLE_STATUSES)
    rows = duckdb.connect().execute(
        f"SELECT DISTINCT shard FROM read_parquet(?) WHERE status IN ({placeholders}) ORDER BY shard",
        [folder.manifest_glob(), *RETRYABLE_STATUSES]).fetchall()
    jobs = [(out, sid, options) for (sid,) in rows]
    results, failures = engine.run_tasks(retry_shard, jobs, desc="retry failed", address=ray_address)
    return {"shards_retried": len(jobs), "failed_shards": [{"shard": j[1], "error": e} for j, e in failures]}
