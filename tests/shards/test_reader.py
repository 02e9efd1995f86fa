"""The one shard reader: success rows of complete shards, streamed samples (media, captions, missing media as
None), member spans and ranged reads, the media extensions; the same answers from an object store (fsspec's
in-memory filesystem stands in for one: the remote code path, no server)."""

import io
import tarfile

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.shards import reader
from curate.shards.folder import DatasetFolder
from curate.shards.writer import ShardWriter

# (key, status, members): s1's media is absent from the tar though its row says success
SHARDS = {
    "00000": [("a", "success", {"mp4": b"video a", "txt": b"caption a", "json": b"{}"}),
              ("b", "failed_to_download", {}),
              ("c", "success", {"jpg": b"image c", "txt": b"caption c"})],
    "00001": [("s1", "success", {"txt": b"caption only"}),
              ("d", "success", {"WEBM": b"video d"})],
}


def write_folder(fs, root: str) -> None:
    """Shards 00000 and 00001 complete (manifest written), 00002 a tar without a manifest (incomplete)."""
    fs.makedirs(f"{root}/shards", exist_ok=True)
    for sid, rows in {**SHARDS, "00002": [("z", "success", {"mp4": b"unfinished"})]}.items():
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for key, _, members in reversed(rows):  # tar order differs from manifest order
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        with fs.open(f"{root}/shards/{sid}.tar", "wb") as f:
            f.write(buffer.getvalue())
        if sid == "00002":
            continue
        table = pa.table({"key": [r[0] for r in rows], "status": [r[1] for r in rows],
                          "modality": ["video" if "mp4" in r[2] else "image" for r in rows],
                          "caption": [f"caption {r[0]}" for r in rows]})
        with fs.open(f"{root}/shards/{sid}.parquet", "wb") as f:
            pq.write_table(table, f)


@pytest.fixture(scope="module", params=["local", "memory"])
def root(request, tmp_path_factory):
    if request.param == "local":
        path = str(tmp_path_factory.mktemp("reader"))
        write_folder(fsspec.filesystem("file"), path)
        yield path
    else:
        fs = fsspec.filesystem("memory")
        write_folder(fs, "/reader")
        yield "memory://reader"
        fs.rm("/reader", recursive=True)


def test_success_rows_are_the_complete_shards_success_rows_in_manifest_order(root):
    rows = reader.success_rows(root, ["caption"])
    assert [(r["shard"], r["key"]) for r in rows] == [("00000", "a"), ("00000", "c"), ("00001", "s1"), ("00001", "d")]
    assert rows[0]["caption"] == "caption a" and rows[0]["status"] == "success"
    assert set(rows[0]) == {"shard", "key", "modality", "status", "caption"}  # only the columns asked for
    assert [r["key"] for r in reader.manifest_rows(root, "00000", status=None)] == ["a", "b", "c"]
    assert reader.manifest_rows(root, "00000", ["no_such_column"])[0].keys() == {"key", "modality", "status"}


def test_samples_stream_media_in_tar_order_and_missing_media_last(root):
    got = [(s.key, s.extension, s.media) for s in reader.samples(root, "00001")]
    assert got == [("d", "webm", b"video d"), ("s1", None, None)]
    first = list(reader.samples(root, "00000", ["caption"], captions=True))
    assert [(s.key, s.media, s.caption_text) for s in first] == [("c", b"image c", "caption c"),
                                                               ("a", b"video a", "caption a")]
    assert first[0].row["caption"] == "caption c" and first[0].shard == "00000"
    assert [s.key for s in reader.samples(root, "00000", keys=["a", "b"])] == ["a"]  # b failed: not a sample


def test_member_spans_and_ranged_reads(root):
    spans = reader.member_spans(root, "00000")
    assert set(spans) == {"a", "c"} and set(spans["a"]) == {"mp4", "txt", "json"}
    assert reader.read_member(spans["a"]["txt"]) == b"caption a"
    assert reader.media_span(spans["c"])[0] == "jpg"
    assert reader.read_media(root, "00000", "a") == ("mp4", b"video a")
    assert reader.read_media(root, "00001", "d") == ("webm", b"video d")  # extensions compare lower-case
    assert reader.read_media(root, "00001", "s1") is None
    assert reader.manifest_columns(root, "00000") == ["key", "status", "modality", "caption"]


def test_scan_members_strips_folders_from_member_names(tmp_path):
    path = tmp_path / "nested.tar"
    with tarfile.open(path, "w") as tar:
        folder = tarfile.TarInfo("sub")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        info = tarfile.TarInfo("sub/k1.Mp4")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    ((key, ext, offset, size),) = list(reader.scan_members(str(path)))
    assert (key, ext, size) == ("k1", "mp4", 3) and path.read_bytes()[offset : offset + 3] == b"abc"


@pytest.mark.parametrize("name, modality", [("mp4", "video"), (".GIF", "video"), ("a/b.c/clip.MKV", "video"),
                                            ("photo.jpeg", "image"), ("bmp", "image"), ("clip.txt", None),
                                            ("https://example.com/video", None), ("json", None)])
def test_modality_of(name, modality):
    assert reader.modality_of(name) == modality


def test_samples_with_captions_pair_each_media_with_its_txt(tmp_path):
    media = tmp_path / "a.jpg"
    media.write_bytes(b"\xff\xd8 not decoded here")
    writer = ShardWriter(DatasetFolder(str(tmp_path / "ds")), "00000")
    for n in range(3):
        writer.add({"key": f"k{n}", "row": n, "source": "urls", "modality": "image", "caption": f"text {n}",
                    "status": "success", "sha256": str(n), "extra": "{}"}, str(media), "jpg")
    writer.add({"key": "k9", "row": 9, "source": "urls", "modality": "image", "caption": "x",
                "status": "failed_to_download", "extra": "{}"})
    writer.close()
    got = [(s.key, s.extension, s.caption_text) for s in reader.samples(str(tmp_path / "ds"), "00000", captions=True)]
    assert got == [("k0", "jpg", "text 0"), ("k1", "jpg", "text 1"), ("k2", "jpg", "text 2")]
    assert [s.caption_text for s in reader.samples(str(tmp_path / "ds"), "00000", keys=["k1"])] == [None]
