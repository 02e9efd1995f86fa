"""Two Ray Train workers on CPU (gloo over 127.0.0.1) train a tiny model and rank 0 checkpoints it."""

from __future__ import annotations

import json

import torch

from curate.train import checkpoints
from curate.train.distributed import train_distributed
from curate.train.recipe import recipe_from_dict


def test_two_cpu_workers_train_and_checkpoint(mixed_dataset, tmp_path):
    recipe = recipe_from_dict({
        "name": "ddp", "stage": "base", "trainable": "all",
        "model": {"preset": "tiny", "overrides": {"in_channels": 3, "out_channels": 3}},
        "data": {"dirs": [str(mixed_dataset)], "frames": 2, "height": 8, "width": 8, "image_ratio": 0.25, "num_workers": 0},
        "optim": {"lr": 1e-3},
        "train": {"steps": 2, "batch_size": 2, "micro_batch_size": 1, "num_workers": 2, "log_every": 1, "checkpoint_every": 2},
    })
    train_distributed(recipe, tmp_path, num_cpus=2)
    ckpt = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(tmp_path))
    assert ckpt["step"] == 2 and ckpt["config"]["recipe"]["train"]["num_workers"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2]  # rank 0 alone logs
