"""Sample videos with DDIM + classifier-free guidance, from one of our checkpoints or a released model
(`videocrafter2:PATH`, see curate/train/released.py), and write them as .mp4 or .gif.

Our checkpoints: the recipe rebuilds the U-Net, text encoder and first stage; EMA weights are used by default and
LoRA adapters are merged first. The empty caption is the unconditional branch, as in training (caption dropout)
and in VideoCrafter2 (`uncond_type: empty_seq`). On a GPU the text tower and the autoencoder sit on the CPU
except while they run, so the U-Net's weights and activations have the GPU's memory to themselves; the U-Net and
the VAE decode run in the options' precision (bf16 autocast by default on a GPU).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from curate import storage
from curate.device import check_precision, inference_precision, resolve
from curate.train import checkpoints, released
from curate.train.autoencoder import load_autoencoder
from curate.train.checkpoints import export_weights, recipe_of_checkpoint, resolve_checkpoint
from curate.train.diffusion import GaussianDiffusion
from curate.train.presets import build_unet
from curate.train.sampler_options import SamplerOptions
from curate.train.text import load_text_encoder

OUR_DEFAULTS = {"frames": 16, "fps": 8.0}  # plus the recipe's data.height / data.width


def resolve_source(spec: str | Path) -> str:
    """What a model argument names, made absolute: `NAME:/abs/file` for a released model (the file must exist),
    else our checkpoint file (a run folder's latest)."""
    found = released.parse(spec)
    if found is None:
        path = resolve_checkpoint(spec)
        return str(path) if storage.is_remote(str(path)) else str(Path(path).resolve())
    model, path = found
    if not Path(path).is_file():
        raise FileNotFoundError(f"{model.name} checkpoint not found: {path}")
    return f"{model.name}:{Path(path).resolve()}"


def source_file(source: str) -> str:
    """The file a resolved source reads (what its checksum is of)."""
    found = released.parse(source)
    return found[1] if found else source


def check_source(source: str) -> None:
    """Fail before any work when the model cannot load: a released file's keys and shapes (meta device, seconds),
    our checkpoint's recipe."""
    found = released.parse(source)
    if found:
        released.check(found[0], released.read_file(found[1]), found[1])
    else:
        recipe_of_checkpoint(checkpoints.load_checkpoint(source))


class VideoSampler:
    """One model on one device: prompts + options + seed -> uint8 videos."""

    def __init__(self, checkpoint: str | Path, device: torch.device | str | None = None):
        self.device = device if isinstance(device, torch.device) else resolve(device)
        found = released.parse(checkpoint)
        if found:
            model, path = found
            parts = released.load(model, path)
            self.ckpt, self.step, self.defaults = None, None, dict(model.defaults)
            self.model, self.text_encoder, self.first_stage = parts.unet, parts.text_encoder, parts.first_stage
            self.diffusion = GaussianDiffusion(model.diffusion)
            self._loaded = True  # one set of weights: use_ema has nothing to choose
        else:
            self._load_ours(resolve_checkpoint(checkpoint))
        if self.device.type == "cuda":
            self.model.to(self.device)

    def _load_ours(self, path) -> None:
        self.ckpt = checkpoints.load_checkpoint(path)
        self.ckpt.pop("opt", None)  # sampling never needs the optimizer state (mapped, never paged in: let it go)
        self.step = int(self.ckpt["step"])
        r = self.recipe = recipe_of_checkpoint(self.ckpt)
        self.defaults = dict(OUR_DEFAULTS, height=r.data.height, width=r.data.width)
        if self.device.type == "cpu" and r.train.cpu_threads:
            torch.set_num_threads(r.train.cpu_threads)
        text_path = self.ckpt["config"].get("text_encoder_path") or r.text_encoder.path
        # a tiny tower lives in its run folder (local or a URL), which may have moved
        beside = storage.join(storage.parent(storage.parent(str(path))), "text_encoder.pt")
        if r.text_encoder.kind == "tiny" and (not text_path or not storage.exists(str(text_path))) \
                and storage.exists(beside):
            text_path = beside
        self.text_encoder = load_text_encoder(r.text_encoder.kind, text_path)
        self.first_stage = load_autoencoder(r.autoencoder.kind, r.autoencoder.path, r.autoencoder.scale_factor)
        self.diffusion = GaussianDiffusion(r.diffusion)
        self.model = build_unet(r.model.preset, **r.model.overrides)
        self._loaded = None

    def _load(self, use_ema: bool) -> None:
        if self._loaded is True or self._loaded == use_ema:  # a generate actor samples many videos from one state
            return
        self.model.load_state_dict(export_weights(self.ckpt, use_ema))
        self.model.to(self.device).eval()
        self._loaded = use_ema

    @contextlib.contextmanager
    def _on_device(self, module: nn.Module):
        """`module` on the sampling device while the block runs; back on the CPU after it, on a GPU."""
        module.to(self.device)
        try:
            yield module
        finally:
            if self.device.type == "cuda":
                module.to("cpu")

    def options(self, options: SamplerOptions) -> SamplerOptions:
        """The options with the model's defaults filled in and the device's default precision."""
        options = options.with_defaults(self.defaults)
        options = options.with_defaults({"precision": "bf16" if self.device.type == "cuda" else "fp32"})
        options = options.with_defaults({"save_fps": options.fps})
        check_precision(options.precision, self.device)
        return options

    @torch.no_grad()
    def sample(self, prompt: str, options: SamplerOptions = SamplerOptions(), seed: int = 0) -> torch.Tensor:
        """uint8 video [T, H, W, 3]."""
        o = self.options(options)
        self._load(o.use_ema)
        down = self.first_stage.downsample
        if o.height % down or o.width % down:
            raise ValueError(f"height and width must be multiples of {down}, got {o.height}x{o.width}")
        shape = (1, self.first_stage.latent_channels, o.frames, o.height // down, o.width // down)
        with self._on_device(self.text_encoder) as encoder:
            context, uncond = encoder([prompt]), encoder([""])
        fps = torch.tensor([o.fps], device=self.device)
        with inference_precision(o.precision, self.device):
            latents = self.diffusion.ddim_sample(
                self.model, shape, context, uncond, fps, steps=o.steps, eta=o.eta, guidance=o.guidance,
                generator=torch.Generator().manual_seed(seed), device=self.device,
            )
            with self._on_device(self.first_stage) as first_stage:
                video = first_stage.decode(latents)[0].float()  # [3, T, H, W] in [-1, 1]
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
