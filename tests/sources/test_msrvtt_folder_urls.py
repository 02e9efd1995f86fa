import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.sources import read


def rows(source, path, **kw):
    return [r for c in read(source, str(path), **kw) for r in c]


def test_msrvtt_one_row_per_video_with_all_captions(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "video0.mp4").write_bytes(b"x")
    data = {"info": {}, "videos": [
        {"id": 0, "video_id": "video0", "category": 9, "url": "https://www.youtube.com/watch?v=x",
         "start time": 137.72, "end time": 149.44, "split": "train"},
        {"id": 7010, "video_id": "video7010", "category": 3, "url": "u", "start time": 1.0, "end time": 2.0,
         "split": "test"}],
        "sentences": [{"sen_id": 2, "video_id": "video0", "caption": "second"},
                      {"sen_id": 1, "video_id": "video0", "caption": "first, with a comma"}]}
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps(data))
    out = rows("msrvtt", tmp_path / "MSRVTT_data.json")
    assert [r["key"] for r in out] == ["msrvtt_video0", "msrvtt_video7010"]
    assert out[0]["caption"] == "first, with a comma" and out[0]["path"].endswith("video0.mp4")
    assert json.loads(out[0]["extra"])["all_captions"] == ["first, with a comma", "second"]
    assert "not found" in out[1]["input_error"]
    assert [r["key"] for r in rows("msrvtt", tmp_path / "MSRVTT_data.json", split="test")] == ["msrvtt_video7010"]


def test_folder_with_sidecar_captions(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "clip one.mp4").write_bytes(b"x")
    (tmp_path / "a" / "clip one.txt").write_text("a clip, \"quoted\" 🎬\n", encoding="utf-8")
    (tmp_path / "b.jpg").write_bytes(b"x")
    (tmp_path / "notes.md").write_text("ignored")
    out = rows("folder", tmp_path)
    assert [r["modality"] for r in out] == ["image", "video"]
    assert out[1]["caption"] == 'a clip, "quoted" 🎬'
    assert out[1]["key"].startswith("a_clip_one_")  # sanitised, with a digest so keys stay distinct
    assert all(set(r["key"]) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") for r in out)


def test_urls_txt_csv_parquet(tmp_path):
    (tmp_path / "l.txt").write_text("# comment\nhttps://h.test/v.mp4\tcap, one\n\nhttps://h.test/i.jpg\n")
    out = rows("urls", tmp_path / "l.txt")
    assert [(r["modality"], r["caption"]) for r in out] == [("video", "cap, one"), ("image", "")]
    (tmp_path / "l.csv").write_text('url,caption,license\nhttps://h.test/a.webm,"x, ""y""",cc\n')
    out = rows("urls", tmp_path / "l.csv")
    assert out[0]["caption"] == 'x, "y"' and out[0]["modality"] == "video" and '"license": "cc"' in out[0]["extra"]
    pq.write_table(pa.table({"link": ["https://h.test/p"], "text": ["t"]}), tmp_path / "l.parquet")
    out = rows("urls", tmp_path / "l.parquet", url_column="link", caption_column="text", modality="video")
    assert out[0]["modality"] == "video" and out[0]["caption"] == "t"
    with pytest.raises(ValueError, match="no 'url' column"):
        rows("urls", tmp_path / "l.parquet")
