"""Every script in scripts/ runs to the end at its tiny size (`--smoke`), so a rename in the package cannot silently
break a benchmark: the list is the directory's, a new script is covered without editing this file."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "scripts").glob("*.py"))
# scripts whose --smoke another test runs with stronger checks (running it twice would cost minutes)
ELSEWHERE = {"reproduce_toy.py": "test_reproduce_toy.py", "gpu_check.py": "scripts/test_gpu_check.py"}


def test_scripts_run_elsewhere_are_run_there():
    for script, test in ELSEWHERE.items():
        assert script in SCRIPTS and script in (ROOT / "tests" / test).read_text(), (script, test)


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s not in ELSEWHERE])
def test_script_runs_at_tiny_size(script, ray_address, tmp_path):
    # a script that uses Ray joins the session's (RAY_ADDRESS) instead of starting its own: a cold start is most of
    # a smoke run's time
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0", NO_ALBUMENTATIONS_UPDATE="1",
               PYTHONPATH=str(ROOT), RAY_ADDRESS=ray_address)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--smoke"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.strip(), f"{script} printed no result"
