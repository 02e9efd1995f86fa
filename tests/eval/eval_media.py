"""Synthetic clips and dataset folders for the metric tests (a module of its own: `conftest` names clash across test
folders)."""

import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from synthetic_media import encode_mp4


def flat_video(value: int, frames: int = 16, height: int = 32, width: int = 48) -> np.ndarray:
    return np.full((frames, height, width, 3), value, np.uint8)


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
