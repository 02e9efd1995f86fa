"""Released models as samplers: `videocrafter2:PATH` is the U-Net, SD KL autoencoder and OpenCLIP ViT-H-14 text
tower of the released VideoCrafter2 model.ckpt, with the sampling defaults of its official inference scripts.

The file is checked on the meta device first: the three models are built without memory, the file is memory-mapped,
and every key and shape the models need is compared with it, so a truncated or wrong file fails in seconds naming
what is missing. Only then are the tensors attached (no random init, no copy of the mapped file).

`videocrafter2_tiny:PATH` is the same key layout at CPU test size (the `tiny` U-Net preset, a 32-channel
autoencoder with one downsampling, a 64-wide 2-layer text tower): tests and dry runs load a file through exactly the
code that loads the real one, which is 1.4B U-Net parameters (~5.6 GB in fp32). `random_checkpoint` writes such a
file with random weights, at either size.

Sources of the defaults (AILab-CVC/VideoCrafter at 11bcd76): configs/inference_t2v_512_v2.0.yaml (architecture,
linear schedule 0.00085..0.012 over 1000 steps, scale_factor 0.18215, `use_scale: true` with `scale_b: 0.7` and the
default `mid_step: 400`, latent 40x64, `uncond_type: empty_seq`); scripts/run_text2video.sh (320x512, DDIM 50 steps,
eta 1.0, guidance 12.0, fps 28); scripts/evaluation/inference.py (frames = the model's temporal_length 16, the
written file's rate `--savefps` 10).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from curate.train.autoencoder import KLAutoencoder
from curate.train.checkpoints import TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX
from curate.train.diffusion import DiffusionConfig
from curate.train.presets import build_unet
from curate.train.text import VIT_H_14, FrozenTextEncoder
from curate.weightfile import WeightsLayoutError, check_layout, read_weights

TOWER_PREFIX = TEXT_PREFIX + "model."
# cond_stage_model keys the released file carries beyond the tower our encoder runs (CLIP's logit scale, a causal
# mask buffer saved by the open_clip version it was written with): allowed, not needed
TEXT_EXTRAS = ("logit_scale", "attn_mask")


@dataclass(frozen=True)
class ReleasedModel:
    """One released architecture: what its file holds and how its authors sample it."""

    name: str
    unet_preset: str
    autoencoder: dict
    text_tower: dict
    diffusion: DiffusionConfig
    defaults: dict = field(default_factory=dict)  # SamplerOptions fields left None take these
    # DDIM 50 steps, eta 1.0, guidance 12 (run_text2video.sh) are SamplerOptions' own defaults


_VC2_DIFFUSION = DiffusionConfig(linear_start=0.00085, linear_end=0.012, timesteps=1000, prediction="eps",
                                 x0_scale_end=0.7, x0_scale_steps=400)
RELEASED: dict[str, ReleasedModel] = {
    "videocrafter2": ReleasedModel(
        "videocrafter2", "videocrafter2_512", dict(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2), VIT_H_14,
        _VC2_DIFFUSION, dict(frames=16, fps=28.0, save_fps=10.0, height=320, width=512)),
    "videocrafter2_tiny": ReleasedModel(
        "videocrafter2_tiny", "tiny", dict(ch=32, ch_mult=(1, 2), num_res_blocks=1),
        dict(width=64, heads=2, layers=2, output_dim=64),
        _VC2_DIFFUSION, dict(frames=4, fps=28.0, save_fps=10.0, height=32, width=32)),
}


def parse(spec: str | Path) -> tuple[ReleasedModel, str] | None:
    """(model, path) of a `NAME:PATH` spec naming a released model, else None (a checkpoint or run folder)."""
    name, sep, path = str(spec).partition(":")
    if not sep or name not in RELEASED:
        return None
    if not path:
        raise ValueError(f"{spec}: give the file after the colon, e.g. {name}:/models/model.ckpt")
    return RELEASED[name], path


@dataclass
class ReleasedParts:
    unet: nn.Module
    text_encoder: FrozenTextEncoder
    first_stage: KLAutoencoder


def build_parts(model: ReleasedModel, device: str | torch.device = "meta") -> ReleasedParts:
    """The three models of `model` (on the meta device by default: no memory, no init)."""
    with torch.device(device):
        return ReleasedParts(build_unet(model.unet_preset, device=device), FrozenTextEncoder(**model.text_tower),
                             KLAutoencoder(**model.autoencoder))


def _prefixed(parts: ReleasedParts) -> dict[str, dict[str, tuple[int, ...]]]:
    """prefix -> {key: shape} every part needs from the file."""
    layout = lambda module: {k: tuple(v.shape) for k, v in module.state_dict().items()}  # noqa: E731
    return {UNET_PREFIX: layout(parts.unet), VAE_PREFIX: layout(parts.first_stage),
            TOWER_PREFIX: layout(parts.text_encoder.tower)}


def read_file(path: str | Path) -> dict[str, Any]:
    """The file's state dict, memory-mapped; a file torch cannot open (truncated, not a checkpoint) is one message."""
    try:
        state = read_weights(path, what="VideoCrafter2 checkpoint", mmap=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile) as error:
        raise WeightsLayoutError(f"{path} cannot be read as a torch checkpoint (truncated or not one): {error}") from None
    return state.get("state_dict", state) if isinstance(state.get("state_dict"), dict) else state


