"""Motion and technical-quality scores on synthetic clips with known answers."""

import cv2
import numpy as np
import pytest
from synthetic_media import encode_mp4, moving_square, textured_frame

from curate.scoring.frames import sample_frames
from curate.scoring.motion_score import MOTION_SCORE, MotionScorer, motion_score
from curate.scoring.technical_quality import (
    BLACK_BORDER_FRACTION,
    SHARPNESS,
    STATIC_FRAME_FRACTION,
    QualityScorer,
    black_border_fraction,
    brightness,
    contrast,
    grey_frames,
    sharpness,
    static_frame_fraction,
)


def decoded(frames, k=5):
    return sample_frames(encode_mp4(frames), k=k, positions="uniform")


def test_static_clip_has_near_zero_motion_and_moving_square_more():
    static = decoded(np.repeat(textured_frame()[None], 16, axis=0))
    moving = decoded(moving_square())
    assert motion_score(static) < 0.05
    assert motion_score(moving) > 0.3
    assert motion_score(moving) > 100 * motion_score(static)
    assert motion_score(static[:1]) is None


def test_motion_scorer_rows():
    scorer = MotionScorer()
    scorer.setup()
    rows = scorer.score_batch([
        {"key": "a", "frames": decoded(moving_square())},
        {"key": "b", "frames": textured_frame()[None]},
        {"key": "c", "frames": None, "decode_error": "corrupt"},
    ])
    assert rows[0][MOTION_SCORE] > 0.3
    assert rows[1] == {MOTION_SCORE: None, "motion_score_error": None}
    assert rows[2] == {MOTION_SCORE: None, "motion_score_error": "corrupt"}


def test_blurred_is_less_sharp_than_sharp():
    sharp = textured_frame(seed=3)
    blurred = cv2.GaussianBlur(sharp, (9, 9), 3)
    assert sharpness(grey_frames(blurred[None])) < 0.5 * sharpness(grey_frames(sharp[None]))


def test_letterbox_and_pillarbox_are_measured():
    frame = textured_frame(96, 128, seed=1)
    frame = np.maximum(frame, 40)  # no accidental dark rows inside the picture
    assert black_border_fraction(grey_frames(frame[None])) == 0.0
    letterboxed = frame.copy()
    letterboxed[:12] = 0
    letterboxed[-12:] = 5
    assert black_border_fraction(grey_frames(letterboxed[None])) == pytest.approx(24 / 96)
    pillarboxed = frame.copy()
    pillarboxed[:, :16] = 0
    assert black_border_fraction(grey_frames(pillarboxed[None])) == pytest.approx(16 / 128)
    assert black_border_fraction(grey_frames(np.zeros((1, 32, 32, 3), np.uint8))) == 1.0


def test_brightness_contrast_and_static_fraction():
    flat = np.full((2, 32, 32, 3), 128, np.uint8)
    greys = grey_frames(flat)
    assert brightness(greys) == pytest.approx(128 / 255, abs=1e-3)
    assert contrast(greys) == 0.0
    assert static_frame_fraction(greys) == 1.0
    assert static_frame_fraction(greys[:1]) is None
    half = flat.copy()
    half[:, :, :16] = 0
    half[:, :, 16:] = 255
    assert contrast(grey_frames(half)) == pytest.approx(0.5, abs=1e-3)


def test_quality_scorer_on_encoded_clips():
    scorer = QualityScorer()
    scorer.setup()
    still, moving = decoded(np.repeat(textured_frame()[None], 16, axis=0)), decoded(moving_square())
    rows = scorer.score_batch([{"frames": still}, {"frames": moving}, {"frames": None}])
    assert rows[0][STATIC_FRAME_FRACTION] == 1.0 and rows[1][STATIC_FRAME_FRACTION] == 0.0
    assert rows[0][SHARPNESS] > 0 and rows[0][BLACK_BORDER_FRACTION] == 0.0
    assert rows[2]["quality_error"] == "no decoded frames" and rows[2][SHARPNESS] is None
