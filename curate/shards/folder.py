"""The dataset folder layout, shard naming and completeness (a shard is complete once its parquet exists)."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

PLAN = "_plan/samples.parquet"


def shard_id(number: int) -> str:
    return f"{number:05d}"


@dataclass(frozen=True)
class DatasetFolder:
    root: str

    @property
    def shards_dir(self) -> str:
        return os.path.join(self.root, "shards")

    @property
    def plan_path(self) -> str:
        return os.path.join(self.root, PLAN)

    @property
    def provenance_path(self) -> str:
        return os.path.join(self.root, "provenance.json")

    def tar(self, sid: str) -> str:
        return os.path.join(self.shards_dir, f"{sid}.tar")

    def manifest(self, sid: str) -> str:
        return os.path.join(self.shards_dir, f"{sid}.parquet")

    def stats(self, sid: str) -> str:
        return os.path.join(self.shards_dir, f"{sid}_stats.json")

    def manifest_glob(self) -> str:
        return os.path.join(self.shards_dir, "*.parquet")

    def complete_shards(self) -> list[str]:
        """Shard ids whose manifest parquet exists: it is renamed into place last, after tar and stats."""
        names = glob.glob(self.manifest_glob())
        return sorted(os.path.basename(n)[: -len(".parquet")] for n in names)

    def read_provenance(self) -> dict | None:
        if not os.path.exists(self.provenance_path):
            return None
        with open(self.provenance_path, encoding="utf-8") as f:
            return json.load(f)

    def exists(self) -> bool:
        return os.path.isdir(self.shards_dir)
