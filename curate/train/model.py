"""The models a recipe names: the U-Net prepared for its stage, the frozen text encoder and first stage."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from curate.train.autoencoder import load_autoencoder
from curate.train.lora import add_lora
from curate.train.presets import build_unet
from curate.train.recipe import Recipe
from curate.train.text import FrozenTextEncoder, create_tiny, load_text_encoder
from curate.train.unet3d import UNet3D, set_trainable, trainable_groups


def stage_groups(recipe: Recipe) -> set[str]:
    """The parameter groups a recipe trains (spatial / temporal / fps)."""
    return {"spatial"} if recipe.stage == "image" else trainable_groups(recipe.trainable, recipe.fps_group)


def prepare_for_stage(model: nn.Module, recipe: Recipe) -> None:
    """Freeze all but the stage's trainable groups, or insert LoRA adapters into them."""
    if recipe.method == "lora":
        add_lora(model, stage_groups(recipe), recipe.lora_rank, recipe.lora_alpha)
    else:
        set_trainable(model, stage_groups(recipe))


def build_model(recipe: Recipe, device: torch.device | str | None = None) -> UNet3D:
    """The recipe's U-Net (random init) prepared for its stage; `device="meta"` allocates nothing."""
    model = build_unet(recipe.model.preset, device=device, **recipe.model.overrides)
    with torch.device(device or "cpu"):  # LoRA adapters on the same device
        prepare_for_stage(model, recipe)
    return model


def text_encoder_path(recipe: Recipe, run_dir: Path) -> Path | None:
    """The text tower's weights file: the recipe's, RUN/text_encoder.pt for a tiny tower, None = the HF cache."""
    spec = recipe.text_encoder
    if spec.kind == "tiny":
        return Path(spec.path) if spec.path else Path(run_dir) / "text_encoder.pt"
    return Path(spec.path) if spec.path else None


def build_text_encoder(recipe: Recipe, run_dir: Path) -> FrozenTextEncoder:
    """The recipe's frozen text tower; a tiny one is created from its seed on first use and saved."""
    spec, path = recipe.text_encoder, text_encoder_path(recipe, run_dir)
    if spec.kind == "tiny" and not path.exists():
        create_tiny(path, width=spec.width, heads=spec.heads, layers=spec.layers, seed=spec.seed)
    return load_text_encoder(spec.kind, path)


def build_first_stage(recipe: Recipe) -> nn.Module:
    """The recipe's frozen first stage (pixel identity or the SD AutoencoderKL)."""
    spec = recipe.autoencoder
    return load_autoencoder(spec.kind, spec.path, spec.scale_factor)
