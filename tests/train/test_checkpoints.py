"""Checkpoint files: atomic training checkpoints, the VideoCrafter2 three-prefix checkpoint, SD 2.1 weights with the key remap."""

from __future__ import annotations

import os

import pytest
import torch

from curate.train.checkpoints import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    load_sd21_unet,
    load_unet_state,
    read_state,
    read_videocrafter2,
    save_checkpoint,
    sd21_key_map,
)
from curate.train.presets import PRESETS, build_unet
from curate.train.unet3d import TemporalConvBlock, parameter_groups
from curate.train.attention import TemporalTransformer

IMAGE_MODEL = dict(temporal_conv=False, temporal_attention=False, addition_attention=False, fps_cond=False)


def _randomize(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)


def _inputs(batch=2, frames=4, size=8):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(batch, 4, frames, size, size, generator=generator)
    timesteps = torch.randint(0, 1000, (batch,), generator=generator)
    context = torch.randn(batch, 77, PRESETS["tiny"]["context_dim"], generator=generator)
    return x, timesteps, context


class NotPlainData:
    """A pickled class instance: what weights_only loading refuses."""


def test_training_checkpoint_round_trip_is_atomic(tmp_path):
    model = build_unet("tiny")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(*_inputs(batch=1, frames=2), fps=8).square().mean().backward()
    opt.step()
    checkpoint = {"model": model.state_dict(), "ema": None, "opt": opt.state_dict(), "step": 7,
                  "config": {"preset": "tiny", "lr": 1e-4, "trainable": ["spatial"]}}
    path = save_checkpoint(checkpoint_path(tmp_path, 7), checkpoint)
    assert os.listdir(path.parent) == ["step_00000007.pt"]  # no temp file left behind
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["config"] == checkpoint["config"]
    for key, value in checkpoint["model"].items():
        assert torch.equal(loaded["model"][key], value)
    restored = torch.optim.AdamW(build_unet("tiny").parameters(), lr=1e-4)
    restored.load_state_dict(loaded["opt"])
    assert latest_checkpoint(tmp_path) == path


def test_latest_checkpoint_ignores_temp_files_and_picks_the_highest_step(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for step in (5, 120, 40):
        save_checkpoint(checkpoint_path(tmp_path, step), {"model": {}, "ema": None, "opt": {}, "step": step, "config": {}})
    (tmp_path / "checkpoints" / ".step_00000999.pt.tmp-1").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 120)


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        save_checkpoint(tmp_path / "a.pt", {"model": {}})
    with pytest.raises(FileNotFoundError, match="not found"):
        read_state(tmp_path / "missing.ckpt")
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": {}, "ema": None, "opt": {}, "step": 1, "config": NotPlainData()}, unsafe)
    with pytest.raises(ValueError, match="trust_checkpoint=True"):
        load_checkpoint(unsafe)
    assert isinstance(load_checkpoint(unsafe, trust_checkpoint=True)["config"], NotPlainData)


def test_videocrafter2_checkpoint_splits_into_unet_vae_text_and_loads(tmp_path):
    source = build_unet("tiny")
    _randomize(source)
    full = {f"model.diffusion_model.{k}": v for k, v in source.state_dict().items()}
    full["first_stage_model.encoder.conv_in.weight"] = torch.ones(8, 3, 3, 3)
    full["cond_stage_model.model.positional_embedding"] = torch.ones(77, 16)
    full["betas"] = torch.linspace(0.00085, 0.012, 1000)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": full}, path)

    parts = read_videocrafter2(path)
    assert list(parts["vae"]) == ["encoder.conv_in.weight"]
    assert list(parts["text_encoder"]) == ["model.positional_embedding"]
    model = build_unet("tiny").eval()
    load_unet_state(model, parts["unet"])
    x, timesteps, context = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x, timesteps, context, fps=8), source.eval()(x, timesteps, context, fps=8))

    partial = dict(parts["unet"])
    partial.pop("init_attn.0.proj_out.weight")
    partial["stray.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing 1 keys: init_attn.0.proj_out.weight; unexpected 1 keys: stray"):
        load_unet_state(build_unet("tiny"), partial)


