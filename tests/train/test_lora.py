"""LoRA: adapters only on the chosen group's transformer projections, base weights untouched, merge exact."""

from __future__ import annotations

import pytest
import torch

from curate.train.lora import LoRALinear, add_lora, lora_parameters, merge_lora_state
from curate.train.presets import build_unet
from curate.train.unet3d import parameter_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_unet():
    """A tiny U-Net whose zero-initialised output layers are perturbed, so every weight gets gradient."""
    torch.manual_seed(0)
    model = build_unet("tiny", in_channels=3, out_channels=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 4, 8, 8, generator=g), torch.tensor([10, 500]), torch.randn(2, 5, 64, generator=g), torch.tensor([8.0, 4.0])


def test_adapters_go_only_into_the_chosen_group():
    for group in ("spatial", "temporal"):
        model = tiny_unet()
        targets = add_lora(model, {group}, rank=2)
        groups = parameter_groups(model)
        assert targets and all(f"{t}.lora_A" in groups[group] for t in targets)
        assert {n for n, p in model.named_parameters() if p.requires_grad} == set(lora_parameters(model))
        names = {n.rsplit(".", 1)[-1] for n in targets}
        assert {"to_q", "to_k", "to_v"} <= names  # attention projections are adapted


def test_training_leaves_base_weights_bitwise_and_merged_equals_unmerged():
    model = tiny_unet()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    add_lora(model, {"spatial", "temporal"}, rank=4, alpha=8)
    x, t, ctx, fps = inputs()
    opt = torch.optim.AdamW(lora_parameters(model).values(), lr=1e-2)
    for _ in range(3):
        loss = (model(x, t, ctx, fps) - x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in base.items())  # names and values of the base unchanged
    assert any(m.lora_B.abs().sum() > 0 for m in model.modules() if isinstance(m, LoRALinear))

    with torch.no_grad():  # eval: the temporal convs' dropout is off
        adapted = model.eval()(x, t, ctx, fps)
        plain = tiny_unet().eval()
        plain.load_state_dict(merge_lora_state(state, scale=8 / 4))
        merged = plain(x, t, ctx, fps)
        original = tiny_unet().eval()(x, t, ctx, fps)
    assert torch.allclose(adapted, merged, atol=1e-5)
    assert not torch.allclose(adapted, original, atol=1e-4)
