"""The download plan: one row per input row, images and videos in separate shards, input order kept."""

import pyarrow.parquet as pq

from curate.download.plan import build_plan
from curate.shards.folder import DatasetFolder


def plan(tmp_path, names, shard_size):
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"http://media.test/{n}\tcaption {i}\n" for i, n in enumerate(names)))
    folder = DatasetFolder(str(tmp_path / "ds"))
    assert build_plan(folder, "urls", str(urls), {}, shard_size) == len(names)
    return pq.read_table(folder.plan_path).to_pylist()


def test_modalities_never_share_a_shard_and_keep_input_order(tmp_path):
    names = ["a.jpg", "v1.mp4", "b.png", "v2.webm", "c.jpg", "v3.mp4", "d.jpg", "v1.mp4", "e.jpg"]
    rows = plan(tmp_path, names, shard_size=2)
    assert [r["row"] for r in rows] == list(range(len(names)))  # one plan row per input row, in input order
    assert len({r["key"] for r in rows}) == len(names)
    shards: dict[int, list[dict]] = {}
    for r in rows:
        shards.setdefault(r["shard_no"], []).append(r)
    # images came first: 5 remote images (all stored as .jpg: img2dataset re-encodes) -> shards 0-2, then the
    # .mp4 videos (one a duplicate) -> 3-4, then the .webm video (another member extension) -> 5
    assert sorted(shards) == list(range(6))
    assert {n: [r["url"].rsplit("/", 1)[1] for r in shards[n]] for n in shards} == {
        0: ["a.jpg", "b.png"], 1: ["c.jpg", "d.jpg"], 2: ["e.jpg"], 3: ["v1.mp4", "v3.mp4"], 4: ["v1.mp4"],
        5: ["v2.webm"]}
    assert all(len({r["modality"] for r in shard}) == 1 for shard in shards.values())
    dup = [r for r in rows if r["input_error"]]
    assert len(dup) == 1 and dup[0]["key"].endswith("_dup1") and dup[0]["shard_no"] == 4


def test_local_images_of_different_formats_get_different_shards(tmp_path):
    """Local images keep their format, so their member extensions differ: .png and .jpg never share a shard
    (.jpeg is stored as .jpg)."""
    media = tmp_path / "media"
    media.mkdir()
    for name in ("a.jpg", "b.png", "c.jpeg", "d.png", "e.jpg", "f.mp4"):
        (media / name).write_bytes(b"")
    folder = DatasetFolder(str(tmp_path / "ds"))
    build_plan(folder, "folder", str(media), {}, 10)
    rows = pq.read_table(folder.plan_path).to_pylist()
    assert {r["path"].rsplit("/", 1)[1]: r["shard_no"] for r in rows} == {
        "a.jpg": 0, "b.png": 1, "c.jpeg": 0, "d.png": 1, "e.jpg": 0, "f.mp4": 2}


def test_one_modality_fills_shards_in_order(tmp_path):
    rows = plan(tmp_path, [f"v{i}.mp4" for i in range(5)], shard_size=2)
    assert [r["shard_no"] for r in rows] == [0, 0, 1, 1, 2] and all(type(r["shard_no"]) is int for r in rows)
