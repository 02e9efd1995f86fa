import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.sources import read
from curate.sources.sample import url_digest


def coco_parquet(path):
    pq.write_table(pa.table({
        "URL": ["https://img.test/1.jpg", "https://img.test/2.jpg"],
        "TEXT": ["alt, text", "другой"],
        "top_caption": ["a dog on a beach", "a cat"],
        "all_captions": [["a dog on a beach", "dog"], ["a cat"]],
        "WIDTH": [640, 320], "HEIGHT": [480, 240], "similarity": [0.31, float("nan")],
    }), path)


def test_laion_coco_uses_synthetic_caption_by_default(tmp_path):
    coco_parquet(tmp_path / "part-0.parquet")
    rows = [r for c in read("laion-coco", str(tmp_path)) for r in c]
    assert [r["caption"] for r in rows] == ["a dog on a beach", "a cat"]
    assert rows[0]["key"] == url_digest("https://img.test/1.jpg")
    assert '"TEXT": "alt, text"' in rows[0]["extra"] and '"similarity": null' in rows[1]["extra"]
    alt = [r for c in read("laion-coco", str(tmp_path), caption_column="TEXT") for r in c]
    assert alt[1]["caption"] == "другой"


def test_laion_aesthetics_keeps_score_column_either_spelling(tmp_path):
    pq.write_table(pa.table({"URL": ["https://a.test/x.png"], "TEXT": ["t"],
                             "AESTHETIC_SCORE": pa.array([6.7], pa.float32())}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"URL": ["https://a.test/y.png"], "TEXT": ["u"], "aesthetic": [6.1]}),
                   tmp_path / "b.parquet")
    rows = [r for c in read("laion-aesthetics", str(tmp_path / "*.parquet")) for r in c]
    assert json.loads(rows[0]["extra"])["AESTHETIC_SCORE"] == pytest.approx(6.7)
    assert json.loads(rows[1]["extra"])["aesthetic"] == 6.1
    assert [r["row"] for r in rows] == [0, 1]


def test_missing_caption_column_is_a_clear_error(tmp_path):
    pq.write_table(pa.table({"URL": ["https://a.test/x.png"]}), tmp_path / "a.parquet")
    with pytest.raises(ValueError, match="caption column 'top_caption' not found"):
        list(read("laion-coco", str(tmp_path / "a.parquet")))
