"""Text-overlay rate of generated videos: the share of clips in which the ocr scorer reads text (EvalCrafter reports
an OCR score too), so a model that reproduces its training data's watermark shows it in numbers."""

from __future__ import annotations

import os

import numpy as np

from curate.eval.clips import iter_clips
from curate.eval.metric_files import write_metric
from curate.scoring.frames import frame_indices
from curate.scoring.ocr_score import (OCR_BOXES, OCR_STATIC_TEXT_AREA, OCR_TEXT_AREA, READ_SCORE, STATIC_SHARE,
                                      OcrScorer)


def text_overlay(gen_dir: str, *, frames: int = 16, ocr_frames: int = 3, max_clips: int | None = None,
                 workers: int = 2, decode_timeout: float = 60.0, out: str | None = None) -> dict:
    """Share of a folder's videos with text in any of `ocr_frames` frames spread evenly over their first `frames`
    (value), with the mean text and static-text areas; written with its protocol to `out` (default
    GEN_DIR/eval/text_overlay.json) and returned; the per-clip rows go beside it (.jsonl)."""
    scorer = OcrScorer()
    scorer.setup()
    rows, skipped = [], []
    for clip in iter_clips(gen_dir, frames=frames, exact=False, limit=max_clips, workers=workers,
                           decode_timeout=decode_timeout):
        if clip.frames is None:
            skipped.append({"key": clip.key, "error": clip.error})
            continue
        picked = clip.frames[frame_indices(len(clip.frames), ocr_frames, "uniform")]
        rows.append({"key": clip.key, **scorer.score_frames(picked)})

    def mean(column):
        values = [row[column] for row in rows if row[column] is not None]
        return float(np.mean(values)) if values else None

    result = {
        "metric": "text_overlay_rate", "value": float(np.mean([row[OCR_BOXES] > 0 for row in rows])) if rows else None,
        "text_area": mean(OCR_TEXT_AREA), "static_text_area": mean(OCR_STATIC_TEXT_AREA), "clips": len(rows),
        "skipped": len(skipped), "skipped_examples": skipped[:5],
        "protocol": {"frames": frames, "ocr_frames": ocr_frames, "positions": "uniform", "max_clips": max_clips,
                     "measure": f"share of clips where the ocr scorer ({scorer.provenance()['model']}) reads a text "
                                f"box (recogniser confidence >= {READ_SCORE}) in any sampled frame; static text: "
                                f"boxes covering the same pixels in >= {STATIC_SHARE:.2f} of them"},
    }
    return write_metric(out or os.path.join(gen_dir, "eval", "text_overlay.json"), result, rows)

