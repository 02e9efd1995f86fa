"""The factorized 3D U-Net of VideoCrafter2: SD-2.1 spatial blocks interleaved with temporal convs and transformers.

`UNet3D(**unet_config.params)` computes the same function as the official
lvdm/modules/networks/openaimodel3d.py `UNetModel` for the same state dict, with parameter names
and shapes unchanged (including the checkpoint's misspelled `temopral_conv`). Differences are in
how, not what: activations stay in the `[(B*T), C, H, W]` frame layout, attention is
scaled-dot-product, the Conv3d(3,1,1) temporal convs run as one dilated 1-D convolution, and
per-video quantities (text keys/values, timestep projections) are computed once per video rather
than once per frame.

Module groups are found by module type (`parameter_groups`): `temporal` = every TemporalTransformer
and TemporalConvBlock, `fps` = the FpsEmbedding, `spatial` = everything else (the SD-2.1-shaped
image model, timestep embedding included).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from curate.train.attention import SpatialTransformer, TemporalTransformer

GROUPS = ("spatial", "temporal", "fps")


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [N, dim] of (possibly fractional) steps, cosines first as in the official code."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


class TimestepEmbedding(nn.Sequential):
    """MLP from the sinusoidal timestep embedding to the ResBlocks' conditioning vector."""

    def __init__(self, model_channels: int, embed_dim: int):
        super().__init__(nn.Linear(model_channels, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))


class FpsEmbedding(TimestepEmbedding):
    """MLP embedding of the frame rate, added to the timestep embedding (its own parameter group)."""


class TemporalConvBlock(nn.Module):
    """Four residual-summed GroupNorm-SiLU-conv(3 frames) layers; the last conv is zero so it starts as identity.

    The weights keep the checkpoint's Conv3d [C, C, 3, 1, 1] shape; the convolution is computed
    as a (3, 1) convolution over [B, C, T, H*W], which CPU kernels run faster than Conv3d. Dropout is 0.1 whatever the U-Net's dropout,
    as in the official code.
    """

    def __init__(self, channels: int, dropout: float = 0.1):
        super().__init__()

        def layer(with_dropout: bool) -> nn.Sequential:
            parts = [nn.GroupNorm(32, channels), nn.SiLU()]
            if with_dropout:
                parts.append(nn.Dropout(dropout))
            parts.append(nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)))
            return nn.Sequential(*parts)

        self.conv1 = layer(with_dropout=False)
        self.conv2 = layer(with_dropout=True)
        self.conv3 = layer(with_dropout=True)
        self.conv4 = layer(with_dropout=True)
        nn.init.zeros_(self.conv4[-1].weight)
        nn.init.zeros_(self.conv4[-1].bias)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x: [(B*T), C, H, W] -> same, mixing each pixel's 3 neighbouring frames."""
        n, channels, height, width = x.shape
        pixels = height * width
        # [B, C, T, HW]: GroupNorm statistics span all frames of a video, as in the official norm.
        h = x.view(n // frames, frames, channels, pixels).transpose(1, 2).contiguous()
        identity = h
        for layer in (self.conv1, self.conv2, self.conv3, self.conv4):
            *pointwise, conv = layer
            for module in pointwise:
                h = module(h)
            h = F.conv2d(h, conv.weight[..., 0], conv.bias, padding=(1, 0))
        h = h + identity
        return h.transpose(1, 2).reshape(n, channels, height, width)


class ResBlock(nn.Module):
    """SD ResBlock (GroupNorm-SiLU-conv, timestep shift, GroupNorm-SiLU-dropout-zero conv) plus an optional temporal conv."""

    def __init__(self, channels, emb_channels, dropout, out_channels=None, use_checkpoint=False,
                 use_temporal_conv=False):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            nn.GroupNorm(32, out_channels), nn.SiLU(), nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        if out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)
        if use_temporal_conv:
            self.temopral_conv = TemporalConvBlock(out_channels)  # the checkpoint's spelling
        self.use_checkpoint = use_checkpoint

    def forward(self, x, emb, frames: int, temporal: bool = True):
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, frames, temporal, use_reentrant=False)
        return self._forward(x, emb, frames, temporal)

    def _forward(self, x, emb, frames, temporal):
        """x: [(B*T), C, H, W]; emb: [B, E], one timestep embedding per video."""
        h = self.in_layers(x)
        shift = self.emb_layers(emb).repeat_interleave(frames, dim=0)
        h = self.out_layers(h + shift[:, :, None, None])
        h = self.skip_connection(x) + h
        if temporal and hasattr(self, "temopral_conv"):
            h = self.temopral_conv(h, frames)
        return h


