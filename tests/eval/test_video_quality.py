"""Weight-free video quality on synthetic clips with known answers."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from eval_media import flat_video
from synthetic_media import moving_square, textured_frame

from curate.eval import video_quality as vq


def test_temporal_flickering_formula():
    assert vq.temporal_flickering(flat_video(100, frames=8)) == 1.0
    alternating = np.stack([np.full((8, 8, 3), 0 if t % 2 == 0 else 255, np.uint8) for t in range(6)])
    assert vq.temporal_flickering(alternating) == 0.0
    # frames 100, 110, 100, 130: |diffs| 10, 10, 30 -> mean 50/3 -> (255 - 50/3) / 255
    steps = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (100, 110, 100, 130)])
    assert vq.temporal_flickering(steps) == pytest.approx((255 - 50 / 3) / 255)
    assert vq.temporal_flickering(steps[:1]) is None


def test_dynamic_degree_separates_moving_from_static():
    static = np.stack([textured_frame(96, 128, seed=3)] * 16)
    moving = moving_square(16, 96, 128, step=4)  # 4 px per frame; VBench threshold here 6 * 96 / 256 = 2.25 px
    slow = moving_square(16, 96, 128, step=1)
    assert vq.is_dynamic(static) is False
    assert vq.is_dynamic(moving) is True
    assert vq.is_dynamic(slow) is False
    tops, threshold = vq.pair_motion(moving)
    assert threshold == pytest.approx(6.0 * 96 / 256) and len(tops) == 15
    assert np.median(tops) == pytest.approx(4.0, rel=0.25)  # the top 5% of flow is the square's 4 px shift


def test_folder_summary_and_rows(ray_local, folder_factory):
    samples = [
        {"key": "still_a", "frames": np.stack([textured_frame(96, 128, seed=1)] * 16)},
        {"key": "still_b", "frames": np.stack([textured_frame(96, 128, seed=2)] * 16)},
        {"key": "moving", "frames": moving_square(16, 96, 128, step=4)},
        {"key": "broken", "media": b"not a video"},
    ]
    root = folder_factory("gen", samples)
    result = vq.video_quality(root, workers=1)
    assert result["clips"] == 3 and result["skipped"] == 1
    assert result["dynamic_degree"] == pytest.approx(1 / 3)
    assert 0.9 < result["temporal_flickering"] <= 1.0
    assert "VBench" in result["protocol"]["dynamic"]
    rows = pq.read_table(os.path.join(root, "eval", "video_quality", "00000.parquet")).to_pylist()
    by_key = {row["key"]: row for row in rows}
    assert list(by_key) == ["still_a", "still_b", "moving", "broken"]  # manifest order, the broken clip a row
    assert by_key["broken"]["error"] and by_key["broken"]["motion_score"] is None
    assert by_key["moving"]["motion_score"] > by_key["still_a"]["motion_score"]
    assert by_key["moving"]["dynamic"] and not by_key["still_a"]["dynamic"]
    assert json.loads(open(os.path.join(root, "eval", "video_quality.json")).read())["clips"] == 3
