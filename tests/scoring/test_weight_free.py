"""Motion and technical-quality scores on synthetic clips with known answers."""

import math
import os

import cv2
import duckdb
import numpy as np
import pyarrow as pa
import pytest
import yaml
from scipy.signal import convolve2d
from synthetic_media import encode_mp4, moving_square, textured_frame

from curate.scoring.frames import DECODE_MAX_SIDE, decode_media, resize_frames, sample_frames
from curate.scoring.motion_score import MOTION_SCORE, MotionScorer, motion_score
from curate.scoring.ocr_score import OcrScorer
from curate.scoring.technical_quality import (
    BLACK_BORDER_FRACTION,
    NOISE_SIGMA,
    SHARPNESS,
    STATIC_FRAME_FRACTION,
    QualityScorer,
    black_border_fraction,
    brightness,
    contrast,
    grey_frames,
    noise_sigma,
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
    assert 0 < rows[0][NOISE_SIGMA] < 3 and rows[2][NOISE_SIGMA] is None
    assert rows[2]["quality_error"] == "no decoded frames" and rows[2][SHARPNESS] is None


def panning_scene(side: int, shift: int, frames: int = 4) -> np.ndarray:
    """A 256x192 textured scene panning `shift` px per frame, rendered at `side` px wide (area averaging)."""
    scene = textured_frame(192, 256 + shift * frames, seed=5)
    clip = np.stack([scene[:, i * shift : i * shift + 256] for i in range(frames)])
    return resize_frames(clip, side * 3 // 4, side)


@pytest.mark.parametrize("shift", [4, 8])
def test_motion_is_in_the_same_units_for_every_frame_size(shift):
    """The same motion is shift/2 px in a 128 px frame whatever size the clip comes in; frames under 128 px
    used to be measured at their own size (a 64 px clip scored half)."""
    scores = {side: motion_score(panning_scene(side, shift)) for side in (64, 96, 256, 512)}
    for side, score in scores.items():
        assert score == pytest.approx(shift / 2, rel=0.05), (side, scores)


def immerkaer_reference(grey: np.ndarray) -> float:
    """The published formula computed directly: sqrt(pi/2) / (6 (W-2)(H-2)) * sum |I * N| (valid pixels)."""
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]])
    height, width = grey.shape
    return math.sqrt(math.pi / 2) * np.abs(convolve2d(grey.astype(np.float64), mask, mode="valid")).sum() / (
        6 * (width - 2) * (height - 2))


def test_noise_sigma_is_immerkaers_formula():
    rng = np.random.default_rng(0)
    frames = np.stack([textured_frame(70, 90, seed=s) for s in (1, 2)])
    frames = np.clip(frames + rng.normal(0, 9, frames.shape), 0, 255).astype(np.uint8)
    greys = grey_frames(frames)
    assert noise_sigma(greys) == pytest.approx(np.mean([immerkaer_reference(g) for g in greys]), rel=1e-12)
    assert noise_sigma(greys[:, :2]) is None


def smooth_image(kind: str) -> np.ndarray:
    y, x = np.mgrid[0:240, 0:320].astype(np.float64)
    if kind == "flat":
        return np.full(x.shape, 120.0)
    return 60 + 0.3 * x + 0.2 * y + 20 * np.sin(x / 40) * np.cos(y / 30)  # ramp plus a slow wave


@pytest.mark.parametrize("kind", ["flat", "smooth"])
@pytest.mark.parametrize("sigma", [2.0, 5.0, 10.0, 20.0])
def test_noise_sigma_recovers_added_gaussian_noise(kind, sigma):
    def as_frames(image):
        return np.repeat(np.clip(np.round(image), 0, 255).astype(np.uint8)[None, :, :, None], 3, axis=-1)

    noise = np.random.default_rng(int(sigma)).normal(0, sigma, (240, 320))
    assert noise_sigma(grey_frames(as_frames(smooth_image(kind) + noise))) == pytest.approx(sigma, rel=0.05)
    assert noise_sigma(grey_frames(as_frames(smooth_image(kind)))) < 0.5  # only the rounding to 8 bits


def test_demo_recipe_drops_the_noisy_samples_that_sharpness_ranks_first(demo_media):
    """Score the demo corpus as `curate demo` does and apply pipelines/demo.yaml's predicate: noisy samples
    have the highest sharpness of all, and only the noise_sigma clause drops them; watermarked sharp videos only the
    OCR clause."""
    folder, entries = demo_media
    motion, quality, ocr = MotionScorer(), QualityScorer(), OcrScorer()
    ocr.setup()
    rows = []
    for entry in entries:
        if entry["quality"] == "broken":
            continue
        frames = decode_media(os.path.join(folder, entry["name"]), entry["modality"], max_side=DECODE_MAX_SIDE)
        sample = {"frames": frames}
        rows.append({"name": entry["name"], "quality": entry["quality"], "modality": entry["modality"],
                     "exact_duplicate_of": None, "watermark": entry.get("watermark", False),
                     **motion.score_batch([sample])[0], **quality.score_batch([sample])[0], **ocr.score_batch([sample])[0]})
    db = duckdb.connect()
    db.register("scores", pa.Table.from_pylist(rows))
    where = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "..", "pipelines", "demo.yaml")))[
        "select"]["where"]
    assert "noise_sigma" in where

    def selected(predicate):
        return {name for (name,) in db.sql(f"SELECT name FROM scores WHERE {predicate}").fetchall()}

    noisy = {row["name"] for row in rows if row["quality"] == "noisy"}
    assert noisy and max(rows, key=lambda row: row[SHARPNESS])["quality"] == "noisy"
    assert not noisy & selected(where)
    assert noisy <= selected(where.replace("AND noise_sigma < 5", ""))
    marked = {row["name"] for row in rows if row["watermark"]}
    assert marked and not marked & selected(where)
    assert marked <= selected(where.replace("AND coalesce(ocr_static_text_area, ocr_text_area) < 0.05", ""))
    assert selected(where) == {row["name"] for row in rows if row["quality"] == "sharp" and not row["watermark"]}
