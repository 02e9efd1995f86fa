"""Shards as outside clients read them: Hugging Face `datasets` and Ray Data's read_webdataset, both with their
defaults (schema inferred from the first samples), must read every sample of a folder holding videos and images,
with the key, caption and metadata of the manifest."""

import hashlib
import json
import os

import duckdb
import pytest

from curate.download.http import FetchPolicy
from curate.download.plan import build_plan
from curate.download.shard import DownloadOptions, download_shard
from curate.shards.folder import DatasetFolder, shard_id

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Interleaved modalities, a failure of each, and more than 5 samples per shard (datasets infers its features from
# the first 5 samples of the first tar).
NAMES = ["image_000.jpg", "video_000.mp4", "image_001.jpg", "video_001.mp4", "broken_missing.mp4", "image_002.jpg",
         "video_002.mp4", "image_003.jpg", "video_003.mp4", "video_004.mp4", "broken_missing.jpg", "video_005.mp4",
         "image_000.jpg?again", "image_001.jpg?again", "video_003.mp4?again"]


@pytest.fixture(scope="module")
def folder(media_server, tmp_path_factory):
    """A downloaded dataset folder, built with the shard task itself (no Ray needed for that part)."""
    root = tmp_path_factory.mktemp("clients")
    urls = root / "urls.txt"
    urls.write_text("".join(f"{media_server.base_url}/{n}\tcaption {i}: \"quoted\", é\n" for i, n in enumerate(NAMES)))
    out = DatasetFolder(str(root / "ds"))
    build_plan(out, "urls", str(urls), {"modality": "auto"}, shard_size=7)
    options = DownloadOptions(fetch=FetchPolicy(allow_private_addresses=True, retries=0), probe_workers=1)
    ((shards,),) = duckdb.sql(f"SELECT max(shard_no) + 1 FROM read_parquet('{out.plan_path}')").fetchall()
    for n in range(shards):
        download_shard(out.root, n, shard_id(n), options.to_dict())
    return out


def manifest(folder):
    return {r["key"]: r for r in duckdb.sql(f"SELECT * FROM read_parquet('{folder.manifest_glob()}')")
            .to_arrow_table().to_pylist()}


def tars_by_modality(folder):
    """The shards' tars per modality, as a client finds them (each shard's _stats.json names its modality)."""
    out = {}
    for sid in folder.complete_shards():
        stats = json.load(open(folder.stats(sid)))
        assert len(stats["modalities"]) == 1, f"shard {sid} mixes modalities: {stats['modalities']}"
        out.setdefault(next(iter(stats["modalities"])), []).append(folder.tar(sid))
    return out


def expected_metadata(row):
    """The documented KEY.json of a manifest row (schemas/manifest.yaml): nulls as '' or 0."""
    return {"key": row["key"], "source": row["source"], "modality": row["modality"], "url": row["url"] or "",
            "width": row["width"], "height": row["height"], "fps": row["fps"] or 0.0,
            "num_frames": row["num_frames"], "duration": row["duration"] or 0.0, "codec": row["codec"],
            "size_bytes": row["size_bytes"], "sha256": row["sha256"], "extra": row["extra"]}


def test_folder_has_image_and_video_shards(folder):
    rows = manifest(folder)
    assert len(rows) == len(NAMES)
    tars = tars_by_modality(folder)
    successes = [r for r in rows.values() if r["status"] == "success"]
    assert set(tars) == {"image", "video"} and len(successes) == len(NAMES) - 2
    assert {r["modality"] for r in successes if r["fps"] is None} == {"image"}  # the nulls that broke clients


def test_hugging_face_datasets_reads_every_sample(folder, tmp_path):
    import datasets

    rows = manifest(folder)
    seen = set()
    for modality, tars in tars_by_modality(folder).items():
        media = "mp4" if modality == "video" else "jpg"
        ds = datasets.load_dataset("webdataset", data_files=sorted(tars), split="train", cache_dir=str(tmp_path))
        assert set(ds.features) == {"__key__", "__url__", media, "txt", "json"}
        json_types = {name: feature.dtype for name, feature in ds.features["json"].items()}
        assert json_types["fps"] == json_types["duration"] == "float64" and json_types["width"] == "int64"
        assert json_types["extra"] == "string"
        feature = datasets.Video(decode=False) if modality == "video" else datasets.Image(decode=False)
        for sample in ds.cast_column(media, feature):
            row = rows[sample["__key__"]]
            assert row["modality"] == modality and row["status"] == "success"
            assert sample["txt"] == row["caption"] and sample["json"] == expected_metadata(row)
            assert hashlib.sha256(sample[media]["bytes"]).hexdigest() == row["sha256"]
            seen.add(sample["__key__"])
    assert seen == {k for k, r in rows.items() if r["status"] == "success"}


def test_ray_data_read_webdataset_reads_every_sample(ray_local, folder):
    rows = manifest(folder)
    seen = set()
    for modality, tars in tars_by_modality(folder).items():
        for sample in ray_local.data.read_webdataset(sorted(tars)).take_all():
            row = rows[sample["__key__"]]
            assert row["modality"] == modality and row["status"] == "success"
            assert sample["txt"] == row["caption"] and sample["json"] == expected_metadata(row)
            if modality == "image":  # the default decoder decodes .jpg to an HxWx3 array
                assert sample["jpg"].shape == (row["height"], row["width"], 3)
            else:
                assert hashlib.sha256(sample["mp4"]).hexdigest() == row["sha256"]
            seen.add(sample["__key__"])
    assert seen == {k for k, r in rows.items() if r["status"] == "success"}
