"""U-Net size presets (architectures as data) and the one factory that builds a U-Net from a preset."""

from __future__ import annotations

from typing import Any

import torch

from curate.train.unet3d import UNet3D

# configs/inference_t2v_512_v2.0.yaml of the official release (unet_config.params);
# latents 4 x 40 x 64 for 320x512 video, OpenCLIP ViT-H-14 context (1024-d).
VIDEOCRAFTER2_512: dict[str, Any] = dict(
    in_channels=4,
    out_channels=4,
    model_channels=320,
    attention_resolutions=[4, 2, 1],
    num_res_blocks=2,
    channel_mult=[1, 2, 4, 4],
    num_head_channels=64,
    transformer_depth=1,
    context_dim=1024,
    use_linear=True,
    use_checkpoint=False,
    temporal_conv=True,
    temporal_attention=True,
    temporal_selfatt_only=True,
    use_relative_position=False,
    use_causal_attention=False,
    temporal_length=16,
    addition_attention=True,
    fps_cond=True,
    dropout=0.0,
)

PRESETS: dict[str, dict[str, Any]] = {
    "videocrafter2_512": VIDEOCRAFTER2_512,
    # Same block structure at CPU scale, for tests, the demo and the speed benchmark: 32 channels,
    # one attention level at the full resolution (16x16 latents), 8 frames, a 64-d text context.
    "tiny": dict(VIDEOCRAFTER2_512, model_channels=32, attention_resolutions=[1], num_res_blocks=1,
                 channel_mult=[1, 2], num_head_channels=16, context_dim=64, temporal_length=8),
}


def unet_params(preset_name: str, **overrides: Any) -> dict[str, Any]:
    """The preset's `unet_config.params`, with overrides applied (unknown keys are refused)."""
    if preset_name not in PRESETS:
        raise KeyError(f"unknown U-Net preset {preset_name!r}; choose from {sorted(PRESETS)}")
    params = dict(PRESETS[preset_name])
    unknown = set(overrides) - set(params) - {"temporal_transformer_depth"}
    if unknown:
        raise TypeError(f"unknown U-Net parameters {sorted(unknown)}")
    params.update(overrides)
    return params


def build_unet(preset_name: str, device: torch.device | str | None = None, **overrides: Any) -> UNet3D:
    """A U-Net from a preset; `device="meta"` builds the real preset's structure without memory."""
    with torch.device(device or "cpu"):
        return UNet3D(**unet_params(preset_name, **overrides))
