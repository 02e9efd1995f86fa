"""The dataset folder layout (a local path or an object-store URL), shard naming and completeness
(a shard is complete once its parquet exists)."""

from __future__ import annotations

from dataclasses import dataclass

from curate import storage

PLAN = "_plan/samples.parquet"


def shard_id(number: int) -> str:
    return f"{number:05d}"


@dataclass(frozen=True)
class DatasetFolder:
    root: str

    @property
    def shards_dir(self) -> str:
        return storage.join(self.root, "shards")

    @property
    def work_dir(self) -> str:
        """Scratch of the shards being built (local roots; an object-store root's scratch is local temp)."""
        return storage.join(self.root, "_work")

    @property
    def plan_path(self) -> str:
        return storage.join(self.root, PLAN)

    @property
    def provenance_path(self) -> str:
        return storage.join(self.root, "provenance.json")

    def tar(self, sid: str) -> str:
        return storage.join(self.shards_dir, f"{sid}.tar")

    def manifest(self, sid: str) -> str:
        return storage.join(self.shards_dir, f"{sid}.parquet")

    def stats(self, sid: str) -> str:
        return storage.join(self.shards_dir, f"{sid}_stats.json")

    def manifest_glob(self) -> str:
        return storage.join(self.shards_dir, "*.parquet")

    def complete_shards(self) -> list[str]:
        """Shard ids whose manifest parquet exists: it is renamed into place last, after tar and stats."""
        names = storage.glob(self.manifest_glob())
        return sorted(storage.basename(n)[: -len(".parquet")] for n in names)

    def read_provenance(self) -> dict | None:
        return storage.read_json(self.provenance_path) if storage.exists(self.provenance_path) else None

    def exists(self) -> bool:
        return storage.isdir(self.shards_dir)
