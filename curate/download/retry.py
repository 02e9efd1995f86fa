"""The retry-failed stage: re-attempt only the rows of a downloaded folder that failed to download or decode, with
the options the folder was built with; successes are carried over unchanged."""

from __future__ import annotations

from dataclasses import dataclass

from curate import engine, storage
from curate.download.shard import RETRYABLE_STATUSES, DownloadOptions, retry_shard
from curate.download.stage import DownloadSection, DownloadStage, _absolute, _placeholders
from curate.shards.folder import DatasetFolder


@dataclass
class RetryFailedStage(DownloadStage):
    """A complete download folder -> the same folder, its failed rows attempted again shard by shard. Its settings
    and input fingerprint are the folder's own (the source file may be gone), so a later `curate download` with
    the same settings still resumes it."""

    recorded_fingerprint: str = ""

    name = "retry-failed"

    @classmethod
    def of_folder(cls, out: str) -> RetryFailedStage:
        folder = DatasetFolder(_absolute(out))
        record = folder.read_provenance()
        if record is None or record.get("stage") not in (DownloadStage.name, cls.name):
            raise FileNotFoundError(f"{out} is not a downloaded dataset folder (no download provenance.json)")
        config = record["config"]
        section = DownloadSection(source=config["source"], input=record.get("input", ""),
                                  source_options=config["source_options"], shard_size=config["shard_size"],
                                  limit=config["limit"], options=DownloadOptions.from_dict(config["options"]))
        return cls(out, section, recorded_fingerprint=record["input_fingerprint"])

    def fingerprint(self) -> str:
        return self.recorded_fingerprint

    def check(self) -> None:
        from curate.sources import READERS

        if self.section.source not in READERS:
            raise ValueError(f"unknown source {self.section.source!r}; choose one of {', '.join(READERS)}")

    def prepare(self) -> None:
        """The plan is the folder's own; nothing to build."""

    def todo(self) -> list[str]:
        rows = storage.duckdb_connect(self.out).execute(
            f"SELECT DISTINCT shard FROM read_parquet(?) WHERE status IN ({_placeholders(RETRYABLE_STATUSES)}) "
            "ORDER BY shard", [self.folder.manifest_glob(), *RETRYABLE_STATUSES]).fetchall()
        return [sid for (sid,) in rows]

    def process(self, unit: str) -> dict:
        return retry_shard(self.out, unit, self.section.options.to_dict())

    def finish(self, done: list, failures: list) -> dict:
        return {"shards_retried": len(done) + len(failures),
                "failed_shards": [{"shard": unit, "error": error} for unit, error in failures],
                "failure_rate": self.failure_rate()}

    def describe(self) -> list[str]:
        return [f"{self.name}: the failed rows of {self.out}, with the options it was downloaded with"]


def retry_failed(out: str, ray_address: str | None = None) -> dict:
    """Re-attempt only the rows that failed to download or decode, shard by shard, with the folder's options."""
    return engine.run_stage(RetryFailedStage.of_folder(out), address=ray_address)
