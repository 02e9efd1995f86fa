"""Codec motion from the encoder's motion vectors: orders clips of known motion, fails per sample, reaches the
scorer through the scoring stage's samples (the encoded bytes)."""

import numpy as np
import pytest

from curate.scoring.codec_motion import CODEC_MOTION, CODEC_MOTION_ERROR, CodecMotionScorer, codec_motion
from curate.scoring.scorer_set import ScorerSet
from synthetic_media import encode_mp4, textured_frame


def pan(speed: int, frames: int = 12, height: int = 96, width: int = 128) -> bytes:
    """A camera pan over a smooth texture at `speed` pixels per frame (0: a static shot)."""
    texture = textured_frame(height, width + speed * frames, seed=3)
    return encode_mp4(np.stack([texture[:, t * speed: t * speed + width] for t in range(frames)]))


@pytest.fixture(scope="module")
def pans():
    return {speed: pan(speed) for speed in (0, 1, 3, 6)}


def test_orders_pans_by_speed_in_flow_units(pans):
    values = [codec_motion(pans[speed]) for speed in (0, 1, 3, 6)]
    assert values[0] == 0.0
    assert values == sorted(values) and len(set(values)) == 4
    # 128 px wide clips: one pixel per frame is one FLOW_SIDE pixel; B-frame vectors may span two frames
    assert 4.0 < values[3] < 14.0


def test_scorer_rows_for_videos_images_and_broken_media(pans):
    scorer = CodecMotionScorer(timeout_s=30)
    try:
        rows = scorer.score_batch([
            {"key": "a", "modality": "video", "media": pans[3]},
            {"key": "b", "modality": "image", "media": b"jpeg"},
            {"key": "c", "modality": "video", "media": b"not a video"},
            {"key": "d", "modality": "video", "media": None, "decode_error": "truncated"},
        ])
    finally:
        scorer._worker.close()
    assert rows[0][CODEC_MOTION] == pytest.approx(codec_motion(pans[3])) and rows[0][CODEC_MOTION_ERROR] is None
    assert rows[1] == {CODEC_MOTION: None, CODEC_MOTION_ERROR: None}
    assert rows[2][CODEC_MOTION] is None and "PyAV" in rows[2][CODEC_MOTION_ERROR]
    assert rows[3] == {CODEC_MOTION: None, CODEC_MOTION_ERROR: "truncated"}


def test_scoring_stage_hands_the_encoded_file_to_it(demo_media, tmp_path):
    from curate.download.plan import build_plan
    from curate.download.shard import DownloadOptions, download_shard
    from curate.scoring import registry
    from curate.scoring.options import ScoreSection
    from curate.scoring.workers import ScoreModel, expand_shard
    from curate.shards.folder import DatasetFolder, shard_id

    folder = DatasetFolder(str(tmp_path / "ds"))
    build_plan(folder, "folder", demo_media[0], {}, shard_size=100)
    download_shard(folder.root, 0, shard_id(0), DownloadOptions(probe_workers=1).to_dict())
    assert ScorerSet(["codec_motion"]).needs_media and not ScorerSet(["motion"]).needs_media
    rows = expand_shard(folder.root, shard_id(0), 3, "first,middle,last", 30.0, with_media=True)
    videos = [r for r in rows if r["modality"] == "video"]
    assert videos and all(r["media"] for r in videos)
    scored = ScoreModel([registry.spec("codec_motion")], ScoreSection())(rows)
    by_key = {r["key"]: r for r in scored}
    assert all(by_key[r["key"]][CODEC_MOTION] is not None for r in videos)
    assert all(r[CODEC_MOTION] is None for r in scored if r["key"] not in {v["key"] for v in videos})
