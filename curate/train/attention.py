"""Spatial and temporal transformers of the VideoCrafter2 U-Net, computed with scaled-dot-product attention.

Parameter names and shapes follow lvdm/modules/attention.py of the official code so its state dicts
load unchanged; the math is the same, the layout is not: activations stay in the U-Net's
`[(B*T), C, H, W]` frame layout and attention runs through `F.scaled_dot_product_attention`
instead of materialised einsum score matrices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


# CUDA attention kernels put batch x heads on a grid axis limited to 65,535 blocks; temporal attention's batch is
# B*H*W (every latent position: 4,096 per sample at 512x512), so a micro-batch of 16 would exceed it. Larger
# batches are attended in chunks (same result: rows are independent).
MAX_KERNEL_BATCH = 65_535


class RelativePosition(nn.Module):
    """Learned embedding per clipped relative offset (key index minus query index) along time."""

    def __init__(self, num_units: int, max_relative_position: int):
        super().__init__()
        self.max_relative_position = max_relative_position
        self.embeddings_table = nn.Parameter(torch.empty(2 * max_relative_position + 1, num_units))
        nn.init.xavier_uniform_(self.embeddings_table)

    def forward(self, length_q: int, length_k: int) -> torch.Tensor:
        device = self.embeddings_table.device
        offsets = torch.arange(length_k, device=device)[None, :] - torch.arange(length_q, device=device)[:, None]
        offsets = offsets.clamp(-self.max_relative_position, self.max_relative_position)
        return self.embeddings_table[offsets + self.max_relative_position]


class CrossAttention(nn.Module):
    """Multi-head attention of `x` over `context` (over `x` itself when no context is given)."""

    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        relative_position: bool = False,
        temporal_length: int | None = None,
    ):
        super().__init__()
        inner_dim = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(dropout))
        self.relative_position = relative_position
        if relative_position:
            if temporal_length is None:
                raise ValueError("relative position attention needs temporal_length")
            self.relative_position_k = RelativePosition(dim_head, temporal_length)
            self.relative_position_v = RelativePosition(dim_head, temporal_length)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        # Contiguous heads: the CPU flash kernel runs faster on them than on the strided view.
        return t.unflatten(-1, (self.heads, self.dim_head)).transpose(1, 2).contiguous()

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """x: [B, L, query_dim]; context: [B, N, context_dim] or None -> [B, L, query_dim]."""
        context = x if context is None else context
        q, k, v = (self._split_heads(t) for t in (self.to_q(x), self.to_k(context), self.to_v(context)))
        attend = self._relative_attention if self.relative_position else self._sdpa
        chunk = max(1, MAX_KERNEL_BATCH // self.heads)
        if q.shape[0] <= chunk:
            out = attend(q, k, v, causal)
        else:
            out = torch.cat([attend(q[i : i + chunk], k[i : i + chunk], v[i : i + chunk], causal)
                             for i in range(0, q.shape[0], chunk)])
        return self.to_out(out.transpose(1, 2).flatten(2))

    @staticmethod
    def _sdpa(q, k, v, causal: bool) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def _relative_attention(self, q, k, v, causal: bool) -> torch.Tensor:
        # The value-side relative embeddings are weighted by the attention probabilities
        # themselves, which SDPA does not expose: compute them explicitly (sequences are frames, short).
        len_q, len_k = q.shape[2], k.shape[2]
        scale = self.dim_head**-0.5
        rel_k = self.relative_position_k(len_q, len_k)
        scores = (q @ k.transpose(-1, -2) + torch.einsum("bhtd,tsd->bhts", q, rel_k)) * scale
        if causal:
            keep = torch.ones(len_q, len_k, dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        probs = scores.softmax(dim=-1)
        rel_v = self.relative_position_v(len_q, len_k)
        return probs @ v + torch.einsum("bhts,tsd->bhtd", probs, rel_v)


class GEGLU(nn.Module):
    """Linear projection to twice the width, gated by GELU of one half."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = self.proj
        if type(proj) is not nn.Linear:  # adapted (LoRA): its own forward adds the low-rank term
            x, gate = proj(x).chunk(2, dim=-1)
            return x * F.gelu(gate)
        # Two half-width matmuls rather than one and a chunk: the halves come out contiguous, so
        # gelu, the product and their backward run on dense memory, and backward has no
        # [N, 2 * inner] concatenation. Tiny preset, 1 thread, batch 2: 0.465 -> 0.449 s per
        # forward+backward (the chunk's backward cat alone took 17 ms per step).
        inner = proj.out_features // 2
        value = F.linear(x, proj.weight[:inner], proj.bias[:inner])
        return value * F.gelu(F.linear(x, proj.weight[inner:], proj.bias[inner:]))


