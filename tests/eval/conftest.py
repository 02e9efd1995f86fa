"""Fixtures for the evaluation tests: dataset folders of synthetic videos written as the data plane writes them."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scoring"))  # synthetic_media, tiny_clip helpers

from synthetic_media import encode_mp4  # noqa: E402


def write_folder(root: Path, samples: list[dict], shard: str = "00000") -> Path:
    """A dataset folder with one shard: KEY.EXT members in a tar and a manifest parquet (key, modality,
    caption, status). A sample is {key, frames (uint8 [T,H,W,3]) or media (bytes), caption, status, ext}."""
    shards = root / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    rows = []
    with tarfile.open(shards / f"{shard}.tar", "w") as tar:
        for sample in samples:
            status = sample.get("status", "success")
            ext = sample.get("ext", "mp4")
            rows.append({"key": sample["key"], "modality": "image" if ext == "jpg" else "video",
                         "caption": sample.get("caption"), "status": status})
            if status != "success" or sample.get("omit"):
                continue
            media = sample.get("media")
            if media is None:
                media = encode_mp4(sample["frames"])
            info = tarfile.TarInfo(f"{sample['key']}.{ext}")
            info.size = len(media)
            tar.addfile(info, io.BytesIO(media))
    pq.write_table(pa.Table.from_pylist(rows), shards / f"{shard}.parquet")
    return root


@pytest.fixture
def folder_factory(tmp_path):
    def make(name: str, samples: list[dict]) -> str:
        return str(write_folder(tmp_path / name, samples))

    return make
