"""The ocr scorer: pure box geometry, then the real PP-OCRv4 models (shipped in the wheel) on frames with known text."""

import numpy as np
import pytest

from curate.demo.text_frames import CLEAN_KINDS, TEXT_KINDS, clean_frame, overlay_clip, text_frame
from curate.scoring import ocr_score
from curate.scoring.ocr_score import (OCR_BOXES, OCR_ERROR, OCR_STATIC_TEXT_AREA, OCR_TEXT, OCR_TEXT_AREA,
                                      OCR_TEXT_PLACE, OcrScorer, place_of, static_mask, summarise, text_mask)
from curate.scoring.scorer_set import ScorerSet


def box(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def test_text_mask_is_the_union_of_boxes():
    mask = text_mask([box(0, 0, 10, 10), box(5, 5, 15, 15)], 20, 20)
    assert mask.shape == (20, 20) and mask.sum() == 11 * 11 * 2 - 6 * 6  # pixel 10 is inside: 11 px a side
    assert not text_mask([], 20, 20).any()


def test_static_mask_needs_two_thirds_of_the_frames():
    masks = np.zeros((3, 4, 4), bool)
    masks[:, 0, 0] = True  # in every frame
    masks[:2, 1, 1] = True  # in two of three
    masks[0, 2, 2] = True  # in one
    static = static_mask(masks)
    assert static[0, 0] and static[1, 1] and not static[2, 2]
    assert static_mask(masks[:1]) is None  # one frame (an image): undefined


def test_place_of_corners_bands_and_middle():
    assert place_of(box(85, 2, 98, 8), 100, 100) == "corner"
    assert place_of(box(2, 90, 15, 98), 100, 100) == "corner"
    assert place_of(box(30, 88, 70, 96), 100, 100) == "bottom"
    assert place_of(box(30, 2, 70, 10), 100, 100) == "top"
    assert place_of(box(30, 40, 70, 60), 100, 100) == "middle"


def test_summarise_static_watermark_vs_moving_word():
    mark = box(80, 85, 98, 95)
    moving = [[mark, box(10 + 30 * t, 40, 30 + 30 * t, 50)] for t in range(3)]
    row = summarise(moving, 100, 100)
    assert row[OCR_BOXES] == 2
    assert row[OCR_STATIC_TEXT_AREA] == pytest.approx(text_mask([mark], 100, 100).mean())
    assert row[OCR_TEXT_AREA] > row[OCR_STATIC_TEXT_AREA]
    assert row[OCR_TEXT_PLACE] == "corner"  # the static text's place, although the moving word is larger
    empty = summarise([[], []], 100, 100)
    assert empty == {OCR_TEXT_AREA: 0.0, OCR_STATIC_TEXT_AREA: 0.0, OCR_BOXES: 0, OCR_TEXT_PLACE: None}


@pytest.fixture(scope="module")
def scorer():
    found = OcrScorer()
    found.check_weights()
    found.setup()  # the models inside the installed wheel: no network (tests run offline)
    return found


EXPECTED_PLACE = {"middle_word": "middle", "subtitle": "bottom", "corner_mark": "corner"}
EXPECTED_WORD = {"middle_word": "STOCK", "subtitle": "tomorrow", "corner_mark": "NEWS"}


def test_known_text_is_found_and_clean_frames_are_not(scorer):
    """Recall and precision 1.0 on this set, place and words right (README's table is the larger run of this)."""
    for kind in TEXT_KINDS:
        for seed in range(2):
            row = scorer.score_frames(text_frame(kind, seed)[None])
            assert row[OCR_BOXES] >= 1 and row[OCR_TEXT_AREA] > 0.005, (kind, seed, row)
            assert row[OCR_TEXT_PLACE] == EXPECTED_PLACE[kind], (kind, seed, row)
            if seed == 0:
                assert EXPECTED_WORD[kind] in row[OCR_TEXT], row
    for kind in CLEAN_KINDS:
        row = scorer.score_frames(clean_frame(kind, 0)[None])
        assert row[OCR_BOXES] == 0 and row[OCR_TEXT_AREA] == 0.0 and row[OCR_TEXT] is None, (kind, row)


def test_static_overlay_vs_moving_text(scorer):
    static = scorer.score_frames(overlay_clip(static=True))
    moving = scorer.score_frames(overlay_clip(static=False))
    assert static[OCR_STATIC_TEXT_AREA] > 0.02 and static[OCR_TEXT_PLACE] == "corner"
    assert "WATERMARK" in static[OCR_TEXT]
    assert moving[OCR_TEXT_AREA] > 0.02 and moving[OCR_STATIC_TEXT_AREA] < 0.002


def test_scorer_set_runs_ocr_with_a_row_per_sample(scorer):
    scorers = ScorerSet(["ocr"])
    scorers.scorers[0].engine = scorer.engine  # the loaded models (setup is what the fixture did)
    rows = scorers.score_batch([{"key": "a", "frames": text_frame("subtitle", 0)[None]},
                                {"key": "b", "frames": None, "decode_error": "corrupt"}])
    assert [r["key"] for r in rows] == ["a", "b"]
    assert rows[0][OCR_BOXES] == 1 and rows[0]["score_error"] is None
    assert rows[1][OCR_ERROR] == "corrupt" and rows[1][OCR_TEXT_AREA] is None
    assert rows[1]["score_error"] == "ocr_error: corrupt"


def test_detection_runs_at_the_capped_size_with_boxes_in_frame_pixels(scorer):
    frame = text_frame("subtitle", 0)
    big = np.repeat(np.repeat(frame, 2, axis=0), 2, axis=1)  # 640x360, detected at 512 px
    small, large = scorer.detect(frame), scorer.detect(big)
    assert len(small) == len(large) == 1
    np.testing.assert_allclose(large[0], 2 * small[0], atol=8)


def test_provenance_names_the_model_files(scorer):
    record = scorer.provenance()
    assert record["scorer"] == "ocr" and set(record["weights"]) == {"det", "rec"}
    assert all(len(w["sha256"]) == 64 and "PP-OCRv4" in w["file"] for w in record["weights"].values())
    assert set(ocr_score.model_paths()) == {"det", "rec"}
