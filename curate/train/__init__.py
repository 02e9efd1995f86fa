"""Staged trainer: the VideoCrafter2-compatible 3D U-Net, diffusion, data, training loop, LoRA and sampling."""

from curate.train.presets import PRESETS, build_unet
from curate.train.unet3d import UNet3D

__all__ = ["PRESETS", "UNet3D", "build_unet"]
