"""A tiny trained run shared by the generate, grid and eval tests: 2 steps of tiny_f_base, a checkpoint each step."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
RECIPE = TESTS.parent / "pipelines" / "train" / "tiny_f_base.yaml"
_RUNS: dict[str, Path] = {}


def _write_dataset():
    # tests/train/conftest.py writes curated shards; conftest modules are not importable by name
    spec = importlib.util.spec_from_file_location("train_conftest", TESTS / "train" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_dataset


def tiny_run(tmp_path_factory) -> Path:
    """RUN/checkpoints/step_00000001.pt and step_00000002.pt (+ text_encoder.pt), trained once per session."""
    if "run" not in _RUNS:
        import torch

        from curate.train.loop import train
        from curate.train.recipe import load_recipe

        # 32 px wide: decord, the metrics' decoder, reads widths that are multiples of 32
        data = _write_dataset()(tmp_path_factory.mktemp("tiny_data"), videos=4, images=0, frames=32, size=(32, 32),
                                fps=8)
        recipe = load_recipe(RECIPE).replace(data={"dirs": [str(data)], "weights": [], "num_workers": 0},
                                             train={"steps": 2, "checkpoint_every": 1})
        run = tmp_path_factory.mktemp("tiny_run")
        threads = torch.get_num_threads()
        try:
            train(recipe, run)
        finally:
            torch.set_num_threads(threads)
        _RUNS["run"] = run
    return _RUNS["run"]
