"""The text-overlay rate of generated videos: clips with a watermark or moving text count, clean ones do not."""

import json

import numpy as np
import pyarrow.parquet as pq

from curate.demo.text_frames import background, overlay_clip
from curate.eval.run import EvalRecipe, measure
from curate.eval.text_overlay import text_overlay


def test_text_overlay_rate_and_its_eval_row(ray_local, folder_factory):
    clean = np.stack([np.roll(background(5), 12 * t, axis=1) for t in range(6)])
    gen = folder_factory("gen", [{"key": "marked", "frames": overlay_clip(static=True, frames=6), "caption": "a"},
                                 {"key": "moving", "frames": overlay_clip(static=False, frames=3), "caption": "b"},
                                 {"key": "clean", "frames": clean, "caption": "c"}])
    result = text_overlay(gen, frames=6)
    assert result["value"] == 2 / 3 and result["clips"] == 3 and result["skipped"] == 0
    rows = pq.read_table(f"{gen}/eval/text_overlay/00000.parquet").to_pylist()
    assert {r["key"]: r["ocr_boxes"] > 0 for r in rows} == {"marked": True, "moving": True, "clean": False}
    static = {r["key"]: r["ocr_static_text_area"] for r in rows}
    assert static["marked"] > 0.02 and static["moving"] < 0.002 and static["clean"] == 0.0
    assert 0 < result["static_text_area"] < result["text_area"]

    recipe = EvalRecipe(name="x", prompts=["a"])
    recipe.metrics.clip_model, recipe.metrics.fvd, recipe.metrics.quality_frames = None, False, 6
    (row,) = [r for r in measure(gen, {"checkpoint": "c"}, recipe, None, echo=lambda _: None)
              if r["metric"] == "text_overlay_rate"]
    assert row["status"] == "ok" and row["value"] == 2 / 3
    assert json.loads(row["counts"]) == {"clips": 3, "skipped": 0} and json.loads(row["protocol"])["ocr_frames"] == 3
