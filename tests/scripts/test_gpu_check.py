"""scripts/gpu_check.py at tiny sizes on the CPU: every part runs and reports what a GPU run would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_every_part_at_tiny_size(tmp_path):
    out = tmp_path / "report.json"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--tiny", "--device", "cpu",
                          "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text())
    parts = report["parts"]
    assert report["device"]["device"] == "cpu" and set(parts) == {"resume", "clip_scoring", "train_step", "sampling"}
    assert not [name for name, part in parts.items() if "error" in part], parts
    assert parts["resume"]["ok"] and parts["resume"]["resumed_step"] == 3
    assert parts["clip_scoring"]["ours_images_per_s"] > 0 and parts["clip_scoring"]["bare_images_per_s"] > 0
    assert parts["train_step"]["seconds_per_step"] > 0 and parts["train_step"]["estimate_bytes"] > 0
    assert {"fp32_s_per_step", "tf32_s_per_step", "bf16_s_per_step"} <= set(parts["sampling"])
    assert parts["sampling"]["decoded_shape"] == [1, 3, 2, 16, 16]


def test_an_unknown_part_is_refused_naming_the_valid_ones(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--parts", "resume,bogus",
                          "--out", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "bogus" in run.stderr and "clip_scoring" in run.stderr