class Downsample(nn.Module):
    """Stride-2 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Stage(nn.ModuleList):
    """One U-Net step (the official TimestepEmbedSequential): layers applied in order, each given what it needs."""

    def forward(self, h, emb, context, frames: int, temporal: bool = True):
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb, frames, temporal)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, context, frames)
            elif isinstance(layer, TemporalTransformer):
                if temporal:
                    h = layer(h, context, frames)
            else:
                h = layer(h)
        return h


class UNet3D(nn.Module):
    """VideoCrafter2's 3D U-Net; accepts the official `unet_config.params` keys.

    `forward(x [B, C, T, H, W], timesteps [B], context [B, N, D], fps [B] or int or None)` -> [B, C, T, H, W].
    `fps=None` adds no frame-rate embedding (the official forward defaults to fps=16; pass it
    explicitly to match). `temporal=False` skips every temporal module: each frame then goes
    through the image (SD 2.1) model alone.
    """

    def __init__(
        self,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        num_head_channels: int = 64,
        transformer_depth: int = 1,
        context_dim: int | None = None,
        use_linear: bool = False,
        use_checkpoint: bool = False,
        temporal_conv: bool = False,
        temporal_attention: bool = True,
        temporal_selfatt_only: bool = True,
        use_relative_position: bool = True,
        use_causal_attention: bool = False,
        temporal_length: int | None = None,
        addition_attention: bool = False,
        fps_cond: bool = False,
        temporal_transformer_depth: int = 1,
    ):
        super().__init__()
        self.model_channels = model_channels
        self.fps_cond = fps_cond
        self.addition_attention = addition_attention
        embed_dim = model_channels * 4

        def spatial(ch):
            return SpatialTransformer(ch, ch // num_head_channels, num_head_channels, depth=transformer_depth,
                                      context_dim=context_dim, use_linear=use_linear, use_checkpoint=use_checkpoint)

        temporal_options = dict(context_dim=context_dim, use_checkpoint=use_checkpoint,
                                only_self_att=temporal_selfatt_only, causal_attention=use_causal_attention,
                                relative_position=use_relative_position, temporal_length=temporal_length)

        def temporal(ch):
            return TemporalTransformer(ch, ch // num_head_channels, num_head_channels, depth=temporal_transformer_depth,
                                       use_linear=use_linear, **temporal_options)

        def resblock(ch, out_ch=None):
            return ResBlock(ch, embed_dim, dropout, out_channels=out_ch, use_checkpoint=use_checkpoint,
                            use_temporal_conv=temporal_conv)

        def attention_layers(ch):
            return [spatial(ch)] + ([temporal(ch)] if temporal_attention else [])

        self.time_embed = TimestepEmbedding(model_channels, embed_dim)
        if fps_cond:
            self.fps_embedding = FpsEmbedding(model_channels, embed_dim)

        self.input_blocks = nn.ModuleList([Stage([nn.Conv2d(in_channels, model_channels, 3, padding=1)])])
        if addition_attention:
            # As in the official code: 8 heads, conv projections, the spatial transformer depth.
            self.init_attn = Stage([TemporalTransformer(model_channels, 8, num_head_channels, depth=transformer_depth,
                                                        use_linear=False, **temporal_options)])
        skip_channels = [model_channels]
        ch = model_channels
        downsample = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [resblock(ch, mult * model_channels)]
                ch = mult * model_channels
                if downsample in attention_resolutions:
                    layers += attention_layers(ch)
                self.input_blocks.append(Stage(layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(Stage([Downsample(ch)]))
                skip_channels.append(ch)
                downsample *= 2

        self.middle_block = Stage([resblock(ch), *attention_layers(ch), resblock(ch)])

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [resblock(ch + skip_channels.pop(), mult * model_channels)]
                ch = mult * model_channels
                if downsample in attention_resolutions:
                    layers += attention_layers(ch)
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    downsample //= 2
                self.output_blocks.append(Stage(layers))

        self.out = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        fps: torch.Tensor | int | None = None,
        temporal: bool = True,
    ) -> torch.Tensor:
        batch, _, frames, height, width = x.shape
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if self.fps_cond and fps is not None:
            fps = torch.as_tensor(fps, device=x.device).expand(batch)
            emb = emb + self.fps_embedding(timestep_embedding(fps, self.model_channels))

        h = x.transpose(1, 2).reshape(batch * frames, -1, height, width)
        skips = []
        for index, stage in enumerate(self.input_blocks):
            h = stage(h, emb, context, frames, temporal)
            if index == 0 and self.addition_attention:
                h = self.init_attn(h, emb, context, frames, temporal)
            skips.append(h)
        h = self.middle_block(h, emb, context, frames, temporal)
        for stage in self.output_blocks:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, context, frames, temporal)
        y = self.out(h)
        return y.view(batch, frames, -1, height, width).transpose(1, 2)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute ResBlock and transformer-block activations in backward (the official `use_checkpoint`)."""
        for module in self.modules():
            if hasattr(module, "use_checkpoint"):
                module.use_checkpoint = enabled

    def set_trainable(self, groups: Iterable[str]) -> None:
        """Train the given parameter groups and freeze the rest (see `set_trainable`)."""
        set_trainable(self, groups)