class FeedForward(nn.Module):
    """GEGLU feed-forward with 4x inner width."""

    def __init__(self, dim: int, dropout: float = 0.0, mult: int = 4):
        super().__init__()
        inner_dim = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner_dim), nn.Dropout(dropout), nn.Linear(inner_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, attention over the context (or self again), feed-forward; all residual."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        d_head: int,
        context_dim: int | None = None,
        dropout: float = 0.0,
        use_checkpoint: bool = False,
        relative_position: bool = False,
        temporal_length: int | None = None,
    ):
        super().__init__()
        attention = dict(heads=n_heads, dim_head=d_head, dropout=dropout,
                         relative_position=relative_position, temporal_length=temporal_length)
        self.attn1 = CrossAttention(dim, **attention)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = CrossAttention(dim, context_dim=context_dim, **attention)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.use_checkpoint = use_checkpoint

    def forward(self, x, context=None, causal: bool = False, query_groups: int = 1):
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, context, causal, query_groups, use_reentrant=False)
        return self._forward(x, context, causal, query_groups)

    def _forward(self, x, context, causal, query_groups):
        x = self.attn1(self.norm1(x), causal=causal) + x
        x = self._context_attention(self.norm2(x), context, causal, query_groups) + x
        return self.ff(self.norm3(x)) + x

    def _context_attention(self, x, context, causal, query_groups):
        if context is None:
            return self.attn2(x, causal=causal)
        # `query_groups` consecutive rows of x share one context row (the frames, or the pixels,
        # of one video): attend them as one longer query sequence instead of repeating the context.
        rows, length, dim = x.shape
        out = self.attn2(x.reshape(rows // query_groups, query_groups * length, dim), context)
        return out.reshape(rows, length, dim)


def _proj(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A channel projection on channel-last `x`: a Linear, or a 1x1 Conv1d applied as the same matmul."""
    if isinstance(layer, nn.Conv1d):
        return F.linear(x, layer.weight[..., 0], layer.bias)
    return layer(x)


class SpatialTransformer(nn.Module):
    """Per-frame transformer over the H*W positions, with cross-attention to the text context."""

    def __init__(self, in_channels, n_heads, d_head, depth=1, context_dim=None, use_linear=False,
                 use_checkpoint=False):
        super().__init__()
        inner_dim = n_heads * d_head
        self.norm = nn.GroupNorm(32, in_channels, eps=1e-6)
        self.use_linear = use_linear
        if use_linear:
            self.proj_in = nn.Linear(in_channels, inner_dim)
        else:
            self.proj_in = nn.Conv2d(in_channels, inner_dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner_dim, n_heads, d_head, context_dim=context_dim, use_checkpoint=use_checkpoint)
            for _ in range(depth)
        )
        if use_linear:
            self.proj_out = nn.Linear(inner_dim, in_channels)
        else:
            self.proj_out = nn.Conv2d(inner_dim, in_channels, kernel_size=1)
        _zero(self.proj_out)

    def forward(self, x: torch.Tensor, context: torch.Tensor, frames: int) -> torch.Tensor:
        """x: [(B*T), C, H, W]; context: [B, N, D] (shared by the T frames of a video)."""
        n, _, height, width = x.shape
        h = self.norm(x)
        if not self.use_linear:
            h = self.proj_in(h)
        h = h.flatten(2).transpose(1, 2)
        if self.use_linear:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context, query_groups=frames)
        if self.use_linear:
            h = self.proj_out(h)
        h = h.transpose(1, 2).reshape(n, -1, height, width)
        if not self.use_linear:
            h = self.proj_out(h)
        return h + x


class TemporalTransformer(nn.Module):
    """Transformer along time at every pixel (self-attention over the T frames, optionally causal)."""

    def __init__(self, in_channels, n_heads, d_head, depth=1, context_dim=None, use_linear=False,
                 use_checkpoint=False, only_self_att=True, causal_attention=False, relative_position=False,
                 temporal_length=None):
        super().__init__()
        inner_dim = n_heads * d_head
        self.only_self_att = only_self_att
        self.causal_attention = causal_attention
        self.norm = nn.GroupNorm(32, in_channels, eps=1e-6)
        if use_linear:
            self.proj_in = nn.Linear(in_channels, inner_dim)
        else:
            self.proj_in = nn.Conv1d(in_channels, inner_dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner_dim, n_heads, d_head,
                context_dim=None if only_self_att else context_dim,
                use_checkpoint=use_checkpoint,
                relative_position=relative_position,
                temporal_length=temporal_length,
            )
            for _ in range(depth)
        )
        if use_linear:
            self.proj_out = nn.Linear(inner_dim, in_channels)
        else:
            self.proj_out = nn.Conv1d(inner_dim, in_channels, kernel_size=1)
        # Zero output at init: a new temporal transformer is the identity (the image model's function).
        _zero(self.proj_out)

    def forward(self, x: torch.Tensor, context: torch.Tensor, frames: int) -> torch.Tensor:
        """x: [(B*T), C, H, W] -> same; attention runs over T at each of the B*H*W positions."""
        n, channels, height, width = x.shape
        batch = n // frames
        # GroupNorm statistics span all frames of a video, as in the official [B, C, T, H, W] norm.
        h = x.view(batch, frames, channels, height * width).transpose(1, 2)
        h = self.norm(h)  # [B, C, T, HW]
        h = h.permute(0, 3, 2, 1).reshape(batch * height * width, frames, channels)
        h = _proj(self.proj_in, h)
        if self.only_self_att:
            for block in self.transformer_blocks:
                h = block(h, causal=self.causal_attention)
        else:
            # Every frame of a video carries the same text context; the official code's causal
            # mask does not apply on this path either.
            for block in self.transformer_blocks:
                h = block(h, context, query_groups=height * width)
        h = _proj(self.proj_out, h)
        h = h.view(batch, height * width, frames, channels).permute(0, 2, 3, 1).reshape(n, channels, height, width)
        return h + x


def _zero(module: nn.Module) -> None:
    for p in module.parameters():
        nn.init.zeros_(p)
