"""First stage: map videos [B,3,T,H,W] in [-1,1] to the U-Net's input space and back.

`KLAutoencoder` is the Stable Diffusion AutoencoderKL (the `first_stage_model.*` keys of a
VideoCrafter2 / SD checkpoint), applied frame by frame; latents are scaled by `scale_factor`
(0.18215) and encoded to the posterior mean when training deterministically, or sampled.
`PixelSpace` is the identity for small presets that train directly on pixels.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from curate import storage
from curate.weightfile import read_weights, unwrap_state_dict

SD_SCALE_FACTOR = 0.18215


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if self.nin_shortcut is not None else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, 1x1-conv projections (SD layout)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (m(n).reshape(b, 1, c, h * w).transpose(-1, -2) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad, as in the SD VAE


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin = ch
        for i, mult in enumerate(ch_mult):
            level = nn.Module()
            level.block = nn.ModuleList()
            for _ in range(num_res_blocks):
                level.block.append(ResnetBlock(cin, ch * mult))
                cin = ch * mult
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(cin)
            self.down.append(level)
        self.mid = _Mid(cin)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, 2 * z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z_channels: int):
        super().__init__()
        cin = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, cin, 3, padding=1)
        self.mid = _Mid(cin)
        levels = []
        for i in reversed(range(len(ch_mult))):
            level = nn.Module()
            level.block = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                level.block.append(ResnetBlock(cin, ch * ch_mult[i]))
                cin = ch * ch_mult[i]
            if i != 0:
                level.upsample = Upsample(cin)
            levels.insert(0, level)  # indexed by resolution level, like the checkpoint keys
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def _frames(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), t


def _video(x: torch.Tensor, t: int) -> torch.Tensor:
    bt, c, h, w = x.shape
    return x.reshape(bt // t, t, c, h, w).permute(0, 2, 1, 3, 4)


class KLAutoencoder(nn.Module):
    """SD AutoencoderKL (embed_dim 4, f=8); state-dict keys equal `first_stage_model.*` minus the prefix."""

    def __init__(self, ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=4, scale_factor=SD_SCALE_FACTOR):
        super().__init__()
        self.encoder = Encoder(ch, tuple(ch_mult), num_res_blocks, z_channels)
        self.decoder = Decoder(ch, tuple(ch_mult), num_res_blocks, z_channels)
        self.quant_conv = nn.Conv2d(2 * z_channels, 2 * z_channels, 1)
        self.post_quant_conv = nn.Conv2d(z_channels, z_channels, 1)
        self.latent_channels = z_channels
        self.scale_factor = scale_factor
        self.downsample = 2 ** (len(ch_mult) - 1)
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[B,3,T,H,W] in [-1,1] -> scaled latents [B,4,T,H/8,W/8]; samples the posterior if a generator is given."""
        frames, t = _frames(x)
        mean, logvar = self.quant_conv(self.encoder(frames)).chunk(2, dim=1)
        z = mean
        if generator is not None:
            std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
            z = mean + std * torch.randn(mean.shape, generator=generator).to(mean.device, mean.dtype)
        return _video(z * self.scale_factor, t)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        frames, t = _frames(z / self.scale_factor)
        return _video(self.decoder(self.post_quant_conv(frames)), t)


class PixelSpace(nn.Module):
    """Identity first stage for small presets that train in pixel space."""

    latent_channels = 3
    downsample = 1

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z


FIRST_STAGE_PREFIX = "first_stage_model."


def load_autoencoder(kind: str, path: str | Path | None = None, scale_factor: float = SD_SCALE_FACTOR) -> nn.Module:
    """kind 'pixel' or 'sd_kl' (path: a VideoCrafter2 / SD checkpoint holding first_stage_model.* keys,
    or a bare AutoencoderKL state dict in the same SD layout)."""
    if kind == "pixel":
        return PixelSpace()
    if kind != "sd_kl":
        raise ValueError(f"autoencoder.kind must be 'pixel' or 'sd_kl', got {kind!r}")
    if path is None or not storage.exists(str(path)):
        raise FileNotFoundError(
            f"SD AutoencoderKL weights not found: {path!r}. Set autoencoder.path to a VideoCrafter2 model.ckpt "
            "or an SD 2.1 checkpoint (first_stage_model.* keys)."
        )
    state = unwrap_state_dict(read_weights(path, what="autoencoder weights"))
    vae = KLAutoencoder(scale_factor=scale_factor)
    own = {k[len(FIRST_STAGE_PREFIX) :]: v for k, v in state.items() if k.startswith(FIRST_STAGE_PREFIX)}
    vae.load_state_dict(own or state)
    return vae
