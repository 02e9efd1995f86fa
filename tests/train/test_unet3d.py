"""UNet3D: checkpoint layout, type-based parameter groups, and the same function as the official VideoCrafter2 U-Net."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from official_unet import OfficialUNet

from curate.train.attention import GEGLU, CrossAttention
from curate.train.presets import PRESETS, build_unet, unet_params
from curate.train.unet3d import TemporalConvBlock, parameter_groups, set_trainable, trainable_groups

LAYOUT = Path("/work/shared/reference/videocrafter2_checkpoint_layout.tsv")
UNET_PREFIX = "model.diffusion_model."


def _released_layout() -> dict[str, tuple[str, str]]:
    if not LAYOUT.is_file():
        pytest.skip(f"reference layout {LAYOUT} not present")
    layout = {}
    for line in LAYOUT.read_text().splitlines():
        if line.startswith(UNET_PREFIX):
            key, shape, group = line.split("\t")
            layout[key[len(UNET_PREFIX):]] = (shape, group)
    return layout


def _randomize(model, seed=0, std=0.05):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)


def _inputs(params, batch=2, frames=8, size=8, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, params["in_channels"], frames, size, size, generator=generator)
    timesteps = torch.randint(0, 1000, (batch,), generator=generator)
    context = torch.randn(batch, 77, params["context_dim"], generator=generator)
    return x, timesteps, context


def test_real_preset_has_the_released_checkpoint_layout():
    layout = _released_layout()
    model = build_unet("videocrafter2_512", device="meta")
    ours = {key: "x".join(map(str, value.shape)) for key, value in model.state_dict().items()}
    assert ours == {key: shape for key, (shape, _) in layout.items()}
    assert list(ours) == list(layout)  # same order as the official module tree


def test_groups_found_by_module_type_match_the_layout():
    layout = _released_layout()
    model = build_unet("videocrafter2_512", device="meta")
    groups = parameter_groups(model)
    assert {key: group for group, keys in groups.items() for key in keys} == {
        key: group for key, (_, group) in layout.items()}
    assert {group: len(keys) for group, keys in groups.items()} == {"spatial": 686, "temporal": 794, "fps": 4}
    params = dict(model.named_parameters())
    millions = {group: sum(params[k].numel() for k in keys) / 1e6 for group, keys in groups.items()}
    assert round(millions["spatial"], 1) == 865.9
    assert round(millions["temporal"], 1) == 545.3
    assert round(millions["fps"], 2) == 2.05
    # Most temporal keys do not say so: the classification cannot come from names.
    assert sum("temp" not in key for key in groups["temporal"]) > 500


def test_set_trainable_freezes_every_other_group():
    model = build_unet("tiny")
    groups = parameter_groups(model)
    params = dict(model.named_parameters())
    model.set_trainable({"temporal", "fps"})
    assert all(params[k].requires_grad for k in groups["temporal"] + groups["fps"])
    assert not any(params[k].requires_grad for k in groups["spatial"])
    set_trainable(model, {"spatial"})
    assert all(params[k].requires_grad for k in groups["spatial"])
    assert not any(params[k].requires_grad for k in groups["temporal"] + groups["fps"])
    with pytest.raises(ValueError, match="unknown parameter groups"):
        set_trainable(model, {"motion"})


def test_trainable_groups_place_the_fps_embedding():
    assert trainable_groups("all") == {"spatial", "temporal", "fps"}
    assert trainable_groups("temporal") == {"temporal", "fps"}
    assert trainable_groups("spatial") == {"spatial"}
    assert trainable_groups("spatial", fps_group="spatial") == {"spatial", "fps"}
    assert trainable_groups("temporal", fps_group="none") == {"temporal"}
    with pytest.raises(ValueError):
        trainable_groups("lora")


def test_tiny_forward_shape_and_determinism():
    torch.manual_seed(0)
    model = build_unet("tiny").eval()
    _randomize(model)
    x, timesteps, context = _inputs(PRESETS["tiny"])
    with torch.no_grad():
        first = model(x, timesteps, context, fps=8)
        second = model(x, timesteps, context, fps=8)
        other_fps = model(x, timesteps, context, fps=24)
    assert first.shape == x.shape
    assert torch.equal(first, second)
    assert not torch.allclose(first, other_fps)


@pytest.mark.parametrize("overrides", [
    {},
    {"use_linear": False, "use_relative_position": True, "use_causal_attention": True},
    {"temporal_selfatt_only": False, "attention_resolutions": [1, 2], "num_res_blocks": 2, "fps_cond": False},
], ids=["tiny", "conv-proj+relpos+causal", "temporal-cross-attn"])
def test_same_function_as_the_official_unet(overrides):
    """Same state dict, same outputs and gradients as the official einsum/Conv3d computation."""
    params = unet_params("tiny", **overrides)
    torch.manual_seed(0)
    ours = build_unet("tiny", **overrides).eval()
    official = OfficialUNet(**params).eval()
    _randomize(ours)
    official.load_state_dict(ours.state_dict())
    x, timesteps, context = _inputs(params)
    fps = torch.tensor([8, 24])
    out_ours = ours(x, timesteps, context, fps=fps)
    out_official = official(x, timesteps, context, fps=fps)
    torch.testing.assert_close(out_ours, out_official, atol=1e-5, rtol=1e-4)
    out_ours.square().mean().backward()
    out_official.square().mean().backward()
    official_grads = dict(official.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, official_grads[name].grad, atol=1e-5, rtol=1e-3, msg=name)


def _einsum_attention(attn: CrossAttention, x, context=None):
    """Reference: the official CrossAttention math, full score matrix via einsum."""
    context = x if context is None else context
    q, k, v = attn.to_q(x), attn.to_k(context), attn.to_v(context)
    q, k, v = (t.unflatten(-1, (attn.heads, -1)) for t in (q, k, v))
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * attn.dim_head**-0.5
    out = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v).flatten(2)
    return attn.to_out(out)


def test_sdpa_attention_equals_einsum_attention():
    torch.manual_seed(0)
    cross, own = CrossAttention(32, context_dim=24, heads=4, dim_head=8), CrossAttention(32, heads=4, dim_head=8)
    x, context = torch.randn(3, 50, 32), torch.randn(3, 7, 24)
    torch.testing.assert_close(cross(x, context), _einsum_attention(cross, x, context), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(own(x), _einsum_attention(own, x), atol=1e-5, rtol=1e-4)


def test_geglu_half_projections_equal_the_chunked_projection():
    """GEGLU's two half-width matmuls compute the official chunk of one projection (outputs and gradients)."""
    torch.manual_seed(0)
    geglu = GEGLU(16, 24)
    x = torch.randn(5, 7, 16, requires_grad=True)
    value, gate = geglu.proj(x).chunk(2, dim=-1)
    expected = value * F.gelu(gate)
    out = geglu(x)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, geglu.proj.weight, geglu.proj.bias), grad_out)
    expected_grads = torch.autograd.grad(expected, (x, geglu.proj.weight, geglu.proj.bias), grad_out)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, atol=1e-6, rtol=1e-5)


