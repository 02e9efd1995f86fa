"""The sampling plan: U-Net FLOPs scale with DDIM steps and guidance's batch, memory phases follow where the parts
sit, bf16 halves activations, and the released model in bf16 fits one 24 GB GPU (the claim --describe prints)."""

from __future__ import annotations

import pytest

from curate.train import sample_plan
from curate.train.sampler_options import SamplerOptions

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = "videocrafter2_tiny:unread.ckpt"  # nothing is read: the plan builds the layout on the meta device


def test_flops_follow_steps_and_guidance():
    base = sample_plan.plan(TINY, SamplerOptions(steps=10))
    double = sample_plan.plan(TINY, SamplerOptions(steps=20))
    unguided = sample_plan.plan(TINY, SamplerOptions(steps=10, guidance=1.0))
    assert double["flops_parts"]["U-Net"] == 2 * base["flops_parts"]["U-Net"] and base["unet_forwards"] == 10
    assert unguided["batch"] == 1 and unguided["flops_parts"]["U-Net"] * 2 == base["flops_parts"]["U-Net"]
    assert base["flops_parts"]["VAE decode"] > 0 and base["options"].frames == 4  # the model's default filled in


def test_memory_phases_and_precision():
    bf16, fp32 = sample_plan.plan(TINY, precision="bf16"), sample_plan.plan(TINY, precision="fp32")
    assert bf16["memory"]["text encoding"] == fp32["memory"]["text encoding"]  # the text tower runs in fp32
    assert bf16["memory"]["DDIM steps"] < fp32["memory"]["DDIM steps"]
    assert fp32["peak"] == max(fp32["memory"].values()) and fp32["seconds_at_peak"] > bf16["seconds_at_peak"]


def test_released_model_in_bf16_fits_one_24_gb_gpu():
    numbers = sample_plan.plan("videocrafter2:unread.ckpt")
    assert numbers["options"].height == 320 and numbers["options"].width == 512 and numbers["unet_forwards"] == 50
    assert 5.5 * 2**30 < numbers["peak"] < sample_plan.GPU_24GB  # above the U-Net's fp32 weights alone
    text = "\n".join(sample_plan.render("videocrafter2", numbers, 2990, 8))
    assert "fits one 24 GB GPU" in text and "estimate" in text and "8 GPU(s)" in text
