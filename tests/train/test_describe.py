"""`curate train --describe`: the plan's numbers, and its memory estimate against a measured CPU step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from curate.train import commands
from curate.train.describe import peak_step_bytes, plan
from curate.train.presets import build_unet
from curate.train.recipe import recipe_from_dict
from curate.train.unet3d import parameter_groups

RECIPE = {
    "name": "d", "stage": "finetune", "trainable": "spatial", "init_from": "runs/none",
    "model": {"preset": "tiny", "overrides": {"in_channels": 3, "out_channels": 3}},
    "data": {"frames": 4, "height": 16, "width": 16, "image_ratio": 0.25, "num_workers": 0},
    "train": {"steps": 10, "batch_size": 4, "micro_batch_size": 2, "checkpoint_every": 5},
}

# One fp32 forward + backward on CPU in a fresh process; prints the rise of the resident-set high-water mark.
# A fixed mmap threshold makes glibc return every large tensor's memory on free, so the mark is the step's own.
MEASURE = """
import json, sys, torch
import torch._dynamo  # imported on first use by checkpointing and AdamW: its modules are not the step's memory
from curate.train.describe import _step_inputs
from curate.train.model import build_model
from curate.train.recipe import recipe_from_dict
torch.set_num_threads(1)
recipe = recipe_from_dict(json.loads(sys.argv[1]))
def status(field):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field))
rises = []
for checkpointing in (False, True):
    model = build_model(recipe, device="cpu")
    model.set_gradient_checkpointing(checkpointing)
    model.train()
    args, kwargs = _step_inputs(recipe, recipe.data.frames, "cpu")
    open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
    base = status("VmRSS:")
    model(*args, **kwargs).float().pow(2).mean().backward()
    rises.append(status("VmHWM:") - base)
    del model, args, kwargs