def check(model: ReleasedModel, state: dict[str, Any], path: str | Path) -> ReleasedParts:
    """The meta-device parts after comparing every key and shape they need with `state` (WeightsLayoutError
    naming the missing, unexpected and reshaped keys otherwise). Keys outside the three models (the schedule
    buffers a LatentDiffusion saves) are ignored."""
    parts = build_parts(model)
    expected = {prefix + key: shape for prefix, layout in _prefixed(parts).items() for key, shape in layout.items()}
    extras = {TOWER_PREFIX + name for name in TEXT_EXTRAS}
    mine = {key: value for key, value in state.items()
            if key.startswith((UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX)) and key not in extras}
    check_layout(expected, mine, path, f"{model.name} (U-Net, autoencoder and text tower)")
    return parts


def load(model: ReleasedModel, path: str | Path) -> ReleasedParts:
    """The released model's three parts on the CPU in fp32, strictly checked first (see `check`)."""
    state = read_file(path)
    parts = check(model, state, path)
    for prefix, module in ((UNET_PREFIX, parts.unet), (VAE_PREFIX, parts.first_stage),
                           (TOWER_PREFIX, parts.text_encoder.tower)):
        module.load_state_dict({key: state[prefix + key].float() for key in module.state_dict()},
                               strict=True, assign=True)
    tower = parts.text_encoder.tower
    tower.attn_mask = tower.causal_mask()  # a non-persistent buffer: not in the file, still on meta
    parts.unet.eval().requires_grad_(False)
    return parts


def random_checkpoint(name: str, path: str | Path, seed: int = 0) -> Path:
    """Write a file in `name`'s released layout ({"state_dict": ...}, LatentDiffusion key names) with random
    weights: for tests, and for a dry run of the full-size loading path before the real 5.6 GB arrive."""
    model = RELEASED[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts = build_parts(model, "cpu")
        state = {}
        for prefix, module in ((UNET_PREFIX, parts.unet), (VAE_PREFIX, parts.first_stage),
                               (TOWER_PREFIX, parts.text_encoder.tower)):
            for key, value in module.state_dict().items():
                # a trained U-Net's zero-initialised output layers are not zero: give every tensor signal
                state[prefix + key] = value + 0.02 * torch.randn_like(value) if value.is_floating_point() else value
        state[TOWER_PREFIX + "logit_scale"] = torch.tensor(4.6052)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"state_dict": state}, tmp)
    tmp.replace(path)
    return path