def test_temporal_conv_equals_conv3d():
    """The (3,1) conv over [B, C, T, HW] is the checkpoint's Conv3d(3,1,1) on [B, C, T, H, W]."""
    torch.manual_seed(0)
    block = TemporalConvBlock(32).eval()
    _randomize(block, std=0.1)
    batch, frames = 2, 5
    x = torch.randn(batch * frames, 32, 6, 4)
    h = x.view(batch, frames, 32, 6, 4).transpose(1, 2)  # [B, C, T, H, W]
    identity = h
    for layer in (block.conv1, block.conv2, block.conv3, block.conv4):
        norm, conv = layer[0], layer[-1]
        h = F.conv3d(F.silu(norm(h)), conv.weight, conv.bias, padding=(1, 0, 0))
    expected = (h + identity).transpose(1, 2).reshape_as(x)
    torch.testing.assert_close(block(x, frames), expected, atol=1e-5, rtol=1e-4)


def test_temporal_false_runs_each_frame_through_the_image_model():
    torch.manual_seed(0)
    model = build_unet("tiny").eval()
    _randomize(model)
    x, timesteps, context = _inputs(PRESETS["tiny"], frames=4)
    with torch.no_grad():
        video = model(x, timesteps, context, temporal=False)
        single = model(x[:, :, 2:3], timesteps, context, temporal=False)
        with_temporal = model(x, timesteps, context)
    torch.testing.assert_close(video[:, :, 2:3], single, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(video, with_temporal)


def test_gradient_checkpointing_keeps_outputs_and_gradients():
    torch.manual_seed(0)
    model = build_unet("tiny").eval()
    _randomize(model)
    x, timesteps, context = _inputs(PRESETS["tiny"], batch=1, frames=4)

    def grads(checkpointing):
        model.zero_grad()
        model.set_gradient_checkpointing(checkpointing)
        model.train()  # checkpointing is a training-time switch; dropout-free parts compared below
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.eval()
        loss = model(x, timesteps, context, fps=8).square().mean()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss_plain, grads_plain = grads(False)
    loss_ckpt, grads_ckpt = grads(True)
    torch.testing.assert_close(loss_ckpt, loss_plain)
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_ckpt[name], grad, msg=name)


def test_timestep_embedding_is_cosine_then_sine():
    from curate.train.unet3d import timestep_embedding

    emb = timestep_embedding(torch.tensor([0.0, 10.0]), 6)
    assert torch.equal(emb[0], torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]))
    assert math.isclose(emb[1, 3].item(), math.sin(10.0), rel_tol=1e-6)
