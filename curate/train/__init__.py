"""Staged trainer: the VideoCrafter2-compatible 3D U-Net, diffusion, data, training loop, LoRA and sampling."""

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
