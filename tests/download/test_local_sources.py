"""Local media end to end: JourneyDB images read from their tgz archives, folder videos/images from disk."""

import io
import json
import os
import shutil
import tarfile

import duckdb

from curate.download.stage import download


def manifest(out):
    return {r["key"]: r for r in duckdb.sql(f"SELECT * FROM read_parquet('{out}/shards/*.parquet')")
            .to_arrow_table().to_pylist()}


def test_journeydb_from_archives(ray_local, demo_media, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    with tarfile.open(imgs / "000.tgz", "w:gz") as tar:
        tar.add(os.path.join(demo_media[0], "image_000.jpg"), "000/a.jpg")
        data = b"not a jpeg"
        info = tarfile.TarInfo("000/broken.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    lines = [{"img_path": "./000/a.jpg", "prompt": "a shape"}, {"img_path": "./000/broken.jpg", "prompt": "x"},
             {"img_path": "./000/absent.jpg", "prompt": "y"}, {"img_path": "./001/z.jpg", "prompt": "no archive"}]
    anno = tmp_path / "valid_anno_repath.jsonl"
    anno.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "ds"
    download("journeydb", str(anno), str(out), source_options={"images": str(imgs)})
    rows = manifest(out)
    assert rows["jdb_000_a"]["status"] == "success" and rows["jdb_000_a"]["width"] == 128
    assert rows["jdb_000_broken"]["error_reason"] == "corrupt"
    assert rows["jdb_000_absent"]["error_reason"] == "missing_file"
    assert rows["jdb_001_z"]["status"] == "invalid_input"


def test_folder_videos_and_images(ray_local, demo_media, tmp_path):
    src = tmp_path / "clips"
    src.mkdir()
    shutil.copy(os.path.join(demo_media[0], "video_000.mp4"), src / "walk.mp4")
    (src / "walk.txt").write_text("a walk")
    shutil.copy(os.path.join(demo_media[0], "image_001.jpg"), src / "still.jpg")
    shutil.copy(os.path.join(demo_media[0], "broken_corrupt.mp4"), src / "bad.mp4")
    out = tmp_path / "ds"
    download("folder", str(src), str(out))
    rows = manifest(out)
    assert rows["walk"]["status"] == "success" and rows["walk"]["caption"] == "a walk"
    assert rows["walk"]["num_frames"] == 24 and rows["still"]["status"] == "success"
    assert rows["bad"]["status"] == "failed_to_decode"
