"""Staged trainer: the VideoCrafter2-compatible 3D U-Net, diffusion, data, training loop, LoRA and sampling.

Layout: unet3d/attention/presets (the U-Net, architectures as data), model (what a recipe builds:
U-Net for its stage, text encoder, first stage), text, autoencoder, lora, diffusion, data (batches
from shards), checkpoints (files, init_from, export), recipe (the YAML schema), loop (one worker's
training loop), distributed (Ray Train), preflight (checks before a run), describe (`--describe`),
sample, commands (the CLI functions).
"""

__all__ = ["PRESETS", "UNet3D", "build_unet"]


def __getattr__(name: str):
    # Lazy, so `curate --help` and the data-plane commands do not pay for importing torch.
    if name == "UNet3D":
        from curate.train.unet3d import UNet3D

        return UNet3D
    if name in ("PRESETS", "build_unet"):
        from curate.train import presets

        return getattr(presets, name)
    raise AttributeError(f"module 'curate.train' has no attribute {name!r}")
