import io
import os
import tarfile

import pyarrow.parquet as pq
import pytest

from curate.shards.folder import DatasetFolder
from curate.shards.writer import ShardWriter, member_name


def row(key, status="success", n=0):
    return {"key": key, "row": n, "source": "urls", "modality": "image", "caption": "c, é", "status": status,
            "extra": "{}"}


def test_shard_is_published_whole_and_parquet_last(tmp_path):
    folder = DatasetFolder(str(tmp_path))
    media = tmp_path / "m.jpg"
    media.write_bytes(b"\xff\xd8jpeg")
    writer = ShardWriter(folder, "00003")
    writer.add(row("b", n=1), str(media), "jpg")
    writer.add(row("a", "failed_to_download", n=0))
    assert folder.complete_shards() == [] and not os.path.exists(folder.tar("00003"))
    stats = writer.close()
    assert folder.complete_shards() == ["00003"]
    assert stats["count"] == 2 and stats["successes"] == 1 and stats["status_dict"]["failed_to_download"] == 1
    table = pq.read_table(folder.manifest("00003")).to_pylist()
    assert [r["key"] for r in table] == ["a", "b"] and table[1]["shard"] == "00003"
    with tarfile.open(folder.tar("00003")) as tar:
        assert tar.getnames() == ["b.jpg", "b.txt", "b.json"]
        assert tar.extractfile("b.txt").read().decode() == "c, é"


def test_abort_leaves_nothing(tmp_path):
    folder = DatasetFolder(str(tmp_path))
    writer = ShardWriter(folder, "00000")
    writer.add(row("a", "failed_to_download"))
    writer.abort()
    assert os.listdir(folder.shards_dir) == []


@pytest.mark.parametrize("key,ext", [("../evil", "jpg"), ("a/b", "jpg"), ("a.b", "jpg"), ("", "jpg"), ("ok", "j/g")])
def test_member_names_are_sanitised(key, ext):
    with pytest.raises(ValueError, match="unsafe tar member"):
        member_name(key, ext)


def test_success_row_requires_media(tmp_path):
    writer = ShardWriter(DatasetFolder(str(tmp_path)), "00000")
    with pytest.raises(ValueError, match="needs its media"):
        writer.add(row("a"))
    writer.abort()


def test_shards_read_with_the_webdataset_library(tmp_path):
    """Users load our shards with `webdataset`: every sample comes back with media, caption and metadata."""
    import json

    import webdataset as wds

    folder = DatasetFolder(str(tmp_path))
    media = tmp_path / "m.jpg"
    media.write_bytes(b"\xff\xd8jpeg")
    writer = ShardWriter(folder, "00000")
    for i in range(3):
        writer.add(dict(row(f"key_{i}", n=i), caption=f"caption, {i}"), str(media), "jpg")
    writer.close()
    samples = list(wds.WebDataset(folder.tar("00000"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["key_0", "key_1", "key_2"]
    assert samples[1]["txt"].decode() == "caption, 1" and samples[1]["jpg"] == b"\xff\xd8jpeg"
    assert json.loads(samples[2]["json"])["key"] == "key_2"


def _foreign_tar(path, keys, extra=()):
    """A tar another writer made with our member names (what img2dataset writes through our sample writer)."""
    members = [(f"{k}.{ext}", f"{k}-{ext}".encode()) for k in keys for ext in ("jpg", "txt", "json")]
    with tarfile.open(path, "w") as tar:
        for name, data in members + list(extra):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("first_media", [False, True])
def test_add_tar_takes_over_or_copies_a_foreign_tar(tmp_path, first_media):
    """Into an empty shard the foreign tar is moved (no copy); after other media it is copied in."""
    folder = DatasetFolder(str(tmp_path))
    foreign = tmp_path / "i2d.tar"
    _foreign_tar(foreign, ["x", "y"])
    writer = ShardWriter(folder, "00000")
    if first_media:
        media = tmp_path / "m.mp4"
        media.write_bytes(b"video")
        writer.add(row("v", n=0), str(media), "mp4")
    writer.add_tar(str(foreign), [row("x", n=1), row("y", n=2)])
    writer.add(row("z", "failed_to_download", n=3))
    writer.close()
    assert foreign.exists() == first_media
    with tarfile.open(folder.tar("00000")) as tar:
        names = tar.getnames()
        assert tar.extractfile("y.jpg").read() == b"y-jpg"
    assert names == (["v.mp4", "v.txt", "v.json"] if first_media else []) + [
        f"{k}.{e}" for k in "xy" for e in ("jpg", "txt", "json")]
    table = pq.read_table(folder.manifest("00000")).to_pylist()
    assert [(r["key"], r["size_bytes"]) for r in table if r["key"] in "xy"] == [("x", 5), ("y", 5)]


@pytest.mark.parametrize("extra,keys,match", [
    ([("../evil.jpg", b"x")], ["x"], "unexpected tar member"),
    ([("w.jpg", b"x")], ["x"], "unexpected tar member"),
    ([], ["x", "missing"], "no media member"),
])
def test_add_tar_refuses_members_that_do_not_match_the_rows(tmp_path, extra, keys, match):
    foreign = tmp_path / "i2d.tar"
    _foreign_tar(foreign, ["x"], extra)
    writer = ShardWriter(DatasetFolder(str(tmp_path)), "00000")
    with pytest.raises(ValueError, match=match):
        writer.add_tar(str(foreign), [row(k, n=i) for i, k in enumerate(keys)])
    writer.abort()
    assert not os.path.exists(DatasetFolder(str(tmp_path)).tar("00000"))


def test_sample_metadata_has_one_key_set_and_typed_values_without_nulls():
    """An image from local disk (no url, no fps, no duration) and a remote video write the same keys with the
    same JSON types, never null: clients infer one schema from the first samples."""
    import json

    from curate.shards.writer import sample_metadata

    image = json.loads(sample_metadata({"key": "i", "source": "folder", "modality": "image", "url": None,
                                        "width": 64, "height": 48, "fps": None, "num_frames": 1, "duration": None,
                                        "codec": "png", "size_bytes": 10, "sha256": "ab", "extra": None}))
    video = json.loads(sample_metadata({"key": "v", "source": "webvid", "modality": "video", "url": "http://h/v.mp4",
                                        "width": 160, "height": 120, "fps": 8, "num_frames": 24, "duration": 3,
                                        "codec": "h264", "size_bytes": 99, "sha256": "cd",
                                        "extra": '{"page_idx": 7}', "laion_aesthetic": None}))
    assert list(image) == list(video)
    assert {k: type(v) for k, v in image.items()} == {k: type(v) for k, v in video.items()}
    assert image["url"] == "" and image["fps"] == 0.0 and image["duration"] == 0.0 and image["extra"] == "{}"
    assert video["fps"] == 8.0 and type(video["fps"]) is float and video["extra"] == '{"page_idx": 7}'
