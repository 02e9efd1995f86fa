"""Two Ray Train workers on CPU (gloo over 127.0.0.1) equal one process averaging the same two micro-batches;
a request the cluster cannot meet stops with a message instead of waiting forever."""

from __future__ import annotations

import json

import pytest
import torch

from ddp_reference import averaged_in_one_process

from curate.train import checkpoints
from curate.train.distributed import ResourcesUnavailable, train_distributed
from curate.train.loop import Trainer
from curate.train.recipe import recipe_from_dict


def two_worker_recipe(data_dir, **train):
    return recipe_from_dict({
        "name": "ddp", "stage": "base", "trainable": "all",
        "model": {"preset": "tiny", "overrides": {"in_channels": 3, "out_channels": 3}},
        "data": {"dirs": [str(data_dir)], "frames": 2, "height": 8, "width": 8, "image_ratio": 0.25, "num_workers": 0},
        "optim": {"lr": 1e-3},
        "train": {"steps": 3, "batch_size": 2, "micro_batch_size": 1, "num_workers": 2, "log_every": 1,
                  "checkpoint_every": 3, "cpu_threads": 1, **train},
    })


def test_two_workers_equal_one_process_with_the_same_global_batch(ray_local, mixed_dataset, tmp_path):
    recipe = two_worker_recipe(mixed_dataset)
    train_distributed(recipe, tmp_path / "ddp")
    ckpt = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(tmp_path / "ddp"))
    assert ckpt["step"] == 3 and ckpt["config"]["recipe"]["train"]["num_workers"] == 2
    log = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3]  # rank 0 alone logs

    reference = averaged_in_one_process(recipe, tmp_path / "ref", steps=3)
    initial = Trainer(recipe, tmp_path / "initial", world_size=2).model.state_dict()
    moved = 0
    for name, value in reference.model.state_dict().items():
        torch.testing.assert_close(ckpt["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)
        moved += not torch.equal(value, initial[name])
    assert moved > 0.9 * len(initial)  # the comparison is about trained weights, not the initial ones
    for name, value in reference.ema.items():
        torch.testing.assert_close(ckpt["ema"][name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_workers_the_cluster_cannot_place_stop_with_a_message(ray_local, mixed_dataset, tmp_path):
    cpus = int(ray_local.cluster_resources()["CPU"])
    recipe = two_worker_recipe(mixed_dataset, num_workers=cpus + 1, batch_size=cpus + 1)
    with pytest.raises(ResourcesUnavailable, match=rf"could not start {cpus + 1} worker\(s\) x \(1 CPU\) within 1 x 2 s"):
        train_distributed(recipe, tmp_path / "run", start_timeout_s=2, start_attempts=1)
    assert checkpoints.latest_checkpoint(tmp_path / "run") is None