print(json.dumps(rises))
"""


def test_describe_prints_the_plan_and_writes_nothing(tmp_path, mixed_dataset, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    out = tmp_path / "run"
    commands.train(recipe=path, data=[mixed_dataset], steps=None, out=out, workers=None, init_from=None, describe=True)
    text = capsys.readouterr().out
    assert not out.exists()
    unet = build_unet("tiny", in_channels=3, out_channels=3)
    named = dict(unet.named_parameters())
    sizes = {g: sum(named[n].numel() for n in names) for g, names in parameter_groups(unet).items()}
    assert f"spatial      {sizes['spatial'] / 1e6:>9,.2f}M  trains" in text
    assert f"temporal     {sizes['temporal'] / 1e6:>9,.2f}M  frozen" in text
    assert "name: d" in text and "micro-batch 2 x 2 accumulation x 1 worker(s)" in text
    assert "every 5 steps and at the end (2 files)" in text and "75% of batches videos" in text
    assert "preflight: 1 problem(s)" in text and "init_from: runs/none: not found" in text


@pytest.fixture(scope="module")
def recipe_plan():
    """plan() of RECIPE, traced once for the tests that read it (a trace is seconds of CPU)."""
    return plan(recipe_from_dict(RECIPE))


def test_plan_counts_and_step_flops(recipe_plan):
    numbers = recipe_plan
    unet = build_unet("tiny", in_channels=3, out_channels=3)
    groups = parameter_groups(unet)
    named = dict(unet.named_parameters())
    assert numbers["trainable"] == sum(named[n].numel() for n in groups["spatial"])
    assert numbers["accumulation"] == 2 and numbers["samples_per_step"] == 4
    assert numbers["flops_per_step_per_gpu"] == 2 * numbers["flops_per_micro_batch"] > 0


def test_memory_estimate_is_within_2x_of_a_measured_cpu_step():
    recipe = recipe_from_dict({**RECIPE, "stage": "base", "trainable": "all", "init_from": None})
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    run = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(recipe.to_dict())],
                         env=env, capture_output=True, text=True, check=True)
    measured = json.loads(run.stdout.splitlines()[-1])
    estimates = [peak_step_bytes(recipe, recipe.data.frames, checkpointing) for checkpointing in (False, True)]
    for estimate, rise in zip(estimates, measured):
        assert rise / 2 < estimate < rise * 2, (estimates, measured)
    assert estimates[1] < estimates[0] / 2  # checkpointing keeps a fraction of the activations


# A whole CPU training step from nothing: the model, AdamW (foreach) with its state, the EMA, one forward + backward,
# the optimizer step and the EMA update; prints the rise of the resident-set high-water mark.
MEASURE_STEP = """
import json, sys, torch
import torch._dynamo  # imported on first use by checkpointing and AdamW: its modules are not the step's memory
from curate.train.describe import _step_inputs
from curate.train.model import build_model
from curate.train.recipe import recipe_from_dict
torch.set_num_threads(1)
recipe = recipe_from_dict(json.loads(sys.argv[1]))
def status(field):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field))
args, kwargs = _step_inputs(recipe, recipe.data.frames, "cpu")
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS:")
model = build_model(recipe, device="cpu")
model.train()
trainable = [p for p in model.parameters() if p.requires_grad]
ema = [p.detach().float().clone() for p in trainable]
opt = torch.optim.AdamW(trainable, lr=1e-4, foreach=True)
model(*args, **kwargs).float().pow(2).mean().backward()
opt.step()
torch._foreach_lerp_(ema, [p.detach() for p in trainable], 0.1)
print(json.dumps(status("VmHWM:") - base))
"""


def test_whole_step_estimate_matches_a_measured_cpu_step():
    """Weights, AdamW state and its foreach temporaries, EMA and the step's activations + gradients: the plan's
    total (less the frozen encoders, which the measured step does not build) against the measured rise."""
    recipe = recipe_from_dict({**RECIPE, "stage": "base", "trainable": "all", "init_from": None})
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    run = subprocess.run([sys.executable, "-c", MEASURE_STEP, json.dumps(recipe.to_dict())],
                         env=env, capture_output=True, text=True, check=True)
    measured = json.loads(run.stdout.splitlines()[-1])
    numbers = plan(recipe)
    estimate = numbers["total"][False] - numbers["memory_static"]["frozen encoders (fp32)"]
    assert 0.8 < estimate / measured < 1.25, (estimate, measured)
    assert numbers["memory_static"]["AdamW step temporaries"] == numbers["trainable"] * 4  # one fp32 list


def test_gpu_plan_counts_autocast_copies_context_and_prices_encoders_at_fp32(recipe_plan):
    from curate.train.describe import CUDA_CONTEXT_BYTES, NCCL_BYTES

    cpu = recipe_plan
    gpu = plan(recipe_from_dict({**RECIPE, "train": {**RECIPE["train"], "use_gpu": True, "num_workers": 2,
                                                     "batch_size": 4, "micro_batch_size": 1}}))
    weights = gpu["memory_static"]["weights (fp32)"]
    assert gpu["memory_static"]["autocast bf16 weight copies"] == weights // 2
    assert gpu["memory_static"]["CUDA context (assumed)"] == CUDA_CONTEXT_BYTES
    assert gpu["memory_static"]["NCCL buffers (assumed)"] == NCCL_BYTES
    assert not {"autocast bf16 weight copies", "CUDA context (assumed)"} & set(cpu["memory_static"])
    unet = gpu["flops_per_micro_batch"] - gpu["encoder_flops_per_micro_batch"]
    expected = (unet / gpu["gpu_peak"][1] + gpu["encoder_flops_per_micro_batch"] / gpu["encoder_peak"][1]) * gpu["accumulation"]
    assert gpu["encoder_flops_per_micro_batch"] > 0 and abs(gpu["step_s_at_peak"] - expected) < 1e-12
    assert gpu["step_s_at_peak"] > gpu["flops_per_step_per_gpu"] / gpu["gpu_peak"][1]  # encoders cost more than at bf16
