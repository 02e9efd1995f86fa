"""scripts/reproduce_toy.py --smoke: every step runs (world on loopback -> download/score/select -> the seven
training stages in parallel processes -> samples -> metrics table and grid), and a rerun skips finished work."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from curate.demo import world
from curate.demo import world_metrics
from curate.train.recipe import load_recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("f_base", "p_base", "f_spa_dir", "f_spa_lora", "p_spa_dir", "f_spatemp_dir")


def run_smoke(out, ray_address):
    # the data pipeline joins the session's Ray (RAY_ADDRESS) instead of a cold start of its own
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0", NO_ALBUMENTATIONS_UPDATE="1",
               RAY_ADDRESS=ray_address)
    done = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "reproduce_toy.py"), "--smoke", "--out",
                           str(out)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.timeout(2 * 1200)  # two runs, each bounded by run_smoke's own timeout (the suite default is 600 s)
def test_smoke_runs_every_stage_and_resumes(ray_address, tmp_path):
    out = tmp_path / "toy"
    run_smoke(out, ray_address)
    result = json.loads((out / "table.json").read_text())
    assert set(result["rows"]) == {*VARIANTS, "real low-quality videos (train)", "real high-quality images (selected)"}
    for variant in VARIANTS:
        row = result["rows"][variant]
        assert row["color_accuracy"]["n"] == 2 and row["temporal_flickering"]["mean"] is not None
        # the table's numbers are the world metrics of the saved samples against their prompts (mean over seeds)
        samples = np.load(out / "samples" / f"{variant}.npy")  # [prompt, seed, T, H, W, 3]
        prompts = world.held_out_prompts()[: samples.shape[0]]
        per_seed = [[world_metrics.measure(samples[p, s], prompt) for p, prompt in enumerate(prompts)]
                    for s in range(samples.shape[1])]
        for column, key in (("color_accuracy", "color_ok"), ("edge_strength", "edge_strength")):
            expected = np.mean([np.mean([float(r[key]) for r in rows]) for rows in per_seed])
            assert row[column]["mean"] == pytest.approx(expected, abs=1e-9), (variant, column)
        log = (out / "runs" / variant / "log.jsonl").read_text().splitlines()
        assert json.loads(log[-1])["step"] == 2
    # the real low-quality videos are what the world says they are: every colour and direction right
    real = result["rows"]["real low-quality videos (train)"]
    assert real["color_accuracy"]["mean"] == 1.0 and real["direction_accuracy"]["mean"] == 1.0
    # the thresholds keep every high-quality image of the pool and no degraded one
    curation = result["curation"]
    assert curation["degraded_removed"] == curation["degraded_in_pool"] > 0
    assert curation["by_quality"]["high"]["kept"] == curation["by_quality"]["high"]["pool"] == curation["kept"]
    table = (out / "table.md").read_text()
    assert all(f"| {v} |" in table for v in VARIANTS)
    grid = Image.open(out / "grid.gif")
    assert 2 <= grid.n_frames <= 8 and grid.size[0] > 6 * 96  # GIF merges identical frames
    # every variant is sampled with the frame count its recipes train on (not the world's 8)
    frames = load_recipe(os.path.join(ROOT, "pipelines", "toy", "f_base.yaml")).data.frames
    assert all(np.load(out / "samples" / f"{v}.npy").shape[2] == frames for v in VARIANTS)

    again = run_smoke(out, ray_address)  # resumable: data, training and samples are all skipped
    assert "data: done before" in again
    assert all(f"train: {v} already at step 2" in again for v in ("image", *VARIANTS))
    assert "sample:" not in again
    assert json.loads((out / "table.json").read_text())["rows"] == result["rows"]
