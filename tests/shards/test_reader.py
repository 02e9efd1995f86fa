"""The shard reader's streamed samples: media with its KEY.txt when asked, rows without media last."""

from __future__ import annotations

from curate.shards.folder import DatasetFolder
from curate.shards.reader import samples
from curate.shards.writer import ShardWriter


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
    got = [(s.key, s.extension, s.caption_text) for s in samples(str(tmp_path / "ds"), "00000", captions=True)]
    assert got == [("k0", "jpg", "text 0"), ("k1", "jpg", "text 1"), ("k2", "jpg", "text 2")]
    assert [s.caption_text for s in samples(str(tmp_path / "ds"), "00000", keys=["k1"])] == [None]
