"""The official VideoCrafter2 U-Net's computation, re-implemented as its code computes it: the reference that
curate's UNet3D is checked against (tests/train/test_unet3d.py) and timed against (scripts/bench_unet_vs_official.py).

It follows lvdm/modules/networks/openaimodel3d.py and lvdm/modules/attention.py of the release: einsum attention
with the full score matrix, Conv3d(3,1,1) temporal convs on [B, C, T, H, W] rearranged copies, the context and
timestep embedding repeated per frame, no gradient checkpointing. Its parameter names are the checkpoint's, so one
state dict loads into it and into curate's model. Against the real code at the tiny config its outputs and
gradients are bitwise equal. A test oracle, not product code: curate never runs it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from curate.train.unet3d import timestep_embedding


def _b_c_t(x, batch):  # '(b t) c h w -> b c t h w'
    n, c, h, w = x.shape
    return x.view(batch, n // batch, c, h, w).permute(0, 2, 1, 3, 4).contiguous()


def _bt_c(x):  # 'b c t h w -> (b t) c h w'
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w).contiguous()


def _zero(module):
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class RelativePosition(nn.Module):
    def __init__(self, num_units, max_relative_position):
        super().__init__()
        self.max_relative_position = max_relative_position
        self.embeddings_table = nn.Parameter(torch.empty(max_relative_position * 2 + 1, num_units))
        nn.init.xavier_uniform_(self.embeddings_table)

    def forward(self, length_q, length_k):
        distance = torch.arange(length_k)[None, :] - torch.arange(length_q)[:, None]
        distance = torch.clamp(distance, -self.max_relative_position, self.max_relative_position)
        return self.embeddings_table[distance + self.max_relative_position]


class CrossAttention(nn.Module):
    def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64, relative_position=False,
                 temporal_length=None):
        super().__init__()
        inner_dim = dim_head * heads
        context_dim = context_dim or query_dim
        self.scale = dim_head**-0.5
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(0.0))
        self.relative_position = relative_position
        if relative_position:
            self.relative_position_k = RelativePosition(dim_head, temporal_length)
            self.relative_position_v = RelativePosition(dim_head, temporal_length)

    def forward(self, x, context=None, mask=None):
        h = self.heads
        q = self.to_q(x)
        context = x if context is None else context
        k, v = self.to_k(context), self.to_v(context)

        def split(t):  # 'b n (h d) -> (b h) n d'
            b, n, _ = t.shape
            return t.view(b, n, h, -1).permute(0, 2, 1, 3).reshape(b * h, n, -1)

        q, k, v = split(q), split(k), split(v)
        sim = torch.einsum("b i d, b j d -> b i j", q, k) * self.scale
        if self.relative_position:
            k2 = self.relative_position_k(q.shape[1], k.shape[1])
            sim = sim + torch.einsum("b t d, t s d -> b t s", q, k2) * self.scale
        if mask is not None:
            mask = mask.repeat_interleave(h, dim=0)
            sim = sim.masked_fill(~(mask > 0.5), -torch.finfo(sim.dtype).max)
        sim = sim.softmax(dim=-1)
        out = torch.einsum("b i j, b j d -> b i d", sim, v)
        if self.relative_position:
            v2 = self.relative_position_v(q.shape[1], v.shape[1])
            out = out + torch.einsum("b t s, t s d -> b t d", sim, v2)
        bh, n, d = out.shape
        out = out.view(bh // h, h, n, d).permute(0, 2, 1, 3).reshape(bh // h, n, h * d)
        return self.to_out(out)


class GEGLU(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * 4), nn.Dropout(0.0), nn.Linear(dim * 4, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, n_heads, d_head, context_dim=None, **attention):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads=n_heads, dim_head=d_head, **attention)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim=context_dim, heads=n_heads, dim_head=d_head, **attention)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context=None, mask=None):
        x = self.attn1(self.norm1(x), mask=mask) + x
        x = self.attn2(self.norm2(x), context=context, mask=mask) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    def __init__(self, in_channels, n_heads, d_head, depth, context_dim, use_linear):
        super().__init__()
        inner_dim = n_heads * d_head
        self.norm = nn.GroupNorm(32, in_channels, eps=1e-6)
        self.use_linear = use_linear
        self.proj_in = nn.Linear(in_channels, inner_dim) if use_linear else nn.Conv2d(in_channels, inner_dim, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner_dim, n_heads, d_head, context_dim=context_dim) for _ in range(depth))
        self.proj_out = _zero(nn.Linear(inner_dim, in_channels) if use_linear else nn.Conv2d(inner_dim, in_channels, 1))

    def forward(self, x, context):
        b, c, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.flatten(2).transpose(1, 2).contiguous()
        if self.use_linear:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context=context)
        if self.use_linear:
            x = self.proj_out(x)
        x = x.transpose(1, 2).reshape(b, -1, h, w).contiguous()
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


class TemporalTransformer(nn.Module):
    def __init__(self, in_channels, n_heads, d_head, depth, context_dim, use_linear, only_self_att,
                 causal_attention, relative_position, temporal_length):
        super().__init__()
        inner_dim = n_heads * d_head
        self.only_self_att, self.causal_attention, self.use_linear = only_self_att, causal_attention, use_linear
        self.norm = nn.GroupNorm(32, in_channels, eps=1e-6)
        self.proj_in = nn.Linear(in_channels, inner_dim) if use_linear else nn.Conv1d(in_channels, inner_dim, 1)
        if causal_attention:
            self.mask = torch.tril(torch.ones([1, temporal_length, temporal_length]))
        attention = dict(relative_position=True, temporal_length=temporal_length) if relative_position else {}
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner_dim, n_heads, d_head, context_dim=None if only_self_att else context_dim,
                                  **attention) for _ in range(depth))
        self.proj_out = _zero(nn.Linear(inner_dim, in_channels) if use_linear else nn.Conv1d(inner_dim, in_channels, 1))

    def forward(self, x, context=None):
        b, c, t, h, w = x.shape
        x_in = x
        x = self.norm(x)
        x = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, c, t).contiguous()  # 'b c t h w -> (b h w) c t'
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.transpose(1, 2).contiguous()
        if self.use_linear:
            x = self.proj_in(x)
        mask = self.mask.repeat(b * h * w, 1, 1) if self.causal_attention else None
        if self.only_self_att:
            for block in self.transformer_blocks:
                x = block(x, mask=mask)
            x = x.view(b, h * w, t, -1).contiguous()
        else:
            x = x.view(b, h * w, t, -1).contiguous()
            context = context.view(b, t, *context.shape[1:])
            for block in self.transformer_blocks:
                x = torch.stack([
                    block(x[j], context=context[j].repeat_interleave((h * w) // t, dim=0)) for j in range(b)])
        if self.use_linear:
            x = self.proj_out(x)
            x = x.view(b, h, w, t, c).permute(0, 4, 3, 1, 2).contiguous()
        else:
            x = x.view(b * h * w, t, -1).transpose(1, 2).contiguous()
            x = self.proj_out(x)
            x = x.view(b, h, w, c, t).permute(0, 3, 4, 1, 2).contiguous()
        return x + x_in


class TemporalConvBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        conv = dict(kernel_size=(3, 1, 1), padding=(1, 0, 0))
        self.conv1 = nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(), nn.Conv3d(channels, channels, **conv))
        self.conv2 = nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(), nn.Dropout(0.1), nn.Conv3d(channels, channels, **conv))
        self.conv3 = nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(), nn.Dropout(0.1), nn.Conv3d(channels, channels, **conv))
        self.conv4 = nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(), nn.Dropout(0.1), _zero(nn.Conv3d(channels, channels, **conv)))

    def forward(self, x):
        return self.conv4(self.conv3(self.conv2(self.conv1(x)))) + x


class ResBlock(nn.Module):
    def __init__(self, channels, emb_channels, out_channels=None, temporal_conv=False):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(nn.GroupNorm(32, out_channels), nn.SiLU(), nn.Dropout(0.0),
                                        _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        if temporal_conv:
            self.temopral_conv = TemporalConvBlock(out_channels)

    def forward(self, x, emb, batch_size):
        h = self.in_layers(x)
        h = self.out_layers(h + self.emb_layers(emb)[..., None, None])
        h = self.skip_connection(x) + h
        if hasattr(self, "temopral_conv"):
            h = _bt_c(self.temopral_conv(_b_c_t(h, batch_size)))
        return h


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    def forward(self, x, emb, context, batch_size):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb, batch_size)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, TemporalTransformer):
                x = _bt_c(layer(_b_c_t(x, batch_size), context))
            else:
                x = layer(x)
        return x


class OfficialUNet(nn.Module):
    """The official UNetModel's computation (fps given as in the official forward)."""

    def __init__(self, in_channels, model_channels, out_channels, num_res_blocks, attention_resolutions,
                 channel_mult, num_head_channels, transformer_depth=1, context_dim=None, use_linear=False,
                 temporal_conv=False, temporal_attention=True, temporal_selfatt_only=True,
                 use_relative_position=True, use_causal_attention=False, temporal_length=None,
                 addition_attention=False, fps_cond=False, **_ignored):
        super().__init__()
        self.model_channels, self.addition_attention, self.fps_cond = model_channels, addition_attention, fps_cond
        emb_dim = model_channels * 4
        tt = dict(context_dim=context_dim, only_self_att=temporal_selfatt_only, causal_attention=use_causal_attention,
                  relative_position=use_relative_position, temporal_length=temporal_length)

        def attn(ch):
            layers = [SpatialTransformer(ch, ch // num_head_channels, num_head_channels, transformer_depth, context_dim, use_linear)]
            if temporal_attention:
                layers.append(TemporalTransformer(ch, ch // num_head_channels, num_head_channels, 1, use_linear=use_linear, **tt))
            return layers

        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if fps_cond:
            self.fps_embedding = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, model_channels, 3, padding=1))])
        if addition_attention:
            self.init_attn = TimestepEmbedSequential(TemporalTransformer(
                model_channels, 8, num_head_channels, transformer_depth, use_linear=False, **tt))
        chans, ch, ds = [model_channels], model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, emb_dim, mult * model_channels, temporal_conv)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers += attn(ch)
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, emb_dim, temporal_conv=temporal_conv), *attn(ch), ResBlock(ch, emb_dim, temporal_conv=temporal_conv))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), emb_dim, mult * model_channels, temporal_conv)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers += attn(ch)
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), _zero(nn.Conv2d(model_channels, out_channels, 3, padding=1)))

    def forward(self, x, timesteps, context, fps=16):
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if self.fps_cond:
            fps = torch.full_like(timesteps, fps) if isinstance(fps, int) else fps
            emb = emb + self.fps_embedding(timestep_embedding(fps, self.model_channels))
        b, _, t, _, _ = x.shape
        context = context.repeat_interleave(repeats=t, dim=0)
        emb = emb.repeat_interleave(repeats=t, dim=0)
        h = _bt_c(x)
        hs = []
        for index, module in enumerate(self.input_blocks):
            h = module(h, emb, context, b)
            if index == 0 and self.addition_attention:
                h = self.init_attn(h, emb, context, b)
            hs.append(h)
        h = self.middle_block(h, emb, context, b)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb, context, b)
        return _b_c_t(self.out(h), b)
