import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate import report
from curate.predicate import PredicateError
from curate.report import build, thresholds, write
from curate.shards.folder import DatasetFolder
from curate.shards.writer import ShardWriter


@pytest.fixture()
def scored(tmp_path, demo_media):
    folder = DatasetFolder(str(tmp_path / "ds"))
    writer = ShardWriter(folder, "00000")
    for i in range(6):
        video = i % 2 == 0
        name = f"video_00{i // 2}.mp4" if video else f"image_00{i // 2}.jpg"
        writer.add({"key": f"k{i}", "row": i, "source": "webvid" if video else "laion-coco",
                    "modality": "video" if video else "image", "caption": f"caption <{i}>", "status": "success",
                    "extra": "{}"}, os.path.join(demo_media[0], name), "mp4" if video else "jpg")
    writer.close()
    os.makedirs(os.path.join(folder.root, "scores", "quality"))
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(6)], "sharpness": [5.0, 50, 500, 5000, 1.0, 80]}),
                   os.path.join(folder.root, "scores", "quality", "00000.parquet"))
    return folder.root


def test_report_has_counts_thresholds_histograms_and_thumbnails(scored, tmp_path):
    page = build(scored, "sharpness >= 50")
    assert "<td>webvid</td><td>3</td><td>3</td><td>1</td><td>2</td>" in page  # samples, success, kept, dropped
    assert "<td>laion-coco</td><td>3</td><td>3</td><td>3</td><td>0</td>" in page
    assert "sharpness &gt;= 50" in page and "<h2>sharpness</h2>" in page
    images = re.findall(r'data:image/png;base64,', page)
    assert len(images) >= 1 + 5  # the histogram and a thumbnail per quantile
    assert "caption &lt;0&gt;" in page or "caption &lt;4&gt;" in page  # captions are escaped
    out = write(scored, str(tmp_path / "r.html"))
    assert os.path.getsize(out) > 1000


def test_thresholds_and_bad_predicates(scored):
    columns = {"sharpness", "motion_score", "aesthetic_score", "modality"}
    assert thresholds("sharpness >= 50 AND motion_score < 0.5", columns) == {"sharpness": [(">=", 50.0)],
                                                                             "motion_score": [("<", 0.5)]}
    # quoted names, reversed sides, BETWEEN and OR: as the select stage's grammar reads them
    assert thresholds('5 <= "aesthetic_score" OR sharpness BETWEEN 20 AND 1e3 OR modality = \'image\'', columns) == {
        "aesthetic_score": [(">=", 5.0)], "sharpness": [(">=", 20.0), ("<=", 1000.0)]}
    assert thresholds("abs(sharpness - 50) < 5", columns) == {}  # not a threshold on sharpness
    with pytest.raises(PredicateError):
        build(scored, "sharpness > 1; DROP TABLE x")
    with pytest.raises(PredicateError):
        thresholds("sharpnes > 1", columns)


def test_report_draws_the_thresholds_that_select_applies(scored, monkeypatch):
    drawn = {}

    def histogram(values_by_source, column, lines):
        drawn[column] = lines
        return ""

    monkeypatch.setattr(report, "_histogram", histogram)
    page = build(scored, '50 <= "sharpness" AND NOT modality = \'image\'')
    assert drawn == {"sharpness": [(">=", 50.0)]}
    assert "<td>webvid</td><td>3</td><td>3</td><td>1</td><td>2</td>" in page  # sharpness 5, 500, 1.0: one kept
    assert "<td>laion-coco</td><td>3</td><td>3</td><td>0</td><td>3</td>" in page


def test_report_shows_the_dedup_threshold_sweep(scored):
    assert "dedup-sweep" not in build(scored)
    sweep = {"0.90": 4, "0.93": 3, "0.95": 2, "0.97": 1, "0.99": 0}
    table = pa.table({"key": ["k0"], "near_duplicate_of": pa.array([None], pa.string())})
    os.makedirs(os.path.join(scored, "scores", "dedup"))
    pq.write_table(table.replace_schema_metadata({b"curate.sweep": json.dumps(sweep)}),
                   os.path.join(scored, "scores", "dedup", "all.parquet"))
    page = build(scored)
    assert all(f"<tr><td>{t}</td><td>{n}</td></tr>" in page for t, n in sweep.items())


def test_report_shows_the_ocr_distribution(scored):
    os.makedirs(os.path.join(scored, "scores", "ocr"))
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(6)], "ocr_text_area": [0.0, 0, 0.2, 0, 0.01, 0],
                             "ocr_static_text_area": [0.0, None, 0.19, None, 0.0, None]}),
                   os.path.join(scored, "scores", "ocr", "00000.parquet"))
    page = build(scored, "coalesce(ocr_static_text_area, ocr_text_area) < 0.05")
    assert "<h2>ocr_text_area</h2>" in page and "<h2>ocr_static_text_area</h2>" in page
    assert "<td>webvid</td><td>3</td><td>3</td><td>2</td><td>1</td>" in page  # the watermarked video dropped


def test_heavy_tailed_scores_get_log_bins_that_spread_them():
    sharpness = np.clip(np.concatenate([np.random.default_rng(0).lognormal(3, 1.5, 500), [0.2, 14_700.0]]), 0.2, 14_700)
    bins = report.histogram_bins(sharpness)
    assert report.log_scale(sharpness) and np.allclose(bins[[0, -1]], [0.2, 14_700.0])
    counts, _ = np.histogram(sharpness, bins)
    assert counts.max() < 0.2 * len(sharpness)  # on 30 even bins more than 90% fall in the first one
    assert np.histogram(sharpness, 30)[0][0] > 0.9 * len(sharpness)
    brightness = np.linspace(0.1, 0.9, 50)
    assert not report.log_scale(brightness) and np.allclose(report.histogram_bins(brightness), np.linspace(0.1, 0.9, 31))
