"""The sampler's options, declared once: fields, defaults and help of `curate sample`, `generate` and `grid`'s flags
and of an eval recipe's `generate:` keys (torch-free, so building the CLI stays fast).

A field left None takes the model's own default: for the released VideoCrafter2 its official inference settings
(curate/train/released.py), for our checkpoints 16 frames at fps 8 and the recipe's training geometry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from curate.config import option_help
from curate.device import PRECISIONS



@dataclass(frozen=True)
class SamplerOptions:
    """Everything besides model, prompt and seed that decides a sampled video."""

    frames: int | None = field(default=None, metadata=option_help(
        "Frames per video (default: the model's; 16 for VideoCrafter2 and our checkpoints).", min=1))
    fps: float | None = field(default=None, metadata=option_help(
        "Frame-rate conditioning (default: the model's; 28 for VideoCrafter2, 8 for our checkpoints)."))
    save_fps: float | None = field(default=None, metadata=option_help(
        "Frame rate of the written file (default: 10 for VideoCrafter2 as its inference script, else --fps)."))
    steps: int = field(default=50, metadata=option_help("DDIM steps.", min=1))
    guidance: float = field(default=12.0, metadata=option_help("Classifier-free guidance scale (1 = off)."))
    eta: float = field(default=1.0, metadata=option_help("DDIM eta (0 = deterministic DDIM, 1 = as VideoCrafter2)."))
    height: int | None = field(default=None, metadata=option_help(
        "Height in pixels (default: the model's; 320 for VideoCrafter2, the recipe's for ours)."))
    width: int | None = field(default=None, metadata=option_help(
        "Width in pixels (default: the model's; 512 for VideoCrafter2, the recipe's for ours)."))
    use_ema: bool = field(default=True, metadata=option_help("Sample with the EMA weights (our checkpoints)."))
    precision: str | None = field(default=None, metadata=option_help(
        f"U-Net and VAE decode precision: {', '.join(PRECISIONS)} (default: bf16 on a GPU, fp32 on the CPU)."))

    def __post_init__(self):
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def with_defaults(self, defaults: dict) -> SamplerOptions:
        """These options with every field left None filled from `defaults` (a model's)."""
        filled = {k: v for k, v in defaults.items() if k in self.__dataclass_fields__ and getattr(self, k) is None}
        return dataclasses.replace(self, **filled)

    def record(self) -> dict:
        return dataclasses.asdict(self)