def test_sd21_key_map_at_the_real_preset():
    model = build_unet("videocrafter2_512", device="meta")
    assert sd21_key_map(model) == {
        "middle_block.2.": "middle_block.3.",
        "output_blocks.5.2.": "output_blocks.5.3.",
        "output_blocks.8.2.": "output_blocks.8.3.",
    }


def test_sd21_weights_give_the_image_model_on_every_frame(tmp_path):
    """A tiny SD-shaped image U-Net -> video U-Net: spatial weights remapped, temporal at zero output."""
    overrides = dict(attention_resolutions=[1, 2])  # attention beside an upsample, so output blocks shift too
    image_model = build_unet("tiny", **overrides, **IMAGE_MODEL).eval()
    _randomize(image_model)
    path = tmp_path / "v2-1_tiny.ckpt"
    torch.save({"state_dict": {f"model.diffusion_model.{k}": v for k, v in image_model.state_dict().items()}}, path)

    video_model = build_unet("tiny", **overrides).eval()
    remap = sd21_key_map(video_model)
    assert remap == {"middle_block.2.": "middle_block.3.", "output_blocks.1.2.": "output_blocks.1.3."}
    load_sd21_unet(video_model, read_state(path))
    assert torch.equal(video_model.state_dict()["output_blocks.1.3.conv.weight"],
                       image_model.state_dict()["output_blocks.1.2.conv.weight"])

    # Temporal modules start as the identity, and so does the fps embedding: frame by frame the
    # video model is the image model.
    for module in video_model.modules():
        if isinstance(module, TemporalTransformer):
            assert not module.proj_out.weight.any()
        if isinstance(module, TemporalConvBlock):
            assert not module.conv4[-1].weight.any()
    x, timesteps, context = _inputs()
    with torch.no_grad():
        video = video_model(x, timesteps, context, fps=8)
        image = image_model(x, timesteps, context)
    torch.testing.assert_close(video, image, atol=1e-6, rtol=1e-5)

    # One temporal training step leaves the spatial weights bitwise and moves away from the image model.
    spatial_before = {k: v.clone() for k, v in video_model.state_dict().items()
                      if k in set(parameter_groups(video_model)["spatial"])}
    video_model.set_trainable({"temporal"})
    optimizer = torch.optim.SGD([p for p in video_model.parameters() if p.requires_grad], lr=1.0)
    video_model(x, timesteps, context, fps=8).square().mean().backward()
    optimizer.step()
    assert all(torch.equal(video_model.state_dict()[k], v) for k, v in spatial_before.items())
    with torch.no_grad():
        assert not torch.allclose(video_model(x, timesteps, context, fps=8), image, atol=1e-6)


def test_sd21_loading_refuses_incomplete_or_foreign_weights():
    image_state = build_unet("tiny", **IMAGE_MODEL).state_dict()
    incomplete = {k: v for k, v in image_state.items() if not k.startswith("out.")}
    with pytest.raises(ValueError, match="missing 4 keys: out.0.weight"):
        load_sd21_unet(build_unet("tiny"), incomplete)
    foreign = dict(image_state, **{"label_emb.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected 1 keys: label_emb.0.weight"):
        load_sd21_unet(build_unet("tiny"), foreign)


def test_prune_keeps_the_newest_and_zero_keeps_all(tmp_path):
    from curate.train.checkpoints import prune_checkpoints

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step in (1, 2, 10, 3):
        (folder / f"step_{step:08d}.pt").write_bytes(b"x")
    (folder / ".step_00000011.pt.tmp-1").write_bytes(b"partial")  # a killed writer's temporary is not a checkpoint
    assert prune_checkpoints(tmp_path, 0) == []
    removed = prune_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in removed) == ["step_00000001.pt", "step_00000002.pt"]
    assert sorted(p.name for p in folder.glob("step_*.pt")) == ["step_00000003.pt", "step_00000010.pt"]
