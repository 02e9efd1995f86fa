"""Text-overlay rate of generated videos: the share of clips in which the ocr scorer reads text (EvalCrafter reports
an OCR score too), so a model that reproduces its training data's watermark shows it in numbers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from curate.eval.metric_stage import ClipMetric, MetricStage, Selection, run_metric
from curate.scoring.frames import frame_indices
from curate.scoring.ocr_score import (OCR_BOXES, OCR_STATIC_TEXT_AREA, OCR_TEXT, OCR_TEXT_AREA, OCR_TEXT_PLACE,
                                      READ_SCORE, STATIC_SHARE, OcrScorer)


@dataclass
class TextOverlay(ClipMetric):
    """OCR on `ocr_frames` frames spread evenly over each video's first `frames`."""

    name = "text_overlay"
    columns = (OCR_TEXT_AREA, OCR_STATIC_TEXT_AREA, OCR_BOXES, OCR_TEXT_PLACE, OCR_TEXT)
    frames: int = 16
    ocr_frames: int = 3
    ocr: dict = field(default_factory=dict)  # the scorer's provenance (model files and their hashes), after check()

    def check(self) -> None:
        if not self.ocr:
            scorer = OcrScorer()
            scorer.check_weights()
            self.ocr = scorer.provenance()

    def settings(self) -> dict:
        self.check()
        return {"frames": self.frames, "ocr_frames": self.ocr_frames, "positions": "uniform",
                "model": self.ocr.get("model"), "weights": self.ocr.get("weights")}

    def measurer(self):
        scorer = OcrScorer()
        scorer.setup()

        def measure(clips):
            return [scorer.score_frames(clip.frames[frame_indices(len(clip.frames), self.ocr_frames, "uniform")])
                    for clip in clips]

        return measure

    def summarise(self, sides: dict[str, Selection]) -> dict:
        (chosen,) = sides.values()
        rows = chosen.rows

        def mean(column):
            values = [row[column] for row in rows if row[column] is not None]
            return float(np.mean(values)) if values else None

        return {"metric": "text_overlay_rate",
                "value": float(np.mean([row[OCR_BOXES] > 0 for row in rows])) if rows else None,
                "text_area": mean(OCR_TEXT_AREA), "static_text_area": mean(OCR_STATIC_TEXT_AREA), **chosen.counts(),
                "protocol": {"frames": self.frames, "ocr_frames": self.ocr_frames, "positions": "uniform",
                             "measure": f"share of clips where the ocr scorer ({self.ocr.get('model')}) reads a text "
                                        f"box (recogniser confidence >= {READ_SCORE}) in any sampled frame; static "
                                        f"text: boxes covering the same pixels in >= {STATIC_SHARE:.2f} of them"}}


def text_overlay(gen_dir: str, *, frames: int = 16, ocr_frames: int = 3, max_clips: int | None = None,
                 workers: int = 2, decode_timeout: float = 60.0, out: str | None = None, force: bool = False,
                 address: str | None = None) -> dict:
    """Share of a folder's videos with text in any of `ocr_frames` frames spread evenly over their first `frames`
    (value), with the mean text and static-text areas, through the metric stage: per-clip rows in
    GEN_DIR/eval/text_overlay/, the result with its protocol and provenance in `out` (default
    GEN_DIR/eval/text_overlay.json)."""
    stage = MetricStage(TextOverlay(frames=frames, ocr_frames=ocr_frames), {"folder": gen_dir}, max_clips, out,
                        workers, decode_timeout)
    return run_metric(stage, force=force, address=address)