def _owning_group(module: nn.Module, inherited: str) -> str:
    if isinstance(module, (TemporalTransformer, TemporalConvBlock)):
        return "temporal"
    if isinstance(module, FpsEmbedding):
        return "fps"
    return inherited


def parameter_groups(model: nn.Module) -> dict[str, list[str]]:
    """Parameter names per group, decided by the type of the module that owns them (or an ancestor).

    Works on any module tree containing the U-Net's blocks, e.g. one with LoRA adapters inserted:
    an adapter inside a temporal transformer is temporal.
    """
    groups: dict[str, list[str]] = {name: [] for name in GROUPS}

    def visit(module: nn.Module, prefix: str, inherited: str) -> None:
        group = _owning_group(module, inherited)
        for name, _ in module.named_parameters(recurse=False):
            groups[group].append(prefix + name)
        for child_name, child in module.named_children():
            visit(child, f"{prefix}{child_name}.", group)

    visit(model, "", "spatial")
    return groups


def set_trainable(model: nn.Module, groups: Iterable[str]) -> None:
    """requires_grad=True for the parameters of `groups` (subset of spatial/temporal/fps), False for all others."""
    groups = set(groups)
    unknown = groups - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown parameter groups {sorted(unknown)}; choose from {list(GROUPS)}")
    params = dict(model.named_parameters())
    for group, names in parameter_groups(model).items():
        for name in names:
            params[name].requires_grad_(group in groups)


def trainable_groups(trainable: str, fps_group: str = "temporal") -> set[str]:
    """Groups to train for a recipe's `trainable:` value (all | spatial | temporal).

    The paper does not say where the fps embedding trains; it conditions motion, so by default it
    trains with the temporal modules (P-base and temporal fine-tunes) and stays frozen in spatial
    fine-tunes (F-Spa-DIR). `fps_group="spatial"` moves it to the spatial side, "none" freezes it
    outside `all`.
    """
    if trainable not in ("all", "spatial", "temporal"):
        raise ValueError(f"trainable must be all, spatial or temporal, not {trainable!r}")
    if fps_group not in ("spatial", "temporal", "none"):
        raise ValueError(f"fps_group must be spatial, temporal or none, not {fps_group!r}")
    if trainable == "all":
        return set(GROUPS)
    return {trainable} | ({"fps"} if fps_group == trainable else set())
