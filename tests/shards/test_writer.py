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
