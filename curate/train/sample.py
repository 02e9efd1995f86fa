"""Sample videos from a checkpoint with DDIM + classifier-free guidance, and write them as .mp4 or .gif.

The checkpoint's recipe rebuilds the U-Net, text encoder and first stage; EMA weights are used
by default and LoRA adapters are merged first. The empty caption is the unconditional branch,
as in training (caption dropout) and in VideoCrafter2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from curate import storage
from curate.train import checkpoints
from curate.train.checkpoints import export_weights, recipe_of_checkpoint, resolve_checkpoint
from curate.train.autoencoder import load_autoencoder
from curate.train.diffusion import GaussianDiffusion
from curate.train.presets import build_unet
from curate.train.text import load_text_encoder


@dataclass(frozen=True)
class SampleSettings:
    frames: int = 16
    fps: float = 8.0  # frame-rate conditioning, and the written file's frame rate
    steps: int = 50
    guidance: float = 12.0
    eta: float = 1.0
    seed: int = 0
    height: int | None = None  # default: the recipe's training geometry
    width: int | None = None
    use_ema: bool = True


class VideoSampler:
    def __init__(self, checkpoint: str | Path, device: torch.device | str = "cpu"):
        path = resolve_checkpoint(checkpoint)
        self.ckpt = checkpoints.load_checkpoint(path)
        self.ckpt.pop("opt", None)  # sampling never needs the optimizer state (mapped, never paged in: let it go)
        self.recipe = recipe_of_checkpoint(self.ckpt)
        self.device = torch.device(device)
        r = self.recipe
        if self.device.type == "cpu" and r.train.cpu_threads:
            torch.set_num_threads(r.train.cpu_threads)
        text_path = self.ckpt["config"].get("text_encoder_path") or r.text_encoder.path
        # a tiny tower lives in its run folder (local or a URL), which may have moved
        beside = storage.join(storage.parent(storage.parent(str(path))), "text_encoder.pt")
        if r.text_encoder.kind == "tiny" and (not text_path or not storage.exists(str(text_path))) \
                and storage.exists(beside):
            text_path = beside
        self.text_encoder = load_text_encoder(r.text_encoder.kind, text_path).to(self.device)
        self.first_stage = load_autoencoder(r.autoencoder.kind, r.autoencoder.path, r.autoencoder.scale_factor).to(self.device)
        self.diffusion = GaussianDiffusion(r.diffusion)
        self.model = build_unet(r.model.preset, **r.model.overrides)

    def _load(self, use_ema: bool) -> None:
        if getattr(self, "_loaded", None) == use_ema:  # a generate actor samples many videos from one state
            return
        self.model.load_state_dict(export_weights(self.ckpt, use_ema))
        self.model.to(self.device).eval()
        self._loaded = use_ema

    @torch.no_grad()
    def sample(self, prompt: str, settings: SampleSettings = SampleSettings()) -> torch.Tensor:
        """uint8 video [T, H, W, 3]."""
        self._load(settings.use_ema)
        r, s = self.recipe, settings
        height, width = s.height or r.data.height, s.width or r.data.width
        down = self.first_stage.downsample
        if height % down or width % down:
            raise ValueError(f"height and width must be multiples of {down}, got {height}x{width}")
        shape = (1, self.first_stage.latent_channels, s.frames, height // down, width // down)
        context, uncond = self.text_encoder([prompt]), self.text_encoder([""])
        fps = torch.tensor([s.fps], device=self.device)
        latents = self.diffusion.ddim_sample(
            self.model, shape, context, uncond, fps, steps=s.steps, eta=s.eta, guidance=s.guidance,
            generator=torch.Generator().manual_seed(s.seed), device=self.device,
        )
        video = self.first_stage.decode(latents)[0]  # [3, T, H, W] in [-1, 1]
        return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).cpu()


def write_video(frames: torch.Tensor, path: str | Path, fps: float) -> Path:
    """Write uint8 [T,H,W,3] as .gif (PIL) or .mp4 (H.264 via PyAV), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"output must end in .mp4 or .gif, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{suffix}")
    array = frames.numpy()
    if suffix == ".gif":
        images = [Image.fromarray(f) for f in array]
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    else:
        import av

        # H.264 with yuv420p needs even sides; pad by edge repetition
        h, w = array.shape[1:3]
        array = np.pad(array, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        with av.open(str(tmp), mode="w") as container:
            stream = container.add_stream("libx264", rate=round(fps))
            stream.width, stream.height, stream.pix_fmt = array.shape[2], array.shape[1], "yuv420p"
            for frame in array:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
    tmp.replace(path)
    return path
