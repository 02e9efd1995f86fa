"""The metric stage's contract on a counting metric (every model load and every clip measured is logged by the Ray
worker that did it): a rerun measures and loads nothing, changed settings or input are refused by name and --force
starts over, a corrupt clip is a failure row, a killed run's rerun measures only what is missing, each clip once,
and max_clips measures further shards only when the first ones fall short."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from eval_media import flat_video, write_folder

from curate.eval.metric_stage import ClipMetric, MetricStage, Selection, manifests_fingerprint, run_metric
from curate.provenance import ProvenanceMismatch

# Ray workers cannot import this test module: its metric travels by value.
from ray import cloudpickle  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass
class MeanBrightness(ClipMetric):
    """Mean pixel value / 255 of each clip, stored in the `contrast` column; logs loads and clips to `log`."""

    name = "brightness"
    columns = ("contrast",)
    log: str = ""
    frames: int = 4
    scale: float = 1.0

    def settings(self) -> dict:
        return {"frames": self.frames, "scale": self.scale}

    def record(self) -> dict:
        return {"model": {"sha256": "f" * 64}}

    def measurer(self):
        with open(self.log, "a") as f:
            f.write("load\n")

        def measure(clips):
            with open(self.log, "a") as f:
                f.writelines(f"clip {clip.key}\n" for clip in clips)
            return [{"contrast": self.scale * float(clip.frames.mean()) / 255} for clip in clips]

        return measure

    def summarise(self, sides: dict[str, Selection]) -> dict:
        (chosen,) = sides.values()
        values = [row["contrast"] for row in chosen.rows]
        return {"metric": self.name, "value": float(np.mean(values)) if values else None, **chosen.counts(),
                "protocol": self.settings()}


def events(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def folder(tmp_path) -> Path:
    """Two shards: three clips (one corrupt) and two clips."""
    root = tmp_path / "gen"
    write_folder(root, [{"key": "a", "frames": flat_video(40)}, {"key": "corrupt", "media": b"not a video at all"},
                        {"key": "b", "frames": flat_video(80)}])
    write_folder(root, [{"key": "c", "frames": flat_video(120)}, {"key": "d", "frames": flat_video(160)}], "00001")
    return root


def measure(root, log, force=False, max_clips=None, **settings) -> dict:
    stage = MetricStage(MeanBrightness(log=str(log), **settings), {"folder": str(root)}, max_clips, workers=1)
    return run_metric(stage, force=force)


def tables(root: Path) -> dict[str, int]:
    folder = root / "eval" / "brightness"
    return {name: os.stat(folder / name).st_mtime_ns for name in sorted(os.listdir(folder)) if name.endswith(".parquet")}


def rows(root: Path) -> list[dict]:
    folder = root / "eval" / "brightness"
    return [r for name in sorted(os.listdir(folder)) if name.endswith(".parquet")
            for r in pq.read_table(folder / name).to_pylist()]


def test_resume_measures_nothing_and_returns_the_recorded_value(ray_local, folder, tmp_path):
    log = tmp_path / "log"
    first = measure(folder, log)
    assert first["measured_shards"] == 2 and not first["resumed"] and first["clips"] == 4
    assert sorted(e for e in events(log) if e.startswith("clip")) == ["clip a", "clip b", "clip c", "clip d"]
    # the corrupt clip is a failure row; the others are measured
    assert first["skipped"] == 1 and first["skipped_examples"][0]["key"] == "corrupt"
    assert first["value"] == pytest.approx(np.mean([40, 80, 120, 160]) / 255, abs=0.01)
    written = tables(folder)
    log.unlink()

    again = measure(folder, log)
    assert again["resumed"] and again["measured_shards"] == 0 and again["value"] == first["value"]
    assert events(log) == []  # no model load, no clip measured
    assert tables(folder) == written


def test_provenance_beside_the_value(ray_local, folder, tmp_path):
    import json

    result = measure(folder, tmp_path / "log")
    written = json.loads((folder / "eval" / "brightness.json").read_text())
    assert written["value"] == result["value"]
    record = written["provenance"]
    assert record["stage"] == "brightness" and record["config"] == {"frames": 4, "scale": 1.0, "metric": "brightness"}
    assert record["input_fingerprint"] == {"folder": manifests_fingerprint(str(folder))}
    assert record["model"] == {"sha256": "f" * 64} and record["versions"]["curate"]
    assert record["folders"] == {"folder": str(folder)}
    stored = json.loads((folder / "eval" / "brightness" / "_provenance.json").read_text())
    assert stored["complete"] is True and stored["config"] == record["config"]


def test_changed_settings_or_input_are_refused_by_name_then_forced(ray_local, folder, tmp_path):
    log = tmp_path / "log"
    measure(folder, log)
    written = tables(folder)
    with pytest.raises(ProvenanceMismatch, match=r"\['scale'\] \(scale: 1.0 -> 2.0\)"):
        measure(folder, log, scale=2.0)
    assert tables(folder) == written  # refused before any write
    log.unlink()
    forced = measure(folder, log, force=True, scale=2.0)
    assert forced["measured_shards"] == 2 and events(log).count("load") >= 1
    assert forced["value"] == pytest.approx(2 * np.mean([40, 80, 120, 160]) / 255, abs=0.02)

    write_folder(folder, [{"key": "e", "frames": flat_video(200)}], "00002")  # the folder changed
    with pytest.raises(ProvenanceMismatch, match="input differs .*: folder"):
        measure(folder, log, scale=2.0)


def test_a_killed_run_then_a_rerun_gives_every_clip_once(ray_local, folder, tmp_path):
    log = tmp_path / "log"
    first = measure(folder, log)
    # what a kill leaves: shard 00001's table never published, only its temporary
    table = folder / "eval" / "brightness" / "00001.parquet"
    os.replace(table, folder / "eval" / "brightness" / ".00001.parquet.tmp4242")
    log.unlink()
    again = measure(folder, log)
    assert again["measured_shards"] == 1 and sorted(e for e in events(log) if e.startswith("clip")) == ["clip c",
                                                                                                        "clip d"]
    keys = [r["key"] for r in rows(folder)]
    assert sorted(keys) == ["a", "b", "c", "corrupt", "d"] and len(keys) == len(set(keys))
    assert again["value"] == first["value"] and not any(n.startswith(".") for n in os.listdir(table.parent))


def test_max_clips_measures_only_the_shards_it_needs(ray_local, folder, tmp_path):
    import shutil

    log = tmp_path / "log"
    two = measure(folder, log, max_clips=2)
    assert two["measured_shards"] == 1 and two["clips"] == 2 and two["protocol"]["max_clips"] == 2
    # three clips: the first shard holds two decodable ones, so the second is measured, without any refusal
    three = measure(folder, log, max_clips=3)
    assert three["measured_shards"] == 1 and three["clips"] == 3 and three["skipped"] == 1
    assert [e for e in events(log) if e.startswith("clip")] == ["clip a", "clip b", "clip c", "clip d"]
    # from scratch, the corrupt clip leaves the first shard one short: a second pass measures the next one
    fresh = tmp_path / "fresh"
    shutil.copytree(folder / "shards", fresh / "shards")
    assert measure(fresh, tmp_path / "log2", max_clips=3)["clips"] == 3
    assert len([e for e in events(tmp_path / "log2") if e.startswith("clip")]) == 4
