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


TYPED = ("laion_aesthetic", "punsafe", "pwatermark", "similarity", "source_width", "source_height")


def test_laion_aesthetics_6_5plus_columns_become_typed_columns(tmp_path):
    """The improved_aesthetics_6.5plus layout: WIDTH/HEIGHT/similarity float64, punsafe/pwatermark/AESTHETIC_SCORE
    float32. Typed columns keep the listed values (float32 6.7 -> 6.7, not 6.699999809)."""
    pq.write_table(pa.table({
        "URL": ["https://a.test/x.png", "https://a.test/y.jpg"], "TEXT": ["t", "u"],
        "WIDTH": pa.array([1024.0, 600.0], pa.float64()), "HEIGHT": pa.array([768.0, float("nan")], pa.float64()),
        "similarity": pa.array([0.3125, 0.28], pa.float64()),
        "punsafe": pa.array([0.00012, 0.9], pa.float32()), "pwatermark": pa.array([0.07, 0.6], pa.float32()),
        "AESTHETIC_SCORE": pa.array([6.7, 6.5], pa.float32()),
        "hash": pa.array([-123, 456], pa.int64()), "__index_level_0__": pa.array([10, 11], pa.int64()),
    }), tmp_path / "part-00000.parquet")
    rows = [r for c in read("laion-aesthetics", str(tmp_path)) for r in c]
    assert [tuple(r[c] for c in TYPED) for r in rows] == [(6.7, 0.00012, 0.07, 0.3125, 1024, 768),
                                                          (6.5, 0.9, 0.6, 0.28, 600, None)]
    assert type(rows[0]["source_width"]) is int
    assert json.loads(rows[0]["extra"])["hash"] == -123 and json.loads(rows[1]["extra"])["__index_level_0__"] == 11


def test_laion_coco_columns_become_typed_columns_without_an_aesthetic_score(tmp_path):
    pq.write_table(pa.table({
        "URL": ["https://img.test/1.jpg"], "TEXT": ["alt"], "top_caption": ["a dog"], "all_captions": [["a dog"]],
        "all_similarities": [[0.4]], "WIDTH": pa.array([640], pa.int64()), "HEIGHT": pa.array([480], pa.int64()),
        "similarity": [0.31], "hash": pa.array([7], pa.int64()), "pwatermark": [0.2], "punsafe": [0.01],
    }), tmp_path / "coco.parquet")
    (row,) = [r for c in read("laion-coco", str(tmp_path)) for r in c]
    assert {c: row.get(c) for c in TYPED} == {"laion_aesthetic": None, "punsafe": 0.01, "pwatermark": 0.2,
                                              "similarity": 0.31, "source_width": 640, "source_height": 480}


def test_laion2b_lowercase_aesthetic_is_the_same_column(tmp_path):
    pq.write_table(pa.table({"URL": ["https://a.test/y.png"], "TEXT": ["u"], "aesthetic": [6.1]}),
                   tmp_path / "b.parquet")
    (row,) = [r for c in read("laion-aesthetics", str(tmp_path)) for r in c]
    assert row["laion_aesthetic"] == 6.1 and row["punsafe"] is None


def test_missing_caption_column_is_a_clear_error(tmp_path):
    pq.write_table(pa.table({"URL": ["https://a.test/x.png"]}), tmp_path / "a.parquet")
    with pytest.raises(ValueError, match="caption column 'top_caption' not found"):
        list(read("laion-coco", str(tmp_path / "a.parquet")))
