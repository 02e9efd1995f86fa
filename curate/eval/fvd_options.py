"""FVD's protocol options, declared once: fields, defaults and help of `curate fvd`'s flags, the defaults of an eval
recipe's `metrics.fvd_*` keys and `curate.eval.fvd.fvd`'s settings (torch-free, so building the CLI stays fast)."""

from __future__ import annotations

from dataclasses import dataclass, field

from curate.config import option_help

RESIZE_MODES = {
    # VideoGPT / TATS / common_metrics_on_video_quality, the PyTorch code that ships i3d_pretrained_400.pt
    "crop": "bilinear (no antialias), shorter side to 224 (longer side rounded up), centre crop 224x224",
    # the original TF FVD (tf.image.resize_bilinear of every frame to 224x224, aspect not kept)
    "squash": "bilinear (no antialias) straight to 224x224, aspect not kept",
}



@dataclass(frozen=True)
class FVDOptions:
    """What decides an FVD value besides the two folders and the detector file."""

    max_clips: int = field(default=2048, metadata=option_help(
        "Clips per side (the common protocol: 2,048 real vs 2,048 generated).", min=2))
    frames: int = field(default=16, metadata=option_help("Frames per clip.", min=1))
    stride: int = field(default=1, metadata=option_help("Frame stride within a clip.", min=1))
    resize: str = field(default="crop", metadata=option_help(
        "crop: shorter side to 224 + centre crop (VideoGPT/StyleGAN-V); squash: straight to 224x224 (the TF original)."))
    batch_size: int = field(default=8, metadata=option_help("Clips per I3D batch.", min=1))

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {self.resize!r}; choose from {sorted(RESIZE_MODES)}")
